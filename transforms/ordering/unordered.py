"""`unordered`: a stage is entered at its first event after the journey started, in any
order; there are no progress deviations."""
from __future__ import annotations

import numpy as np

from journey_defs.model import JourneyMap
from transforms.ordering.base import NONE, CustomerEvents, first_index


def entries(ev: CustomerEvents, journey: JourneyMap, after_start: np.ndarray) -> np.ndarray:
    entry_event = np.full((len(ev.keys), len(journey.stages)), NONE, dtype=np.int64)
    for k in range(len(journey.stages)):
        entry_event[:, k] = first_index(ev, after_start & (ev.stage == k))
    return entry_event


def deviations(ev: CustomerEvents, journey: JourneyMap, entry_event: np.ndarray, after_start: np.ndarray):
    return tuple(np.full(len(ev.ts), NONE, dtype=np.int64) for _ in range(3))
