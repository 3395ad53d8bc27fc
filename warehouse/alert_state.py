"""Where a journey's alert replay stopped, so that a publish of later nights continues from it
instead of replaying the whole history, with the same tables as the whole replay.

Why it can: a night's alerts depend only on the charts (the first cohort each judges, the
evidence of the cohorts past their horizon), the stages holding their baseline, the open
alerts, and the counts of the entry nights from the oldest a held baseline or an unfrozen
cohort reaches (`window_start`). Why it is exact: it continues only when nothing the state was
made from can have changed — every day published now is later than its last night, the
journey's published nights up to it, its first entry and its series are the same, and so are
its policy, final stage, SLAs and the alerting code itself (a hash of its modules). Otherwise
the whole history is replayed (backfills, republished days, a new segment or a new version)."""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import duckdb

from journey_defs.model import AlertPolicy
from warehouse.alert_counts import AGE_CAP, Counts, label, unlabel
from warehouse.tables import existing_tables

VERSION = 1
TABLE = "alert_state"
CODE = ("alerting.py", "alert_evidence.py", "alert_counts.py", "alert_state.py")


@lru_cache(maxsize=1)
def _code_hash() -> str:
    here = Path(__file__).parent
    return hashlib.sha256(b"".join((here / name).read_bytes() for name in CODE)).hexdigest()


def fingerprint(con: duckdb.DuckDBPyConnection, journey_id: str, final_stage: str, policy: AlertPolicy) -> str:
    """What a state is valid for: the journey's policy, final stage and SLAs, and the code."""
    sla = sorted(con.execute("SELECT stage, max_time_in_stage_s FROM journey_maps WHERE journey_id = ?",
                             [journey_id]).fetchall())
    made_of = [VERSION, _code_hash(), final_stage, sla, policy.recent_window.days, policy.baseline_window.days,
               policy.min_relative_rise, policy.significance, policy.min_sample]
    return hashlib.sha256(json.dumps(made_of, default=str).encode()).hexdigest()


def load(con: duckdb.DuckDBPyConnection, journey_id: str) -> dict | None:
    """The journey's saved state (None when there is none, or it cannot be read)."""
    have = TABLE in existing_tables(con)
    found = con.execute(f"SELECT state FROM {TABLE} WHERE journey_id = ?", [journey_id]).fetchall() if have else []
    try:
        state = json.loads(found[0][0]) if len(found) == 1 else None
    except (TypeError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("version") == VERSION else None


def dumps(state: dict) -> str:
    return json.dumps(state, sort_keys=True)


def state(counts: Counts, charts: dict, open_alerts: dict, origin: int) -> dict:
    """The state after the counts' last night: the charts' (Monitor.state), the open alerts'
    series and opening rise, and what it was made from (see `matches`)."""
    return {"version": VERSION, "last": counts.nights[-1], "nights": len(counts.nights),
            "first_entry": counts.first_entry, "origin": origin,
            "keys": sorted(label(key) for key in counts.series), **charts,
            "open": {stage: {"alert_id": a.row["alert_id"], "lead": list(a.lead), "opened_rise": a.opened_rise}
                     for stage, a in sorted(open_alerts.items())}}


def keys(state: dict) -> tuple[tuple, ...]:
    return tuple(unlabel(text) for text in state["keys"])


def window_start(state: dict, after: int, policy: AlertPolicy) -> int:
    """The oldest entry night the nights from `after` on can read: a baseline (its own, or a
    held one's) reaches back a horizon and a baseline window, and a started chart still has
    to freeze its cohorts from `first + frozen`."""
    judged = min([after, *state["held"].values()])
    unfrozen = [first + len(frozen) for key, (first, frozen) in state["charts"].items() if key in state["started"]]
    return min([judged - AGE_CAP - policy.baseline_window.days + 1, *unfrozen])


def matches(state: dict, counts: Counts) -> bool:
    """The counts are those of the warehouse the state was made from, plus later nights."""
    before = [n for n in counts.nights if n <= state["last"]]
    return (counts.first_entry == state["first_entry"]
            and min(counts.first_entry, counts.nights[0] - AGE_CAP) == state["origin"]
            and len(before) == state["nights"] and before[-1:] == [state["last"]]
            and sorted(label(key) for key in counts.series) == state["keys"])
