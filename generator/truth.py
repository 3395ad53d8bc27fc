"""Ground truth, computed from what the generator knows (who each event really belongs to,
which stage each touchpoint was meant for) — never from the pipeline. Statuses follow
README, *Semantics*: converted (final stage within the conversion window, before any exit),
dropped (explicit exit, or the window passed without converting), stalled (longer than the
stage's max_time_in_stage in the current stage; only identified customers with `stalls:
identified`), otherwise in progress. Boundaries are strict: a customer is stalled when
as_of - entered > max_time_in_stage, dropped by window when as_of - journey_start > window."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from generator import scenario as sc
from generator.events import Vocabulary
from generator.simulate import DAY, US
from journey_defs.model import JourneyMap

STATUS_NAMES = ("converted", "dropped", "stalled", "in_progress")
CONVERTED, DROPPED, STALLED, IN_PROGRESS = range(4)
NOT_STARTED = -1


def stage_entries(cols: dict, n: int, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """(n, stages) entry times and entry channel codes, from the events meant as stage entries."""
    entries = np.full((n, len(sc.STAGES)), np.nan)
    channels = np.full((n, len(sc.STAGES)), -1, dtype=np.int32)
    is_stage = cols["role"] == vocab.code("stage")
    cust, stage = cols["cust"][is_stage], cols["stage"][is_stage]
    entries[cust, stage] = cols["ts"][is_stage]
    channels[cust, stage] = cols["source"][is_stage]
    return entries, channels


def statuses_as_of(entries: np.ndarray, exit_ts: np.ndarray, as_of_us: float, journey: JourneyMap,
                   identified_at: np.ndarray | None = None):
    """Status code (index into STATUS_NAMES, NOT_STARTED before the journey opened) and
    current stage index per customer, as of `as_of_us`. `identified_at`: when the customer's
    user id, e-mail or phone first appears (NaN: never); with `stalls: identified` only
    customers identified by then can stall."""
    started = entries[:, 0] < as_of_us
    reached = ~np.isnan(entries) & (entries < as_of_us)
    current = np.where(reached.any(axis=1), reached.shape[1] - 1 - np.argmax(reached[:, ::-1], axis=1), -1)
    rows = np.arange(len(entries))
    current_entry = entries[rows, np.maximum(current, 0)]
    sla = np.array([s.max_time_in_stage.total_seconds() * US if s.max_time_in_stage else np.inf for s in journey.stages])
    window = journey.conversion_window.total_seconds() * US
    final = len(journey.stages) - 1
    converted = reached[:, final] & (entries[:, final] - entries[:, 0] <= window)
    exited = exit_ts < as_of_us
    expired = as_of_us - entries[:, 0] > window
    stalled = as_of_us - current_entry > sla[np.maximum(current, 0)]
    if journey.stalls == "identified":
        stalled &= ~np.isnan(identified_at) & (np.nan_to_num(identified_at, nan=np.inf) < as_of_us)
    converted &= ~(exit_ts < entries[:, final])  # an exit after converting leaves the customer converted
    code = np.select([converted, exited, expired, stalled], [CONVERTED, DROPPED, DROPPED, STALLED], IN_PROGRESS)
    code[~started] = NOT_STARTED
    return code, current


def status_history(keys: pa.Array, entries, exit_ts, start_us: int, days: int, journey: JourneyMap,
                   identified_at: np.ndarray | None = None) -> pa.Table:
    """Status and current stage of every started journey at the end of each day, stored as
    intervals: one row per customer and run of days with the same status and stage
    (`valid_from` .. `valid_to`, both inclusive). The status as of day D is the row with
    valid_from <= D <= valid_to."""
    codes = np.empty((len(entries), days), dtype=np.int16)
    for d in range(days):
        status, current = statuses_as_of(entries, exit_ts, start_us + (d + 1) * DAY, journey, identified_at)
        codes[:, d] = np.where(status == NOT_STARTED, -1, status * 16 + current)
    change = np.ones_like(codes, dtype=bool)
    change[:, 1:] = codes[:, 1:] != codes[:, :-1]
    customer, first_day = np.nonzero(change)
    last_day = np.append(first_day[1:] - 1, days - 1)
    last_day[np.append(customer[1:] != customer[:-1], True)] = days - 1
    code = codes[customer, first_day]
    started = code >= 0
    customer, first_day, last_day, code = customer[started], first_day[started], last_day[started], code[started]
    day0 = np.datetime64(start_us, "us").astype("datetime64[D]")
    return pa.table({
        "customer_key": keys.take(pa.array(customer)),
        "valid_from": pa.array(day0 + first_day),
        "valid_to": pa.array(day0 + last_day),
        "status": pa.array(STATUS_NAMES, pa.string()).take(pa.array(code // 16)),
        "stage": pa.array(journey.stage_ids, pa.string()).take(pa.array(code % 16)),
    })


def sessions(codes: np.ndarray, keys: pa.Array, ts: np.ndarray, gap_us: float) -> pa.Table:
    """Sessions per customer: consecutive events (all channels) with gaps under the gap.
    `codes` are integer customer codes per event; `keys` maps a code to its customer id."""
    order = np.lexsort((ts, codes))
    k, t = codes[order], ts[order]
    new = np.ones(len(k), dtype=bool)
    new[1:] = (k[1:] != k[:-1]) | (t[1:] - t[:-1] >= gap_us)
    session_index = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], len(k)) - 1
    return pa.table({
        "customer_key": keys.take(pa.array(k[starts])),
        "session_start": timestamps(t[starts]),
        "session_end": timestamps(t[ends]),
        "n_events": pa.array(np.bincount(session_index), pa.int64()),
    })


def timestamps(values_us: np.ndarray) -> pa.Array:
    """µs floats (NaN = missing) as a UTC timestamp array."""
    return pa.array(values_us.astype("datetime64[us]")).cast(pa.timestamp("us", tz="UTC"))


def deviations(cols: dict, keys_by_event: pa.Array, journey: JourneyMap, vocab: Vocabulary) -> pa.Table:
    """Deviations the generator injected: skipped stage, backtrack, detour, off-map."""
    kind_of = {"skip": "skipped_stage", "backtrack": "backtrack", "detour": "detour", "off_map": "off_map"}
    role = cols["role"]
    pick = np.isin(role, [vocab.code(r) for r in kind_of])
    kinds = np.array([kind_of.get(r) for r in vocab.texts(role[pick]).to_pylist()], dtype=object)
    names = np.array(journey.stage_ids, dtype=object)
    stage = names[cols["stage"][pick]]
    # A backtrack revisits discover from the stage the customer was in.
    is_backtrack = kinds == "backtrack"
    return pa.table({
        "customer_key": keys_by_event.filter(pa.array(pick)),
        "kind": pa.array(kinds, pa.string()),
        "stage": pa.array(np.where(is_backtrack, names[sc.DISCOVER], stage), pa.string()),
        "from_stage": pa.array(np.where(is_backtrack, stage, None), pa.string()),
        "channel": vocab.texts(cols["source"][pick]),
        "event_type": vocab.texts(cols["event_type"][pick]),
        "ts": timestamps(cols["ts"][pick]),
    })


def feedback(cols: dict, keys_by_event: pa.Array, entries: np.ndarray, journey: JourneyMap, vocab: Vocabulary) -> pa.Table:
    """NPS/CSAT answers with the stage the customer was in when answering (furthest reached)."""
    pick = ~np.isnan(cols["score"]) & (cols["cust"] >= 0)
    cust, ts = cols["cust"][pick], cols["ts"][pick]
    reached = ~np.isnan(entries[cust]) & (entries[cust] <= ts[:, None])
    current = reached.shape[1] - 1 - np.argmax(reached[:, ::-1], axis=1)
    before_any_stage = ~reached.any(axis=1)  # argmax of an all-false row would say "final stage"
    return pa.table({
        "customer_key": keys_by_event.filter(pa.array(pick)),
        "channel": vocab.texts(cols["source"][pick]),
        "event_type": vocab.texts(cols["event_type"][pick]),
        "ts": timestamps(ts),
        "score": pa.array(cols["score"][pick].astype(np.int32)),
        "stage": pa.array(journey.stage_ids, pa.string()).take(pa.array(current, mask=before_any_stage)),
    })
