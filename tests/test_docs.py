"""The repository stands alone: its docs point at files it holds, not at a design note beside it."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_architecture_names_only_files_and_folders_that_exist():
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:journey_defs|transforms|pipelines|flows|lake|warehouse|expectations|generator|tests)"
                           r"/[\w/.]*)`", text))
    assert len(named) > 30
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert missing == []


def test_the_readme_links_the_architecture_and_no_outside_design_note():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "](docs/architecture.md)" in readme
    assert "DESIGN.md" not in readme
