"""Alert notifications through Apprise to a real webhook receiver on loopback: tonight's
changes (new, escalated, resolved) arrive once, one per incident with its breakdown, quiet
nights send nothing, a dead target is a retryable failure."""
from __future__ import annotations

import socket
from datetime import timedelta

import pytest

from flows.notify import NotifyFailed, night_changes, notify_urls, send
from tests.test_alerting import INCIDENT, START, build
from warehouse.alerting import replay_alerts


def test_tonights_alert_changes_reach_the_webhook_once(receiver):
    url, received = receiver
    as_of = {days: replay_alerts(build(INCIDENT, days=days)).to_pylist() for days in (36, 37, 38, 70)}
    alerts = as_of[70]  # what the nightly flow reads after publishing each night: the replay up to it
    opened, escalated = START + timedelta(days=35), START + timedelta(days=37)
    assert night_changes(as_of[37], opened + timedelta(days=1)) == []  # still open, nothing new to say
    assert send(night_changes(as_of[36], opened), opened, [url]) == 1
    assert send(night_changes(as_of[38], escalated), escalated, [url]) == 1
    quiet = START + timedelta(days=60)
    assert night_changes(alerts, quiet) == [] and send([], quiet, [url]) == 0
    assert len(received) == 2
    assert "1 drop-off alert change(s) on 2026-02-05" in received[0]["title"]
    new = received[0]["message"].splitlines()
    # one incident, one notification: the stage's alert with the slices that carry it under it
    assert new[0].startswith("[NEW] j: verify: heading for 45.0% drop-off") and len(new) == 2
    assert new[1] == "    carried by: channel web +50%, segment s +50%"
    assert "verify: verify" not in received[0]["message"]
    assert "[ESCALATED] j: verify: heading for" in received[1]["message"]
    resolved = [a for a in alerts if a["resolved_date"]][0]["resolved_date"]
    assert send(night_changes(alerts, resolved), resolved, [url]) == 1 and "[RESOLVED]" in received[2]["message"]


def test_a_dead_target_is_a_retryable_failure_and_a_bad_url_is_not(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    alerts = replay_alerts(build(INCIDENT, days=40)).to_pylist()
    night = START + timedelta(days=35)
    with pytest.raises(NotifyFailed):
        send(night_changes(alerts, night), night, [f"json://127.0.0.1:{port}/alerts"])
    with pytest.raises(ValueError, match="not an Apprise URL"):
        send(night_changes(alerts, night), night, ["no-such-scheme://x"])
    monkeypatch.setenv("JOURNEYS_NOTIFY", "json://a/x, json://b/y")
    assert notify_urls(["json://c/z"]) == ["json://c/z", "json://a/x", "json://b/y"]
