"""`strict`: `ordered`, and the journey's progress stops at its first progress deviation
(skipped_stage, backtrack, out_of_order): later entries and deviations do not count."""
from __future__ import annotations

import numpy as np

from journey_defs.model import JourneyMap
from transforms.ordering import ordered
from transforms.ordering.base import NONE, CustomerEvents, first_index

entries = ordered.entries


def deviations(ev: CustomerEvents, journey: JourneyMap, entry_event: np.ndarray, after_start: np.ndarray):
    kind, stage, from_stage = ordered.deviations(ev, journey, entry_event, after_start)
    cut = first_index(ev, kind >= 0)
    cut = np.where(cut >= 0, cut, np.iinfo(np.int64).max)
    late = entry_event > cut[:, None]
    entry_event[late] = NONE  # in place: the caller's entries stop at the cut
    after = ev.position > cut[ev.cust]
    kind[after], stage[after], from_stage[after] = NONE, NONE, NONE
    return kind, stage, from_stage
