"""Shared test fixtures: the real data set that lives beside the repository, not in it.

`shared/` sits next to the repository root (here and in CI's fresh clone), so its path is
derived from this file, never hardcoded. A missing file fails the tests that need it:
skipping would let a broken checkout pass silently.
"""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
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


@contextmanager
def webhook():
    """A JSON webhook on 127.0.0.1: (its Apprise URL, the bodies it received)."""
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"json://127.0.0.1:{server.server_port}/alerts", received
    finally:
        server.shutdown()


@pytest.fixture
def receiver():
    with webhook() as hook:
        yield hook
