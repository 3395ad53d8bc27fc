"""Shared test fixtures, among them the real logs, which live beside the repository, not in it.

The real logs (the Helpdesk log, the BPIC 2013 incidents log) are read from one directory:
`JOURNEYS_REAL_LOGS`, by default `<repository root>/../shared/data` (derived from this
file, never hardcoded). When that directory or the file a test needs is missing, the tests
that need it are skipped, with a reason naming the directory and the variable (pytest's
`-ra`, in pyproject's addopts, prints it). CI must not skip them: `.ci/run` fails when the
real logs are missing.
"""
from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

REAL_LOGS_VARIABLE = "JOURNEYS_REAL_LOGS"
DEFAULT_REAL_LOGS = Path(__file__).resolve().parents[2] / "shared" / "data"
"""<repository root>/../shared/data: the real logs when JOURNEYS_REAL_LOGS is not set."""


def real_logs_dir() -> Path:
    """The directory the real logs are read from: $JOURNEYS_REAL_LOGS, else DEFAULT_REAL_LOGS."""
    value = os.environ.get(REAL_LOGS_VARIABLE, "").strip()
    return Path(value).expanduser() if value else DEFAULT_REAL_LOGS


def _where() -> str:
    source = f"{REAL_LOGS_VARIABLE}={os.environ[REAL_LOGS_VARIABLE]}" if os.environ.get(
        REAL_LOGS_VARIABLE, "").strip() else f"{REAL_LOGS_VARIABLE} unset, default ../shared/data"
    return f"({source}; set {REAL_LOGS_VARIABLE} to the directory holding the real logs)"


@pytest.fixture(scope="session")
def real_logs() -> Path:
    """The real-log directory; the test is skipped when it does not exist."""
    path = real_logs_dir()
    if not path.is_dir():
        pytest.skip(f"real logs not found: no directory {path} {_where()}")
    return path


def _real_log(real_logs: Path, relative: str, what: str) -> Path:
    path = real_logs / relative
    if not path.is_file():
        pytest.skip(f"{what} not found: no file {relative} in the real-log directory {real_logs} {_where()}")
    return path


@pytest.fixture(scope="session")
def helpdesk_csv(real_logs) -> Path:
    """The real Helpdesk event log (CSV): real_logs/helpdesk/helpdesk.csv."""
    return _real_log(real_logs, "helpdesk/helpdesk.csv", "the real Helpdesk log")


@pytest.fixture(scope="session")
def bpic2013_xes(real_logs) -> Path:
    """The real BPIC 2013 incidents log (gzipped XES): real_logs/bpic2013_incidents/bpic2013_incidents.xes.gz."""
    return _real_log(real_logs, "bpic2013_incidents/bpic2013_incidents.xes.gz", "the real BPIC 2013 incidents log")


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

