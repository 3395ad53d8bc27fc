"""`ordered`: a stage is entered at its first event after the entry of the required stage
before it (p(k)) and before the customer entered any later stage; events that break this
are deviations (skipped_stage, backtrack, out_of_order). Entered stages go up the map in
time, which the gate's stage_order check relies on."""
from __future__ import annotations

import numpy as np

from journey_defs.model import JourneyMap
from journey_defs.outputs import DEVIATION_KINDS
from transforms.ordering.base import NONE, CustomerEvents, entered_by, first_index, is_before, predecessors

SKIPPED, BACKTRACK, OUT_OF_ORDER = (DEVIATION_KINDS.index(k) for k in ("skipped_stage", "backtrack", "out_of_order"))


def entries(ev: CustomerEvents, journey: JourneyMap, after_start: np.ndarray) -> np.ndarray:
    """(customers x stages) index of the event entering each stage (NONE = not entered)."""
    n_stages = len(journey.stages)
    entry_event = np.full((len(ev.keys), n_stages), NONE, dtype=np.int64)
    pred = predecessors(journey)
    for k in range(n_stages):
        mask = after_start & (ev.stage == k)
        if pred[k] != NONE:
            at = entry_event[ev.cust, pred[k]]
            mask &= (at >= 0) & (at < ev.position)
        entry_event[:, k] = first_index(ev, mask)
    # Not after a later stage: from the last stage down, an entry after the earliest entry of
    # any later stage does not count. Stages that needed it were entered later still, so
    # they are already gone when their predecessor is looked at.
    earliest_later = np.full(len(ev.keys), np.iinfo(np.int64).max, dtype=np.int64)
    for k in reversed(range(n_stages)):
        late = (entry_event[:, k] >= 0) & (entry_event[:, k] > earliest_later)
        entry_event[late, k] = NONE
        entered = entry_event[:, k] >= 0
        earliest_later[entered] = np.minimum(earliest_later[entered], entry_event[entered, k])
    return entry_event


def deviations(ev: CustomerEvents, journey: JourneyMap, entry_event: np.ndarray, after_start: np.ndarray):
    """Per event: deviation kind (NONE), its stage and from_stage (NONE = null) for the
    progress deviations of a stage event after the start."""
    kind, stage, from_stage = (np.full(len(ev.ts), NONE, dtype=np.int64) for _ in range(3))
    is_stage = after_start & (ev.stage >= 0)
    s = np.maximum(ev.stage, 0)
    current = entered_by(entry_event, ev, strictly_before=True)
    entered_before = is_stage & is_before(entry_event, ev, ev.stage)
    is_entry = is_stage & (entry_event[ev.cust, s] == ev.position)
    pred = predecessors(journey)[s]
    later_current = is_stage & ~is_entry & (ev.stage < current)  # first: behind the current stage
    skipped = is_stage & ~is_entry & ~later_current & ~entered_before & (pred != NONE) & \
        ~is_before(entry_event, ev, pred)
    backtrack = later_current & entered_before
    out_of_order = later_current & ~entered_before
    for k in reversed([k for k, st in enumerate(journey.stages) if not st.optional]):
        missing = skipped & (ev.stage > k) & ~is_before(entry_event, ev, np.full(len(ev.ts), k))
        stage[missing] = k  # ends as the first required stage not entered by then
    kind[skipped], kind[backtrack], kind[out_of_order] = SKIPPED, BACKTRACK, OUT_OF_ORDER
    stage[backtrack | out_of_order] = ev.stage[backtrack | out_of_order]
    moved = skipped | backtrack | out_of_order
    from_stage[moved] = current[moved]
    return kind, stage, from_stage
