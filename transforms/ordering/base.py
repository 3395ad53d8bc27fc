"""What every ordering rule works on: one bucket's events in journey order, and per-customer
array helpers. Positions, not times, order events: ties are broken once, by the sort
(README, *Semantics*: time, then map order, then source order)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from journey_defs.model import JourneyMap

NONE = -1
"""Index of what did not happen (no event, no stage)."""


@dataclass(frozen=True)
class CustomerEvents:
    """A bucket's events in journey order; per-event arrays are aligned with `table`'s rows."""

    table: pa.Table
    keys: pa.Array        # customer_id per customer code
    cust: np.ndarray      # customer code per event
    ts: np.ndarray        # µs since the epoch
    stage: np.ndarray     # stage index of role-'stage' events, else -1
    role: np.ndarray      # index into ROLES
    first: np.ndarray     # per customer code, the index of its first event
    last: np.ndarray      # and of its last

    @property
    def position(self) -> np.ndarray:
        return np.arange(len(self.ts))


def first_index(ev: CustomerEvents, mask: np.ndarray) -> np.ndarray:
    """Per customer, the index of its first event where `mask` holds (NONE if none)."""
    picked = np.flatnonzero(mask)
    first = picked[np.r_[True, ev.cust[picked[1:]] != ev.cust[picked[:-1]]]] if len(picked) else picked
    out = np.full(len(ev.keys), NONE, dtype=np.int64)
    out[ev.cust[first]] = first
    return out


def predecessors(journey: JourneyMap) -> np.ndarray:
    """p(k) per stage (JourneyMap.predecessors) as an array."""
    return np.array(journey.predecessors, dtype=np.int64)


def entered_by(entry_event: np.ndarray, ev: CustomerEvents, strictly_before: bool) -> np.ndarray:
    """Per event, the highest stage its customer had entered by it (at or, with
    `strictly_before`, before its position); NONE if none."""
    current = np.full(len(ev.ts), NONE, dtype=np.int64)
    pos = ev.position
    for k in range(entry_event.shape[1]):
        at = entry_event[ev.cust, k]
        done = (at >= 0) & ((at < pos) if strictly_before else (at <= pos))
        current[done] = k
    return current


def is_before(entry_event: np.ndarray, ev: CustomerEvents, k: np.ndarray) -> np.ndarray:
    """Per event, whether its customer entered stage k[event] strictly before it (k < 0: False)."""
    at = entry_event[ev.cust, np.maximum(k, 0)]
    return (k >= 0) & (at >= 0) & (at < ev.position)
