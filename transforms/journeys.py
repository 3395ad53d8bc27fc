"""Matched events -> journey instances: stages entered, status, deviations and feedback.

Why this module exists: it is where the map meets real behaviour, so its rules are the
project's definitions (DESIGN.md, "Semantics that tests must pin down"), and the generator's
ground truth checks them independently. It works on one bucket of customers (all events of
a customer are in the same bucket), sorted once by (customer_id, ts, event_id); every
per-customer quantity is a numpy array indexed by a customer code, every per-stage
quantity a column of a (customers x stages) matrix. Loops run over stages, never events.

Rules, with as_of = the end of `as_of_date` (UTC) and only events before it:
* a journey starts at a customer's first event on an entry stage (`entry_stage_ids`);
* a stage's entry is its first event at or after the entry of p(k), the latest required
  stage before it (`ordered`, `strict`; entry stages have no p(k)), or at or after the
  start (`unordered`); `strict` drops entries after the first skipped_stage/backtrack;
* the current stage at t is the highest-index stage entered at or before t;
* status, first that holds: exit event -> dropped; final stage within the conversion
  window -> converted; window passed -> dropped; longer than max_time_in_stage in the
  current stage -> stalled; else in_progress (bounds strict: exactly the limit is not over).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from journey_defs.canonical import UTC_MICROS
from journey_defs.model import JourneyMap
from journey_defs.outputs import DEVIATION_KINDS, DEVIATIONS, FEEDBACK, JOURNEY_STAGES, JOURNEYS, ROLES, STATUSES
from transforms.sessions import customer_order, run_bounds

__all__ = ["JourneyOutputs", "build_journeys", "as_of_micros"]

NEVER = np.iinfo(np.int64).max
"""Time of what did not happen (µs): compares after every real time."""
DAY_US = 86_400 * 10**6
_US = timedelta(microseconds=1)
SKIPPED, BACKTRACK, DETOUR, OFF_MAP = (DEVIATION_KINDS.index(k) for k in ("skipped_stage", "backtrack", "detour", "off_map"))
CONVERTED, DROPPED, STALLED, IN_PROGRESS = (STATUSES.index(s) for s in ("converted", "dropped", "stalled", "in_progress"))


@dataclass(frozen=True)
class JourneyOutputs:
    """One bucket's journey tables, in the schemas of journey_defs.outputs."""

    journeys: pa.Table
    journey_stages: pa.Table
    deviations: pa.Table
    feedback: pa.Table


@dataclass(frozen=True)
class _Events:
    """A bucket's events before as_of, sorted by customer_id, ts, event_id."""

    table: pa.Table
    keys: pa.Array        # customer_id per customer code
    cust: np.ndarray      # customer code per event
    ts: np.ndarray        # µs since the epoch
    stage: np.ndarray     # stage index of role-'stage' events, else -1
    role: np.ndarray      # index into ROLES
    first: np.ndarray     # per customer code, the index of its first event
    last: np.ndarray      # and of its last


def as_of_micros(as_of_date: date) -> int:
    """The end of `as_of_date` (00:00 UTC of the next day) in µs: events before it count."""
    return int(datetime(as_of_date.year, as_of_date.month, as_of_date.day, tzinfo=timezone.utc).timestamp()) * 10**6 + DAY_US


def build_journeys(events: pa.Table, journey: JourneyMap, as_of_date: date, segments: pa.Table | None) -> JourneyOutputs:
    """Journey tables as of `as_of_date` from one bucket of events carrying `stage_index`
    and `role` (transforms.match); `segments` = (customer_id, segment) from the CRM, or None."""
    as_of = as_of_micros(as_of_date)
    ev = _prepare(events, as_of)
    started = _first_time(ev, np.isin(ev.stage, [journey.stage_ids.index(s) for s in journey.entry_stage_ids]))
    entries, entry_event = _stage_entries(ev, journey, started)
    after_start = ev.ts >= started[ev.cust]
    kind, dev_stage, from_stage = _progress_deviations(ev, journey, entries, after_start)
    if journey.ordering == "strict":
        entries, entry_event, kind = _stop_at_first_deviation(ev, entries, entry_event, kind)
    current_at = _current_at(entries, ev.cust, ev.ts)
    for role, code in (("support", DETOUR), ("off_map", OFF_MAP)):
        pick = after_start & (ev.role == ROLES.index(role))
        kind[pick], dev_stage[pick] = code, current_at[pick]

    is_exit = after_start & (ev.role == ROLES.index("exit"))
    exit_event = _first_index(ev, is_exit)
    status, current = _statuses(journey, entries, started, np.where(exit_event >= 0, ev.ts[exit_event], NEVER), as_of)
    segment = _segments(ev.keys, segments)
    context = (journey.id, as_of_date)
    return JourneyOutputs(
        journeys=_journeys_table(ev, journey, context, segment, started, entries, status, current, exit_event),
        journey_stages=_stages_table(ev, journey, context, segment, entries, entry_event, status, current, as_of),
        deviations=_deviations_table(ev, journey, context, kind, dev_stage, from_stage),
        feedback=_feedback_table(ev, journey, context, after_start, current_at),
    )


# --- per-event and per-customer rules ------------------------------------------------------
_COLUMNS = ("customer_id", "event_id", "ts", "channel", "event_type", "score", "stage_index", "role")
"""The event columns journeys read (sorting only these keeps the cost per bucket low)."""


def _prepare(events: pa.Table, as_of: int) -> _Events:
    ts = events["ts"].cast(pa.int64()).to_numpy()
    table = events.select(list(_COLUMNS)).filter(pa.array(ts < as_of))
    order, new = customer_order(table)
    table = table.take(pa.array(order))
    first, last = run_bounds(new)
    role = pc.index_in(table["role"], pa.array(ROLES)).fill_null(-1).to_numpy()
    stage = np.where(role == ROLES.index("stage"), table["stage_index"].fill_null(-1).to_numpy(), -1)
    return _Events(table, table["customer_id"].combine_chunks().take(pa.array(first)), np.cumsum(new) - 1,
                   table["ts"].cast(pa.int64()).to_numpy(), stage, role, first, last)


def _first_index(ev: _Events, mask: np.ndarray) -> np.ndarray:
    """Per customer, the index of its first event where `mask` holds (-1 if none)."""
    picked = np.flatnonzero(mask)
    first = picked[np.r_[True, ev.cust[picked[1:]] != ev.cust[picked[:-1]]]] if len(picked) else picked
    out = np.full(len(ev.keys), -1, dtype=np.int64)
    out[ev.cust[first]] = first
    return out


def _first_time(ev: _Events, mask: np.ndarray) -> np.ndarray:
    """Per customer, the time of its first event where `mask` holds (NEVER if none)."""
    first = _first_index(ev, mask)
    return np.where(first >= 0, ev.ts[first], NEVER)


def _predecessors(journey: JourneyMap) -> np.ndarray:
    """p(k): the latest required stage before k; -1 for entry stages (a journey may open there)."""
    pred, latest = [], -1
    for k, stage in enumerate(journey.stages):
        pred.append(-1 if stage.id in journey.entry_stage_ids else latest)
        latest = latest if stage.optional else k
    return np.array(pred, dtype=np.int64)


def _stage_entries(ev: _Events, journey: JourneyMap, started: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(customers x stages) entry times (NEVER = not entered) and entering event indices (-1)."""
    n_stages = len(journey.stages)
    entries = np.full((len(ev.keys), n_stages), NEVER, dtype=np.int64)
    entry_event = np.full(entries.shape, -1, dtype=np.int64)
    pred = _predecessors(journey)
    for k in range(n_stages):
        mask = ev.stage == k
        if journey.ordering == "unordered":
            mask &= ev.ts >= started[ev.cust]
        elif pred[k] >= 0:
            mask &= ev.ts >= entries[ev.cust, pred[k]]
        entry_event[:, k] = _first_index(ev, mask)
        entries[:, k] = np.where(entry_event[:, k] >= 0, ev.ts[entry_event[:, k]], NEVER)
    return entries, entry_event


def _current_at(entries: np.ndarray, cust: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The highest-index stage entered at or before each time (-1 if none)."""
    current = np.full(len(ts), -1, dtype=np.int64)
    for k in range(entries.shape[1]):
        current[entries[cust, k] <= ts] = k
    return current


def _progress_deviations(ev: _Events, journey: JourneyMap, entries: np.ndarray, after_start: np.ndarray):
    """Per event: deviation kind (-1 none), stage and from_stage (-1 = null) for skipped
    stages and backtracks; unordered journeys have neither."""
    kind, stage, from_stage = (np.full(len(ev.ts), -1, dtype=np.int64) for _ in range(3))
    if journey.ordering == "unordered":
        return kind, stage, from_stage
    current = _current_at(entries, ev.cust, ev.ts)
    pred = _predecessors(journey)[np.maximum(ev.stage, 0)]
    is_stage = after_start & (ev.stage >= 0)
    skipped = is_stage & (pred >= 0) & (entries[ev.cust, np.maximum(pred, 0)] > ev.ts)
    backtrack = is_stage & ~skipped & (ev.stage < current)
    for k in reversed([k for k, s in enumerate(journey.stages) if not s.optional]):
        missing = skipped & (ev.stage > k) & (entries[ev.cust, k] > ev.ts)
        stage[missing] = k  # ends as the first required stage not entered by then
    kind[skipped], kind[backtrack] = SKIPPED, BACKTRACK
    stage[backtrack] = ev.stage[backtrack]
    from_stage[skipped | backtrack] = current[skipped | backtrack]
    return kind, stage, from_stage


def _stop_at_first_deviation(ev: _Events, entries, entry_event, kind):
    """Strict mode: progress stops at a customer's first skipped stage or backtrack; later
    entries and later progress deviations are dropped."""
    cut = _first_time(ev, kind >= 0)
    late = entries > cut[:, None]
    return np.where(late, NEVER, entries), np.where(late, -1, entry_event), np.where(ev.ts > cut[ev.cust], -1, kind)


def _statuses(journey: JourneyMap, entries, started, exit_at, as_of: int) -> tuple[np.ndarray, np.ndarray]:
    """Status (index into STATUSES) and current stage per customer, as of `as_of`."""
    current = _current_at(entries, np.arange(len(entries)), np.full(len(entries), as_of))
    current_entry = entries[np.arange(len(entries)), np.maximum(current, 0)]
    sla = np.array([s.max_time_in_stage // _US if s.max_time_in_stage else NEVER for s in journey.stages], dtype=np.int64)
    window = journey.conversion_window // _US
    final = entries[:, -1]
    converted = (final != NEVER) & (final - started <= window)
    expired = as_of - started > window
    stalled = as_of - current_entry > sla[np.maximum(current, 0)]
    status = np.select([exit_at != NEVER, converted, expired, stalled], [DROPPED, CONVERTED, DROPPED, STALLED], IN_PROGRESS)
    return status, current


def _segments(keys: pa.Array, segments: pa.Table | None) -> pa.Array:
    """Segment per customer code (null when unknown)."""
    if segments is None:
        return pa.nulls(len(keys), pa.string())
    found = pc.index_in(keys, segments["customer_id"])
    return segments["segment"].combine_chunks().cast(pa.string()).take(found)


# --- output tables ---------------------------------------------------------------------------
def _times(values: np.ndarray) -> pa.Array:
    return pa.array(values, mask=values == NEVER).cast(UTC_MICROS)


def _stage_names(journey: JourneyMap, index: np.ndarray) -> pa.Array:
    return pa.array(journey.stage_ids, pa.string()).take(pa.array(index, mask=index < 0))


def _common(context: tuple[str, date], n: int) -> dict[str, pa.Array]:
    journey_id, as_of_date = context
    return {"journey_id": pa.repeat(pa.scalar(journey_id, pa.string()), n),
            "as_of_date": pa.repeat(pa.scalar(as_of_date, pa.date32()), n)}


def _journeys_table(ev, journey, context, segment, started, entries, status, current, exit_event) -> pa.Table:
    who = np.flatnonzero(started != NEVER)
    current_entry = entries[who, np.maximum(current[who], 0)]
    exits = exit_event[who]
    return pa.table({
        **_common(context, len(who)),
        "journey_version": pa.repeat(pa.scalar(journey.version, pa.string()), len(who)),
        "customer_id": ev.keys.take(pa.array(who)),
        "segment": segment.take(pa.array(who)),
        "started_at": _times(started[who]),
        "current_stage": _stage_names(journey, current[who]),
        "current_stage_entered_at": _times(current_entry),
        "status": pa.array(STATUSES, pa.string()).take(pa.array(status[who])),
        "converted_at": _times(np.where(status[who] == CONVERTED, entries[who, -1], NEVER)),
        "exit_at": _times(np.where(exits >= 0, ev.ts[exits], NEVER)),
        "exit_event": ev.table["event_type"].take(pa.array(exits, mask=exits < 0)),
        "last_event_at": _times(ev.ts[ev.last[who]]),
        "last_channel": ev.table["channel"].take(pa.array(ev.last[who])),
        "n_events": pa.array(ev.last[who] - ev.first[who] + 1),
    }).select(JOURNEYS.names).cast(JOURNEYS)


def _stages_table(ev, journey, context, segment, entries, entry_event, status, current, as_of: int) -> pa.Table:
    """One row per entered stage; a stage is left when a later-index stage is entered (at the
    earliest such entry, and not before its own entry: a stage entered after a later one
    was never current, so it spends 0 s)."""
    later = np.full(entries.shape, NEVER, dtype=np.int64)
    later[:, :-1] = np.minimum.accumulate(entries[:, ::-1], axis=1)[:, ::-1][:, 1:]
    cust, k = np.nonzero(entries != NEVER)
    entered = entries[cust, k]
    left = np.where(later[cust, k] == NEVER, NEVER, np.maximum(later[cust, k], entered))
    is_current = k == current[cust]
    return pa.table({
        **_common(context, len(cust)),
        "customer_id": ev.keys.take(pa.array(cust)),
        "segment": segment.take(pa.array(cust)),
        "stage": _stage_names(journey, k),
        "stage_index": pa.array(k.astype(np.int32)),
        "entered_at": _times(entered),
        "entry_channel": ev.table["channel"].take(pa.array(entry_event[cust, k])),
        "left_at": _times(left),
        "time_in_stage_s": pa.array((np.where(left == NEVER, as_of, left) - entered) / 1e6),
        "is_current": pa.array(is_current),
        "stalled": pa.array(is_current & (status[cust] == STALLED)),
    }).select(JOURNEY_STAGES.names).cast(JOURNEY_STAGES)


def _event_rows(ev: _Events, context, rows: np.ndarray) -> dict[str, pa.Array]:
    """Columns naming the events at `rows`: customer, event id, channel, type, time."""
    take = pa.array(rows)
    return {**_common(context, len(rows)), "customer_id": ev.keys.take(pa.array(ev.cust[rows])),
            **{c: ev.table[c].take(take) for c in ("event_id", "channel", "event_type", "ts")}}


def _deviations_table(ev, journey, context, kind, stage, from_stage) -> pa.Table:
    rows = np.flatnonzero(kind >= 0)
    return pa.table({
        **_event_rows(ev, context, rows),
        "kind": pa.array(DEVIATION_KINDS, pa.string()).take(pa.array(kind[rows])),
        "stage": _stage_names(journey, stage[rows]),
        "from_stage": _stage_names(journey, from_stage[rows]),
    }).select(DEVIATIONS.names).cast(DEVIATIONS)


def _feedback_table(ev, journey, context, after_start, current_at) -> pa.Table:
    rows = np.flatnonzero(after_start & ev.table["score"].is_valid().to_numpy(zero_copy_only=False))
    return pa.table({
        **_event_rows(ev, context, rows),
        "score": ev.table["score"].take(pa.array(rows)),
        "stage": _stage_names(journey, current_at[rows]),
    }).select(FEEDBACK.names).cast(FEEDBACK)
