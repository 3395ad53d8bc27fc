"""Sessions: a customer's consecutive events (all channels, all roles) with gaps under the
journey's inactivity gap.

Why this module exists: sessions are the unit analysts count visits in, and they must be
stable across reruns, so a session's id is its customer and its start time
(`<customer_id>#<epoch microseconds>`), never a counter. Vectorized: one sort of the bucket
by (customer_id, ts, event_id), then array arithmetic on the sorted order.
"""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from journey_defs.outputs import SESSIONS

__all__ = ["sessionize", "customer_order", "run_bounds"]


def customer_order(events: pa.Table, ties: tuple[str, ...] = ("event_id",)) -> tuple[np.ndarray, np.ndarray]:
    """(row indices sorting `events` by customer_id, ts, then the `ties` columns; per sorted
    row, whether it is its customer's first). Ties broken by event_id keep every per-customer
    step deterministic; journeys break them by map and source order first."""
    if events["customer_id"].null_count:
        raise ValueError("events without customer_id: stitch identities first")
    columns = ["customer_id", "ts", *ties]
    order = pc.sort_indices(events.select(columns), sort_keys=[(c, "ascending") for c in columns])
    customer = events["customer_id"].take(order).combine_chunks()
    first = np.ones(len(order), dtype=bool)
    first[1:] = pc.not_equal(customer[1:], customer[:-1]).to_numpy(zero_copy_only=False)
    return order.to_numpy(), first


def run_bounds(starts_run: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last index of each run of rows, given a flag per row that starts a run."""
    starts = np.flatnonzero(starts_run)
    return starts, np.append(starts[1:], len(starts_run))[:len(starts)] - 1


def sessionize(events: pa.Table, gap: timedelta, journey_id: str) -> tuple[pa.Array, pa.Table]:
    """(session_id per event, aligned with `events`; SESSIONS rows, by customer and start).
    A session starts at a customer's first event and wherever the time since the customer's
    previous event is >= `gap`."""
    order, new = customer_order(events)
    customer = events["customer_id"].take(order).combine_chunks()
    ts = events["ts"].take(order).combine_chunks().cast(pa.int64()).to_numpy()
    new[1:] |= np.diff(ts) >= gap // timedelta(microseconds=1)
    starts, ends = run_bounds(new)
    session_of = np.cumsum(new) - 1

    start_text = pa.array(ts[starts]).cast(pa.string())
    session_ids = pc.binary_join_element_wise(customer.take(starts), start_text, "#")
    inverse = np.empty(len(ts), dtype=np.int64)
    inverse[order] = np.arange(len(ts))
    per_event = session_ids.take(pa.array(session_of[inverse], pa.int64()))
    sessions = pa.table({
        "journey_id": pa.repeat(pa.scalar(journey_id, pa.string()), len(starts)),
        "customer_id": customer.take(starts),
        "session_id": session_ids,
        "session_start": pa.array(ts[starts]).cast(SESSIONS.field("session_start").type),
        "session_end": pa.array(ts[ends]).cast(SESSIONS.field("session_end").type),
        "n_events": pa.array(ends - starts + 1),
        "channels": _channel_lists(events["channel"].take(order).combine_chunks(), starts),
    }, schema=SESSIONS)
    return per_event, sessions


def _channel_lists(channel: pa.Array, starts: np.ndarray) -> pa.Array:
    """Distinct channels of each session (rows from `starts` to the next start), sorted and
    comma-separated: a bit per channel (a handful: journey_defs.canonical.CHANNELS), OR-ed
    over the session, one text per distinct set."""
    names = pc.unique(channel).sort()
    if len(starts) == 0:
        return pa.array([], pa.string())
    bits = np.left_shift(np.int64(1), pc.index_in(channel, names).to_numpy().astype(np.int64))
    sets = np.bitwise_or.reduceat(bits, starts)
    distinct, which = np.unique(sets, return_inverse=True)
    texts = [",".join(n for k, n in enumerate(names.to_pylist()) if s >> k & 1) for s in distinct]
    return pa.array(texts, pa.string()).take(pa.array(which.ravel()))
