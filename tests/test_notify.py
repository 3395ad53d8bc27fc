"""Alert notifications through Apprise to a real webhook receiver on loopback: tonight's
changes (new, escalated, resolved) arrive once, quiet nights send nothing, a dead target is a
retryable failure."""
from __future__ import annotations

import json
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from flows.notify import NotifyFailed, night_changes, notify_urls, send
from tests.test_alerting import START, build
from warehouse.alerting import replay_alerts


@pytest.fixture
def receiver():
    """A JSON webhook on 127.0.0.1: the bodies it received."""
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
    yield f"json://127.0.0.1:{server.server_port}/alerts", received
    server.shutdown()


def test_tonights_alert_changes_reach_the_webhook_once(receiver):
    url, received = receiver
    alerts = replay_alerts(build({d: 0.9 for d in range(35, 39)}, days=70)).to_pylist()
    opened = START + timedelta(days=36)
    assert send(night_changes(alerts, opened), opened, [url]) == 1
    assert send(night_changes(alerts, opened + timedelta(days=1)), opened + timedelta(days=1), [url]) == 1
    quiet = START + timedelta(days=60)
    assert night_changes(alerts, quiet) == [] and send([], quiet, [url]) == 0
    assert len(received) == 2
    assert "3 drop-off alert change(s) on 2026-02-06" in received[0]["title"]
    assert received[0]["message"].count("[NEW] j: verify") == 3  # the stage, its channel, its segment
    assert "[ESCALATED] j: verify" in received[1]["message"] and "drop-off within 24 h" in received[1]["message"]
    resolved = [a for a in alerts if a["resolved_date"]][0]["resolved_date"]
    assert send(night_changes(alerts, resolved), resolved, [url]) == 1 and "[RESOLVED]" in received[2]["message"]


def test_a_dead_target_is_a_retryable_failure_and_a_bad_url_is_not(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    alerts = replay_alerts(build({d: 0.9 for d in range(35, 39)}, days=40)).to_pylist()
    night = START + timedelta(days=36)
    with pytest.raises(NotifyFailed):
        send(night_changes(alerts, night), night, [f"json://127.0.0.1:{port}/alerts"])
    with pytest.raises(ValueError, match="not an Apprise URL"):
        send(night_changes(alerts, night), night, ["no-such-scheme://x"])
    monkeypatch.setenv("JOURNEYS_NOTIFY", "json://a/x, json://b/y")
    assert notify_urls(["json://c/z"]) == ["json://c/z", "json://a/x", "json://b/y"]
