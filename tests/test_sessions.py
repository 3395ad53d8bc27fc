"""Sessions: the inactivity gap is a strict bound (a gap of exactly `gap` starts a new
session), all channels count, ids are stable, per-event ids follow the input order.
The comparison with the generator's ground truth is in test_journeys (same stitched sample)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa

from journey_defs.canonical import CANONICAL_SCHEMA
from journey_defs.outputs import SESSIONS
from tests.helpers import canonical_events
from transforms.sessions import sessionize


def micros(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 10**6)


def test_gap_is_strict_channels_are_merged_and_ids_are_stable():
    events = canonical_events([
        {"customer_id": "y", "ts": "2026-01-05 09:00", "channel": "phone", "event_type": "call"},
        {"customer_id": "x", "ts": "2026-01-05 10:29:59.999999", "channel": "email", "event_type": "open"},
        {"customer_id": "x", "ts": "2026-01-05 10:00", "channel": "web", "event_type": "page_view"},
        {"customer_id": "x", "ts": "2026-01-05 10:59:59.999999", "channel": "web", "event_type": "page_view"},  # gap == 30 min
        {"customer_id": "x", "ts": "2026-01-05 11:20", "channel": "chat", "event_type": "message"},
        {"customer_id": "x", "ts": "2026-01-05 11:20", "channel": "web", "event_type": "login"},  # tie with the chat
        {"customer_id": "y", "ts": "2026-01-05 09:29:59", "channel": "phone", "event_type": "call"},
    ])
    session_ids, sessions = sessionize(events, timedelta(minutes=30), "subscription")
    x1, x2, y1 = (f"x#{micros('2026-01-05 10:00')}", f"x#{micros('2026-01-05 10:59:59.999999')}",
                  f"y#{micros('2026-01-05 09:00')}")
    assert session_ids.to_pylist() == [y1, x1, x1, x2, x2, x2, y1]
    assert sessions.schema == SESSIONS
    utc = lambda text: datetime.fromisoformat(text).replace(tzinfo=timezone.utc)  # noqa: E731
    assert sessions.to_pylist() == [
        {"journey_id": "subscription", "customer_id": "x", "session_id": x1, "session_start": utc("2026-01-05 10:00"),
         "session_end": utc("2026-01-05 10:29:59.999999"), "n_events": 2, "channels": "email,web"},
        {"journey_id": "subscription", "customer_id": "x", "session_id": x2,
         "session_start": utc("2026-01-05 10:59:59.999999"), "session_end": utc("2026-01-05 11:20"), "n_events": 3,
         "channels": "chat,web"},
        {"journey_id": "subscription", "customer_id": "y", "session_id": y1, "session_start": utc("2026-01-05 09:00"),
         "session_end": utc("2026-01-05 09:29:59"), "n_events": 2, "channels": "phone"},
    ]
    # Same events in another order: the same sessions, the same ids per event.
    reversed_ids, reversed_sessions = sessionize(events.take(pa.array(range(6, -1, -1))), timedelta(minutes=30), "subscription")
    assert reversed_ids.to_pylist() == session_ids.to_pylist()[::-1]
    assert reversed_sessions.equals(sessions)


def test_the_gap_is_the_journeys_setting():
    events = canonical_events([
        {"customer_id": "t", "ts": "2026-01-05 08:00", "channel": "ticket", "event_type": "a"},
        {"customer_id": "t", "ts": "2026-01-05 15:59", "channel": "ticket", "event_type": "b"},
        {"customer_id": "t", "ts": "2026-01-06 00:00", "channel": "ticket", "event_type": "c"},
    ])
    _, sessions = sessionize(events, timedelta(hours=8), "helpdesk")
    assert sessions["n_events"].to_pylist() == [2, 1]


def test_no_events_no_sessions():
    session_ids, sessions = sessionize(CANONICAL_SCHEMA.empty_table(), timedelta(minutes=30), "subscription")
    assert len(session_ids) == 0 and sessions.num_rows == 0 and sessions.schema == SESSIONS
