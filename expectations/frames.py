"""The tables a gate validates, as pandas frames built with DuckDB from the run's staged
Parquet (narrow: only the columns the checks read), plus the derived frames journey-aware
checks need (stage order per customer, the funnel along required stages, drift figures)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, timedelta

import duckdb
import pandas as pd
import pyarrow as pa

from expectations.run_context import GateLimits, RunContext
from journey_defs.canonical import CANONICAL_SCHEMA
from journey_defs.outputs import JOURNEY_STAGES, JOURNEYS, MANIFEST, OFF_MAP_COUNTS, SESSIONS, STAGE_DAILY
from lake.load import insert_parquet

UNRESOLVED_PREFIXES = ("anonymous_id:", "email:", "phone:")


@dataclass
class Frames:
    frames: dict[str, pd.DataFrame]
    details: dict[str, dict] = field(default_factory=dict)  # numbers reported beside a warning


def load(context: RunContext, limits: GateLimits) -> Frames:
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        staged = lambda name, table, schema, columns, days: _scan(  # noqa: E731
            con, name, [f for d in sorted(set(days)) for f in context.staged.files(table, d)], schema, columns)
        staged("events", "events", CANONICAL_SCHEMA,
               ["event_id", "ts", "channel", "event_type", "source", "source_date", "customer_id"], context.days)
        staged("manifest", "manifest", MANIFEST, MANIFEST.names, [context.as_of])
        staged("journeys", "journeys", JOURNEYS, ["journey_id", "customer_id", "status"], [context.as_of])
        staged("stages", "journey_stages", JOURNEY_STAGES,
               ["journey_id", "customer_id", "stage", "stage_index", "entered_at", "time_in_stage_s"], [context.as_of])
        staged("stage_daily", "stage_daily", STAGE_DAILY, STAGE_DAILY.names, [context.as_of])
        staged("off_map", "off_map", OFF_MAP_COUNTS, OFF_MAP_COUNTS.names, [context.as_of])
        staged("sessions", "sessions", SESSIONS, ["journey_id", "n_events"], [context.as_of])
        trailing = [context.as_of - timedelta(days=i) for i in range(1, limits.trailing_days + 1)]
        earlier = [f for d in trailing if d not in context.days for f in context.lake.files("events", d, context.sources)]
        _scan(con, "earlier_events", earlier, CANONICAL_SCHEMA, ["channel", "customer_id", "source_date"])
        con.execute("CREATE TABLE all_days AS SELECT channel, customer_id, source_date FROM events "
                    "UNION ALL SELECT * FROM earlier_events")
        out = Frames({
            "events": _events_frame(con, context),
            "manifest": _df(con, "SELECT source_file, records, events + bad_rows + duplicates AS accounted, "
                            "balanced FROM manifest"),
            "run_totals": _df(con, """
                SELECT coalesce(sum(bad_rows) / nullif(sum(records), 0), 0) AS bad_row_share,
                       coalesce(sum(events), 0) AS manifest_events, (SELECT count(*) FROM events) AS events_written
                FROM manifest"""),
            "skipped_files": _df(con, "SELECT source_file || ': ' || reason AS skipped FROM manifest "
                                 "WHERE status = 'skipped' ORDER BY source_file"),
            "journeys": _df(con, "SELECT journey_id, customer_id, status FROM journeys"),
            "journey_stages": _df(con, "SELECT journey_id, customer_id, stage, time_in_stage_s FROM stages"),
            "stage_daily": _df(con, "SELECT journey_id, stage, channel, segment, conversion_rate FROM stage_daily"),
        })
        skipped = out.frames["skipped_files"]["skipped"].tolist()
        if skipped:
            out.details["skipped_files"] = {"files": skipped}
        duplicated = con.execute("SELECT event_id, count(*) AS copies FROM events GROUP BY event_id "
                                 "HAVING count(*) > 1 ORDER BY copies DESC, event_id LIMIT $n",
                                 {"n": limits.sample_rows}).fetchall()
        if duplicated:
            out.details["events"] = {"duplicated_event_ids": {str(i): n for i, n in duplicated}}
        ordered = [j for j in context.journeys if j.ordering in ("ordered", "strict")]
        out.frames["stage_order"] = _stage_order(con, ordered)
        out.frames["funnel"] = _funnel(con, ordered)
        out.frames["reconcile"] = _reconcile(con, context)
        out.frames["off_map_share"], out.details["off_map_share"] = _off_map_share(con)
        out.frames["identity_rate"], out.details["identity_rate"] = _identity_rate(con, context, limits)
        out.frames["channel_volume"], out.details["channel_volume"] = _channel_volume(con, context, limits)
        return out
    finally:
        con.close()


def _scan(con, name: str, files: list[str], schema: pa.Schema, columns: list[str]) -> None:
    """Create table `name` with `columns` of the Parquet `files` (empty if none)."""
    con.register("_empty", pa.schema([schema.field(c) for c in columns]).empty_table())
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM _empty")
    con.unregister("_empty")
    insert_parquet(con, name, files, columns)


def _df(con, sql: str, params=None) -> pd.DataFrame:
    return con.sql(sql, params=params).to_arrow_table().to_pandas()


def _events_frame(con, context: RunContext) -> pd.DataFrame:
    """The run's events for the canonical checks. Ids are checked through a 63-bit hash
    (pandas needs ~3 s to find duplicates among 5M strings, ~0.1 s among integers): equal ids
    always collide, so no duplicate is missed; the ids behind a failure are in the details.
    `dated_ts` is the time of events from dated files (whole-log files have no window).
    `typed_as` is "source:event_type" for
    sources with a closed vocabulary and "source:*" for the others, so one set check covers
    every source; low-cardinality text is categorical (set checks on 5M rows stay cheap)."""
    closed = sorted(context.event_types)
    table = con.sql("""
        SELECT event_id IS NULL AS event_id_missing, (hash(event_id) >> 1)::BIGINT AS event_id_hash, ts,
               CASE WHEN source_date IS NOT NULL THEN ts END AS dated_ts, channel,
               source || ':' || CASE WHEN list_contains($closed, source) THEN event_type ELSE '*' END AS typed_as
        FROM events""", params={"closed": closed}).to_arrow_table()
    for name in ("channel", "typed_as"):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, table[name].dictionary_encode())
    return table.to_pandas()


def _stage_order(con, ordered) -> pd.DataFrame:
    """Per customer and stage of an ordered/strict journey: its entry time and the latest
    entry time of the stages before it (must not be later: the ordered rule never enters a
    stage after a later one, so a failure here is a bug, not a customer's odd path)."""
    ids = [j.id for j in ordered]
    return _df(con, """
        SELECT journey_id, customer_id, stage, entered_at,
               max(entered_at) OVER (PARTITION BY journey_id, customer_id ORDER BY stage_index
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS earlier_stage_entered_at
        FROM stages WHERE list_contains($ids, journey_id)""", {"ids": ids})


def _funnel(con, ordered) -> pd.DataFrame:
    """Customers who reached each stage beside those who reached p(k), the required stage
    before it: in an ordered map a stage is entered only after p(k), so it can never have
    more customers (entry stages, which need no p(k), are left out)."""
    rows = []
    for journey in ordered:
        reached = dict(con.execute(
            "SELECT stage, reached FROM stage_daily WHERE journey_id = ? AND channel = '*' AND segment = '*'",
            [journey.id]).fetchall())
        for k, before in enumerate(journey.predecessors):
            if before >= 0:
                stage = journey.stages[k].id
                rows.append({"journey_id": journey.id, "stage": stage, "reached": reached.get(stage, 0),
                             "reached_before": reached.get(journey.stages[before].id, 0)})
    return pd.DataFrame(rows, columns=["journey_id", "stage", "reached", "reached_before"])


def _reconcile(con, context: RunContext) -> pd.DataFrame:
    """Per journey: journeys built, customers counted at the entry stages by stage metrics,
    and customers with stage rows (all three are the same customers)."""
    rows = []
    for journey in context.journeys:
        entry = list(journey.entry_stage_ids)
        n = lambda sql, params: con.execute(sql, params).fetchone()[0] or 0  # noqa: E731
        rows.append({
            "journey_id": journey.id,
            "journeys": n("SELECT count(*) FROM journeys WHERE journey_id = ?", [journey.id]),
            "customers_with_stages": n("SELECT count(DISTINCT customer_id) FROM stages WHERE journey_id = ?",
                                       [journey.id]),
            "customers_entering": n("SELECT count(DISTINCT customer_id) FROM stages WHERE journey_id = ? "
                                    "AND list_contains(?, stage)", [journey.id, entry]),
        })
    return pd.DataFrame(rows, columns=["journey_id", "journeys", "customers_with_stages", "customers_entering"])


def _off_map_share(con) -> tuple[pd.DataFrame, dict]:
    rows = con.execute("""
        SELECT s.journey_id, coalesce(o.n, 0) AS off_map_events, s.n AS events, coalesce(o.n, 0) / s.n AS share
        FROM (SELECT journey_id, sum(n_events) AS n FROM sessions GROUP BY 1) s
        LEFT JOIN (SELECT journey_id, sum(n_events) AS n FROM off_map GROUP BY 1) o USING (journey_id)
        WHERE s.n > 0 ORDER BY 1""").fetchall()
    details = {}
    for journey_id, off, events, share in rows:
        top = con.execute("SELECT channel || '/' || event_type, n_events FROM off_map WHERE journey_id = ? "
                          "ORDER BY n_events DESC, 1 LIMIT 5", [journey_id]).fetchall()
        details[journey_id] = {"off_map_events": int(off), "events": int(events), "share": round(float(share), 4),
                               "top_unmatched": [{"type": t, "events": int(n)} for t, n in top]}
    frame = pd.DataFrame([{"journey_id": j, "off_map_share": float(s)} for j, _, _, s in rows],
                         columns=["journey_id", "off_map_share"])
    return frame, details


def _identity_rate(con, context: RunContext, limits: GateLimits) -> tuple[pd.DataFrame, dict]:
    """Share of the as-of day's events resolved to a known customer, against the trailing days'."""
    unresolved = " OR ".join(f"starts_with(customer_id, '{p}')" for p in UNRESOLVED_PREFIXES)
    per_day = dict(con.execute(f"""
        SELECT source_date, 1 - avg(CASE WHEN {unresolved} THEN 1 ELSE 0 END) FROM all_days
        WHERE source_date IS NOT NULL GROUP BY 1""").fetchall())
    today = per_day.get(context.as_of)
    # Only days resolved on their own night compare: a day ingested by this run was resolved
    # with hindsight (its visitors may have logged in since), the as-of day was not.
    trailing = [r for d, r in per_day.items() if d < context.as_of and d not in context.days]
    if today is None or not trailing:
        return pd.DataFrame(columns=["resolution_rate", "floor"]), {}
    mean = sum(trailing) / len(trailing)
    floor = mean - limits.identity_drop
    details = {"resolution_rate": round(today, 4), "trailing_mean": round(mean, 4), "trailing_days": len(trailing),
               "floor": round(floor, 4)}
    return pd.DataFrame([{"resolution_rate": today, "floor": floor}]), details


def _channel_volume(con, context: RunContext, limits: GateLimits) -> tuple[pd.DataFrame, dict]:
    """Each channel's events on the as-of day against its trailing daily median."""
    counts = con.execute("""
        SELECT channel, source_date, count(*) FROM all_days WHERE source_date IS NOT NULL GROUP BY 1, 2""").fetchall()
    per_channel: dict[str, dict[date, int]] = {}
    for channel, day, n in counts:
        per_channel.setdefault(channel, {})[day] = n
    days = sorted({d for by_day in per_channel.values() for d in by_day if d < context.as_of})
    rows, details = [], {}
    for channel, by_day in sorted(per_channel.items()):
        history = sorted(by_day.get(d, 0) for d in days)
        if not history:
            continue
        median = history[len(history) // 2] if len(history) % 2 else (history[len(history) // 2 - 1] +
                                                                      history[len(history) // 2]) / 2
        if median < limits.min_trailing_events:
            continue
        today = by_day.get(context.as_of, 0)
        rows.append({"channel": channel, "events": today, "floor": limits.channel_floor * median})
        details[channel] = {"events": today, "trailing_median": median, "floor": limits.channel_floor * median}
    return pd.DataFrame(rows, columns=["channel", "events", "floor"]), details


def drift_summary(frame_name: str, details: dict, limits: GateLimits) -> str | None:
    """The numbers behind a drift warning, in words (what the runs view and the report show)."""
    if not details:
        return None
    if frame_name == "off_map_share":
        return "; ".join(
            f"{journey}: {d['share']:.1%} of {d['events']:,} events match no touchpoint (threshold "
            f"{limits.off_map_share:.0%}); top unmatched: " + ", ".join(f"{t['type']} {t['events']:,}"
                                                                      for t in d["top_unmatched"])
            for journey, d in details.items() if d["share"] > limits.off_map_share)
    if frame_name == "skipped_files":
        files = details["files"]
        return f"{len(files)} file(s) in the day folders that no source reads: " + "; ".join(files[:10]) + (
            f"; … and {len(files) - 10} more" if len(files) > 10 else "")
    if frame_name == "identity_rate":
        return (f"identity resolution {details['resolution_rate']:.1%} < floor {details['floor']:.1%} "
                f"(trailing mean {details['trailing_mean']:.1%} over {details['trailing_days']} days)")
    if frame_name == "channel_volume":
        return "; ".join(f"{channel}: {d['events']:,} events < {d['floor']:,.0f} ({limits.channel_floor:.0%} of "
                         f"trailing median {d['trailing_median']:,.0f})"
                         for channel, d in details.items() if d["events"] < d["floor"])
    return None


def as_json(value) -> str:
    return json.dumps(value, default=str, sort_keys=True)
