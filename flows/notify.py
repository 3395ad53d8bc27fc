"""Alert notifications through Apprise (Prefect already depends on it): any Apprise URL —
e-mail, Slack, Teams, a JSON webhook… — from `--notify` or the JOURNEYS_NOTIFY environment
variable (URLs separated by spaces or commas)."""
from __future__ import annotations

import os
import re
from datetime import date

import apprise

ENV = "JOURNEYS_NOTIFY"


class NotifyFailed(RuntimeError):
    """Apprise could not deliver to at least one target (transient: retry)."""


def notify_urls(given: list[str] | None = None) -> list[str]:
    return list(given or []) + [u for u in re.split(r"[\s,]+", os.environ.get(ENV, "")) if u]


def night_changes(alerts: list[dict], night: date) -> list[dict]:
    """Alerts that changed on `night`: opened, escalated or resolved then (no daily repeats)."""
    return [a for a in alerts if night in (a["opened_date"], a.get("escalated_date"), a["resolved_date"])]


def message(changes: list[dict], night: date) -> tuple[str, str]:
    title = f"journeys: {len(changes)} drop-off alert change(s) on {night}"
    lines = []
    for a in changes:
        state = ("RESOLVED" if a["resolved_date"] == night else
                 "ESCALATED" if a.get("escalated_date") == night else "NEW")
        lines.append(f"[{state}] {a['journey_id']}: {a['message']}")
        if a.get("breakdown"):
            lines.append(f"    carried by: {a['breakdown']}")
    return title, "\n".join(lines)


def send(changes: list[dict], night: date, urls: list[str]) -> int:
    """Send one message with every change to every URL; how many URLs got it."""
    if not changes or not urls:
        return 0
    sender = apprise.Apprise()
    bad = [u for u in urls if not sender.add(u)]
    if bad:
        raise ValueError(f"not an Apprise URL: {', '.join(bad)}")
    title, body = message(changes, night)
    if not sender.notify(title=title, body=body):
        raise NotifyFailed(f"could not deliver the alert notification to {len(urls)} target(s)")
    return len(urls)
