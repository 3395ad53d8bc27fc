"""Committing a staged run: the partitions it owns become current together, in one step."""
from __future__ import annotations

from datetime import date
from typing import Iterable

from lake import crash
from lake.lock import is_held_here
from lake.state import LakeConflict, LakeState, RunFolder, collect_garbage, read_state, write_state
from lake.tables import INGEST_DAY, JOURNEY, RUN, SOURCE, TABLES


def owned_partitions(run_id: str, as_of: date, ingest_days: Iterable[date], journeys: Iterable[str],
                     sources: Iterable[str]) -> list[tuple[str, date, str]]:
    """Every (table, day, scope) a run replaces: ingest-day tables on its ingest days and its
    as-of day (whole-log rows land there), the others on its as-of day; per journey, per
    events source it read, or its own run id."""
    raw_days = sorted(set(ingest_days) | {as_of})
    scopes = {JOURNEY: sorted(set(journeys)), SOURCE: sorted(set(sources)), RUN: [run_id]}
    return [(name, day, scope) for name, t in TABLES.items()
            for day in (raw_days if t.partition == INGEST_DAY else [as_of]) for scope in scopes[t.scope]]


def commit(folder: RunFolder, info: dict, owned: list[tuple[str, date, str]], based_on: int) -> LakeState:
    """Make `folder`'s partitions current. `based_on` is the state version the run read its
    lookback from: if another commit came in between (a writer without the lock), the run
    is refused rather than silently overwriting what it never saw."""
    root = folder.root
    if not is_held_here(root):
        raise RuntimeError(f"commit to {root} without holding its writer lock")
    state = read_state(root)
    if state.version != based_on:
        raise LakeConflict(f"lake {root} changed while run {folder.run_id} was staging (commit {based_on} → "
                           f"{state.version}); nothing of this run was committed: run it again")
    new = state.with_run(folder.run_id, info, owned)
    write_state(root, new)
    collect_garbage(root, new)
    return new


def discard(folder: RunFolder) -> None:
    """Remove an uncommitted run's folder (a failed gate, a failed run)."""
    from lake.files import delete

    delete([folder.path])
    crash.point("cleanup", folder.path)
