"""Matched events -> journey instances: stages entered, status, deviations and feedback.

Why this module exists: it is where the map meets real behaviour, so its rules are the
project's definitions (README, *Semantics*), checked against the generator's ground truth
and against plain SQL over hand-built and real logs (tests/test_semantics.py). It works on
one bucket of customers (all events of a customer are in the same bucket), sorted once in
journey order — customer, time, map order, source order — so that positions, not times,
order events and a tie never makes a backtrack. Every per-customer quantity is a numpy
array indexed by a customer code, every per-stage quantity a column of a (customers x
stages) matrix; loops run over stages, never events. The ordering mode's rule
(transforms/ordering/) decides the entries and the progress deviations.

Rules, as of an instant (AsOf: events before `cutoff` count, time is measured at `clock`):
* a journey starts at a customer's first event on an entry stage (`entry_stage_ids`);
* the current stage at an event is the highest-index stage entered by it;
* status, first that holds: final stage within the conversion window and before any exit
  -> converted; exit event -> dropped; window passed -> dropped; longer than
  max_time_in_stage in the current stage (and identified, with `stalls: identified`) ->
  stalled; else in_progress (bounds strict: exactly the limit is not over).
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
from transforms.ordering import rule_for
from transforms.ordering.base import CustomerEvents, entered_by, first_index
from transforms.sessions import customer_order, run_bounds

__all__ = ["AsOf", "JourneyOutputs", "build_journeys", "as_of_micros"]

NEVER = np.iinfo(np.int64).max
"""Time of what did not happen (µs): compares after every real time."""
DAY_US = 86_400 * 10**6
_US = timedelta(microseconds=1)
DETOUR, OFF_MAP = (DEVIATION_KINDS.index(k) for k in ("detour", "off_map"))
CONVERTED, DROPPED, STALLED, IN_PROGRESS = (STATUSES.index(s) for s in ("converted", "dropped", "stalled", "in_progress"))
_CONTACT_KEYS = ("user_id", "email", "phone")
"""Identity keys that make a customer someone the business can contact."""


@dataclass(frozen=True)
class AsOf:
    """The instant a run describes: its partition day, the events that count (ts < cutoff,
    µs) and the clock statuses and times in stage are measured at (µs)."""

    day: date
    cutoff: int
    clock: int

    @classmethod
    def end_of(cls, day: date) -> "AsOf":
        """`--date D`: the end of D (00:00 UTC of D+1), exclusive."""
        return cls(day, as_of_micros(day), as_of_micros(day))

    @classmethod
    def at(cls, instant: datetime) -> "AsOf":
        """`--as-of TIMESTAMP`: events at or before it, on the day of its UTC date."""
        utc = instant.astimezone(timezone.utc) if instant.tzinfo else instant.replace(tzinfo=timezone.utc)
        us = int(utc.timestamp()) * 10**6 + utc.microsecond
        return cls(utc.date(), us + 1, us)

    def with_clock(self, clock: int) -> "AsOf":
        return AsOf(self.day, self.cutoff, clock)


@dataclass(frozen=True)
class JourneyOutputs:
    """One bucket's journey tables, in the schemas of journey_defs.outputs."""

    journeys: pa.Table
    journey_stages: pa.Table
    deviations: pa.Table
    feedback: pa.Table


def as_of_micros(as_of_date: date) -> int:
    """The end of `as_of_date` (00:00 UTC of the next day) in µs: events before it count."""
    return int(datetime(as_of_date.year, as_of_date.month, as_of_date.day, tzinfo=timezone.utc).timestamp()) * 10**6 + DAY_US


def build_journeys(events: pa.Table, journey: JourneyMap, as_of: AsOf | date, segments: pa.Table | None) -> JourneyOutputs:
    """Journey tables as of `as_of` (an AsOf, or a date: its end) from one bucket of events
    carrying `stage_index` and `role` (transforms.match); `segments` = (customer_id, segment)
    from the CRM, or None."""
    as_of = as_of if isinstance(as_of, AsOf) else AsOf.end_of(as_of)
    ev = _prepare(events, as_of.cutoff, len(journey.stages))
    rule = rule_for(journey.ordering)
    start = first_index(ev, np.isin(ev.stage, [journey.stage_ids.index(s) for s in journey.entry_stage_ids]))
    started = np.where(start >= 0, ev.ts[start], NEVER)
    after_start = (start[ev.cust] >= 0) & (ev.position >= start[ev.cust])
    entry_event = rule.entries(ev, journey, after_start)
    kind, dev_stage, from_stage = rule.deviations(ev, journey, entry_event, after_start)
    entries = np.where(entry_event >= 0, ev.ts[entry_event], NEVER)
    current_at = entered_by(entry_event, ev, strictly_before=False)
    for role, code in (("support", DETOUR), ("off_map", OFF_MAP)):
        pick = after_start & (ev.role == ROLES.index(role))
        kind[pick], dev_stage[pick] = code, current_at[pick]

    exit_event = first_index(ev, after_start & (ev.role == ROLES.index("exit")))
    identified = _identified(ev, segments)
    status, current = _statuses(journey, entries, entry_event, started, exit_event, identified, as_of.clock)
    segment = _segments(ev.keys, segments)
    context = (journey.id, as_of.day)
    return JourneyOutputs(
        journeys=_journeys_table(ev, journey, context, as_of, segment, identified, started, entries, status, current,
                                 exit_event),
        journey_stages=_stages_table(ev, journey, context, segment, entries, entry_event, status, current, as_of.clock),
        deviations=_deviations_table(ev, journey, context, kind, dev_stage, from_stage),
        feedback=_feedback_table(ev, journey, context, after_start, current_at),
    )


# --- per-event and per-customer rules ------------------------------------------------------
_COLUMNS = ("customer_id", "event_id", "ts", "channel", "event_type", "score", "stage_index", "role",
            "source_file", "source_line", *_CONTACT_KEYS)
"""The event columns journeys read (sorting only these keeps the cost per bucket low)."""


def _prepare(events: pa.Table, cutoff: int, n_stages: int) -> CustomerEvents:
    """The events before `cutoff`, in journey order: customer, time, map order (stage events
    by stage index, then other events), source order (file, line), event id."""
    ts = events["ts"].cast(pa.int64()).to_numpy()
    table = events.select(list(_COLUMNS)).filter(pa.array(ts < cutoff))
    role = pc.index_in(table["role"], pa.array(ROLES)).fill_null(-1).to_numpy()
    stage = np.where(role == ROLES.index("stage"), table["stage_index"].fill_null(-1).to_numpy(), -1)
    keys = table.append_column("map_rank", pa.array(np.where(stage >= 0, stage, n_stages), pa.int64()))
    order, new = customer_order(keys, ties=("map_rank", "source_file", "source_line", "event_id"))
    table, role, stage = table.take(pa.array(order)), role[order], stage[order]
    first, last = run_bounds(new)
    return CustomerEvents(table, table["customer_id"].combine_chunks().take(pa.array(first)), np.cumsum(new) - 1,
                          table["ts"].cast(pa.int64()).to_numpy(), stage, role, first, last)


def _identified(ev: CustomerEvents, segments: pa.Table | None) -> np.ndarray:
    """Per customer: a user id, e-mail or phone in its events, or a CRM record."""
    known = np.zeros(len(ev.ts), dtype=bool)
    for key in _CONTACT_KEYS:
        known |= ev.table[key].is_valid().to_numpy(zero_copy_only=False)
    out = np.zeros(len(ev.keys), dtype=bool)
    np.logical_or.at(out, ev.cust, known)
    if segments is not None and segments.num_rows:
        out |= pc.is_in(ev.keys, segments["customer_id"]).to_numpy(zero_copy_only=False)
    return out


def _statuses(journey: JourneyMap, entries, entry_event, started, exit_event, identified, clock: int):
    """Status (index into STATUSES) and current stage per customer, at `clock`."""
    n = len(entries)
    current = np.full(n, -1, dtype=np.int64)
    for k in range(entries.shape[1]):
        current[entries[:, k] != NEVER] = k
    current_entry = entries[np.arange(n), np.maximum(current, 0)]
    sla = np.array([s.max_time_in_stage // _US if s.max_time_in_stage else NEVER for s in journey.stages], dtype=np.int64)
    window = journey.conversion_window // _US
    final, final_event = entries[:, -1], entry_event[:, -1]
    exited = exit_event >= 0
    converted = (final != NEVER) & (final - started <= window) & (~exited | (exit_event > final_event))
    expired = clock - started > window
    stalled = (clock - current_entry > sla[np.maximum(current, 0)]) & (current >= 0)
    if journey.stalls == "identified":
        stalled &= identified
    status = np.select([converted, exited, expired, stalled], [CONVERTED, DROPPED, DROPPED, STALLED], IN_PROGRESS)
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


def _journeys_table(ev, journey, context, as_of: AsOf, segment, identified, started, entries, status, current,
                    exit_event) -> pa.Table:
    who = np.flatnonzero(started != NEVER)
    current_entry = entries[who, np.maximum(current[who], 0)]
    exits = exit_event[who]
    return pa.table({
        **_common(context, len(who)),
        "as_of_at": pa.repeat(pa.scalar(as_of.clock, pa.int64()), len(who)).cast(UTC_MICROS),
        "journey_version": pa.repeat(pa.scalar(journey.version, pa.string()), len(who)),
        "customer_id": ev.keys.take(pa.array(who)),
        "segment": segment.take(pa.array(who)),
        "identified": pa.array(identified[who]),
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


def _stages_table(ev, journey, context, segment, entries, entry_event, status, current, clock: int) -> pa.Table:
    """One row per entered stage; a stage is left at the earliest entry of a later stage of the
    map entered after it — exactly the funnel's "went on" (an unordered journey's stage entered
    after every later one it reaches is never left)."""
    later = np.full(entries.shape, NEVER, dtype=np.int64)
    for k in range(entries.shape[1] - 1):
        after = entry_event[:, k + 1:] > entry_event[:, k:k + 1]
        later[:, k] = np.where(after, entries[:, k + 1:], NEVER).min(axis=1)
    cust, k = np.nonzero(entries != NEVER)
    entered = entries[cust, k]
    left = later[cust, k]
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
        "time_in_stage_s": pa.array((np.where(left == NEVER, np.maximum(clock, entered), left) - entered) / 1e6),
        "is_current": pa.array(is_current),
        "stalled": pa.array(is_current & (status[cust] == STALLED)),
    }).select(JOURNEY_STAGES.names).cast(JOURNEY_STAGES)


def _event_rows(ev: CustomerEvents, context, rows: np.ndarray) -> dict[str, pa.Array]:
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
