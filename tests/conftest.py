"""Shared test fixtures: the real data set that lives beside the repository, not in it.

`shared/` sits next to the repository root (here and in CI's fresh clone), so its path is
derived from this file, never hardcoded. A missing file fails the tests that need it:
skipping would let a broken checkout pass silently.
"""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""<repository root>/../shared/data"""


@pytest.fixture(scope="session")
def helpdesk_csv() -> Path:
    """The real Helpdesk event log (CSV), at SHARED_DATA/helpdesk/helpdesk.csv."""
    path = SHARED_DATA / "helpdesk" / "helpdesk.csv"
    if not path.is_file():
        pytest.fail(
            f"the real Helpdesk log is missing: expected {path} "
            "(shared/data/helpdesk/helpdesk.csv beside the repository root)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def sample(tmp_path_factory):
    """(data dir, lake) of `tests.warehouse_sample`: generated, then one nightly run per day."""
    from tests.warehouse_sample import build

    return build(tmp_path_factory.mktemp("warehouse"))
