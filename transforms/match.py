"""Canonical events -> what each event is for one journey map: its role and stage.

Why this module exists: every later step (sessions aside) reads an event only through its
role (exit, stage, support, ignore, off_map, in that priority) and the stage it touches.
The map's touchpoints become one DuckDB query over the whole table, so matching costs the
same whether a bucket holds a thousand events or millions. The rule is the scalar reference
`journey_defs.model.Touchpoint.matches`: equal channel and event type, and every predicate
true on the attribute as text (a canonical column of that name, else the key of the
`attributes` JSON object; missing -> no match). Regexes run on RE2 (`regexp_matches`), which
agrees with Python's `re.search` for the patterns maps use (anchors, classes, repetition);
RE2 has no backreferences or lookaround, and its `$` does not match before a final newline.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from journey_defs.canonical import CANONICAL_SCHEMA
from journey_defs.model import JourneyMap, Predicate, Touchpoint
from journey_defs.outputs import OFF_MAP_COUNTS
from transforms.sql_session import query_tables, sql_literal

__all__ = ["match_touchpoints", "with_matches", "off_map_counts", "OFF_MAP_COUNTS"]


_COLUMNS = frozenset(CANONICAL_SCHEMA.names) - {"attributes"}

_PREDICATE_SQL = {"equals": "{x} = {v}", "in": "{x} IN ({v})", "prefix": "starts_with({x}, {v})",
                  "regex": "regexp_matches({x}, {v})"}
"""Each predicate operator (journey_defs.model.PREDICATE_OPS) as SQL on text column x, literal(s) v."""


def match_touchpoints(events: pa.Table, journey: JourneyMap) -> pa.Table:
    """`stage_index` (int32, -1 = none) and `role` (one of ROLES) per event, aligned with `events`."""
    attributes = sorted({p.attribute for t in _touchpoints(journey) for p in t.where})
    alias = {name: f"a{i}" for i, name in enumerate(attributes)}
    inner = ", ".join(["_i", "channel", "event_type"] + [f"{_attribute_sql(events, a)} AS {alias[a]}" for a in attributes])
    stage_case = " ".join(f"WHEN {_any(s.touchpoints, alias)} THEN {k}" for k, s in enumerate(journey.stages))
    sql = f"""
        SELECT _i, CAST(CASE WHEN is_exit THEN -1 ELSE stage END AS INTEGER) AS stage_index,
               CASE WHEN is_exit THEN 'exit' WHEN stage >= 0 THEN 'stage' WHEN is_support THEN 'support'
                    WHEN is_ignore THEN 'ignore' ELSE 'off_map' END AS role
        FROM (SELECT _i, {_any(journey.exits, alias)} AS is_exit, CASE {stage_case} ELSE -1 END AS stage,
                     {_any(journey.support, alias)} AS is_support, {_any(journey.ignore, alias)} AS is_ignore
              FROM (SELECT {inner} FROM src))"""
    needed = {"channel", "event_type"} | ({"attributes"} if any(a not in _COLUMNS for a in attributes) else set())
    src = events.select([c for c in events.column_names if c in needed or c in alias])
    src = src.append_column("_i", pa.array(np.arange(events.num_rows, dtype=np.int64)))
    out = query_tables(sql, {"src": src})
    if not out["_i"].equals(src["_i"]):
        raise RuntimeError("match query changed the event order")  # we rely on DuckDB keeping row order
    return pa.table({"stage_index": out["stage_index"].combine_chunks(), "role": out["role"].combine_chunks()})


def with_matches(events: pa.Table, journey: JourneyMap) -> pa.Table:
    """`events` with the `stage_index` and `role` columns of `match_touchpoints` appended."""
    matched = match_touchpoints(events, journey)
    return events.append_column("stage_index", matched["stage_index"]).append_column("role", matched["role"])


def off_map_counts(events_with_role: pa.Table, journey: JourneyMap) -> pa.Table:
    """Off-map events counted by channel and event type (OFF_MAP_COUNTS): what the map does not
    know yet. Counts of several buckets add up."""
    off_map = events_with_role.select(["channel", "event_type", "role"]).filter(pc.field("role") == "off_map")
    counts = off_map.group_by(["channel", "event_type"], use_threads=False).aggregate([([], "count_all")])
    out = counts.sort_by([("channel", "ascending"), ("event_type", "ascending")])
    out = pa.table({"journey_id": pa.array([journey.id] * out.num_rows, pa.string()), "channel": out["channel"],
                    "event_type": out["event_type"], "n_events": out["count_all"]})
    return out.cast(OFF_MAP_COUNTS)


def _touchpoints(journey: JourneyMap) -> list[Touchpoint]:
    return [t for s in journey.stages for t in s.touchpoints] + [*journey.exits, *journey.support, *journey.ignore]


def _attribute_sql(events: pa.Table, name: str) -> str:
    """An attribute as text: the canonical column of that name, else the `attributes` JSON key."""
    if name in _COLUMNS:
        return f'CAST("{name}" AS VARCHAR)' if name in events.column_names else "NULL::VARCHAR"
    if "attributes" not in events.column_names:
        return "NULL::VARCHAR"
    path = '$."' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"json_extract_string(attributes, {sql_literal(path)})"


def _any(touchpoints: tuple[Touchpoint, ...], alias: dict[str, str]) -> str:
    """SQL that is true when the event matches one of `touchpoints` (never NULL)."""
    if not touchpoints:
        return "false"
    return "(" + " OR ".join(_touchpoint_sql(t, alias) for t in touchpoints) + ")"


def _touchpoint_sql(t: Touchpoint, alias: dict[str, str]) -> str:
    terms = [f"channel = {sql_literal(t.channel)}", f"event_type = {sql_literal(t.event_type)}"]
    terms += [f"coalesce({_predicate_sql(p, alias[p.attribute])}, false)" for p in t.where]
    return "(" + " AND ".join(terms) + ")"


def _predicate_sql(p: Predicate, column: str) -> str:
    values = p.value if p.op == "in" else (p.value,)
    return _PREDICATE_SQL[p.op].format(x=column, v=", ".join(sql_literal(v) for v in values))
