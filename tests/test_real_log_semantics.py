"""The two real logs (Helpdesk CSV, BPIC 2013 incidents XES) through the whole pipeline,
checked case by case against plain SQL over the raw file, written from the README's
*Semantics*: stage reach, the funnel (reached / went on), statuses at the as-of instant (a
whole log's clock is its last event), the stalled set and deviation counts by kind and stage.

The truth reads the raw files on its own (DuckDB's read_csv; ElementTree for the XES), maps
events to stages with hand-written SQL predicates, and applies the ordered rule: a stage is
entered at its first event after the entry of p(k) (the required stage before it) and
before any later stage's entry; events in time, map, source order."""
from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import date

import duckdb
import pyarrow as pa
import pytest

from flows.night import stage_and_commit
from journey_defs.loader import BUILTIN_JOURNEYS, load_journey
from journey_defs.model import JourneyMap
from lake import open_snapshot
from pipelines.journey_pipeline import RunConfig

XES = "{http://www.xes-standard.org/}"


@dataclass(frozen=True)
class RealLog:
    journey: str
    as_of: date
    raw_sql: str       # -> c, ts, line: the raw events, one row each
    stage_sql: str     # CASE over the raw columns -> stage index or NULL
    role_sql: str      # CASE -> 'exit' | 'support' | NULL


HELPDESK = RealLog(
    journey="helpdesk", as_of=date(2012, 6, 30),
    raw_sql="""SELECT "case:concept:name" AS c, "concept:name" AS a, CAST("time:timestamp" AS TIMESTAMPTZ) AS ts,
                      row_number() OVER () AS line FROM read_csv('{path}', all_varchar = true)""",
    stage_sql="""CASE a WHEN 'Insert ticket' THEN 0 WHEN 'Assign seriousness' THEN 1 WHEN 'Take in charge ticket' THEN 2
                        WHEN 'Resolve ticket' THEN 3 WHEN 'Closed' THEN 4 END""",
    role_sql="""CASE WHEN a IN ('INVALID', 'DUPLICATE') THEN 'exit'
                     WHEN a IN ('Wait', 'Require upgrade', 'Create SW anomaly', 'Resolve SW anomaly',
                                'Schedule intervention') THEN 'support' END""")

BPIC2013 = RealLog(
    journey="bpic2013_incidents", as_of=date(2012, 5, 15),
    raw_sql="SELECT c, a, sub, CAST(ts AS TIMESTAMPTZ) AS ts, line FROM xes",
    stage_sql="""CASE WHEN a = 'Queued' AND sub = 'Awaiting Assignment' THEN 0
                      WHEN a = 'Accepted' AND sub IN ('In Progress', 'Assigned') THEN 1
                      WHEN a = 'Completed' AND sub = 'Resolved' THEN 2
                      WHEN a = 'Completed' AND sub IN ('Closed', 'In Call') THEN 3 END""",
    role_sql="""CASE WHEN a = 'Completed' AND sub = 'Cancelled' THEN 'exit'
                     WHEN a = 'Accepted' AND sub LIKE 'Wait%' THEN 'support' END""")


def read_xes(path) -> list[tuple]:
    """(case, activity, lifecycle, timestamp text, line) per event, in file order."""
    rows = []
    with gzip.open(path) as f:
        for trace in ET.parse(f).getroot().iter(XES + "trace"):
            case = next(a.get("value") for a in trace if a.tag == XES + "string" and a.get("key") == "concept:name")
            for event in trace.iter(XES + "event"):
                a = {x.get("key"): x.get("value") for x in event}
                rows.append((case, a["concept:name"], a.get("lifecycle:transition"), a["time:timestamp"], len(rows)))
    return rows


def truth(con: duckdb.DuckDBPyConnection, log: RealLog, journey: JourneyMap) -> None:
    """Tables t_entries (c, k, pos, ts), t_events (every event with its deviation kind),
    t_status (c, status, current) in `con`, over the raw table `raw`."""
    n = len(journey.stages)
    pred, entry = list(journey.predecessors), [journey.stage_ids.index(s) for s in journey.entry_stage_ids]
    cutoff = f"TIMESTAMPTZ '{log.as_of.isoformat()} 00:00:00+00' + INTERVAL 1 DAY"
    con.execute(f"""
        CREATE TABLE ev AS
        SELECT c, ts, line, {log.stage_sql} AS k, {log.role_sql} AS role,
               row_number() OVER (PARTITION BY c ORDER BY ts, coalesce({log.stage_sql}, 99), line) AS pos
        FROM raw WHERE ts < {cutoff}""")
    con.execute(f"CREATE TABLE start AS SELECT c, min(pos) AS pos FROM ev WHERE list_contains({entry}, k) GROUP BY c")
    # candidates, in map order: the first event of k after the start and after p(k)'s candidate
    con.execute("CREATE TABLE cand (c VARCHAR, k INT, pos BIGINT)")
    for k in range(n):
        after = "" if pred[k] < 0 else f"JOIN cand p ON p.c = e.c AND p.k = {pred[k]} AND e.pos > p.pos"
        con.execute(f"""INSERT INTO cand SELECT e.c, {k}, min(e.pos) FROM ev e JOIN start s ON s.c = e.c AND e.pos >= s.pos
                        {after} WHERE e.k = {k} GROUP BY e.c""")
    # from the last stage down: not after a later stage's entry
    con.execute("CREATE TABLE ent (c VARCHAR, k INT, pos BIGINT)")
    for k in reversed(range(n)):
        con.execute(f"""INSERT INTO ent SELECT c, k, pos FROM cand x WHERE k = {k} AND NOT EXISTS (
                        SELECT 1 FROM ent l WHERE l.c = x.c AND l.pos < x.pos)""")
    con.execute("CREATE TABLE t_entries AS SELECT ent.c, ent.k, ent.pos, ev.ts FROM ent JOIN ev USING (c, pos)")
    con.execute(f"""
        CREATE TABLE t_events AS
        WITH e AS (
            SELECT ev.*, s.pos AS start_pos,
                   (SELECT max(k) FROM ent x WHERE x.c = ev.c AND x.pos < ev.pos) AS cur,
                   (SELECT max(k) FROM ent x WHERE x.c = ev.c AND x.pos <= ev.pos) AS cur_at,
                   (SELECT pos FROM ent x WHERE x.c = ev.c AND x.k = ev.k) AS own,
                   (SELECT pos FROM ent x WHERE x.c = ev.c AND x.k = {pred}[ev.k + 1]) AS pred_pos,
            FROM ev JOIN start s USING (c) WHERE ev.pos >= s.pos)
        SELECT *, CASE
            WHEN role = 'support' THEN 'detour'
            WHEN k IS NULL AND role IS NULL THEN 'off_map'
            WHEN k IS NULL OR own = pos THEN NULL
            WHEN k < cur AND own < pos THEN 'backtrack'
            WHEN k < cur THEN 'out_of_order'
            WHEN {pred}[k + 1] >= 0 AND (own IS NULL OR own > pos) AND (pred_pos IS NULL OR pred_pos > pos)
                THEN 'skipped_stage'
            END AS kind
        FROM e""")
    window = journey.conversion_window.total_seconds()
    sla = "[" + ", ".join(str(s.max_time_in_stage.total_seconds()) if s.max_time_in_stage else "NULL"
                          for s in journey.stages) + "]"
    con.execute(f"""
        CREATE TABLE t_status AS
        WITH clock AS (SELECT max(ts) AS t FROM ev),  -- a whole log: its last event that counts
        j AS (
            SELECT s.c, (SELECT ts FROM ev WHERE ev.c = s.c AND ev.pos = s.pos) AS started,
                   (SELECT max(k) FROM ent WHERE ent.c = s.c) AS cur,
                   (SELECT pos FROM ent WHERE ent.c = s.c AND k = {n - 1}) AS final_pos,
                   (SELECT min(pos) FROM ev WHERE ev.c = s.c AND ev.role = 'exit' AND ev.pos >= s.pos) AS exit_pos
            FROM start s),
        jj AS (
            SELECT j.*, (SELECT ts FROM t_entries t WHERE t.c = j.c AND t.k = j.cur) AS cur_ts,
                   (SELECT ts FROM ev WHERE ev.c = j.c AND ev.pos = j.final_pos) AS final_ts
            FROM j)
        SELECT c, cur, CASE
            WHEN final_ts IS NOT NULL AND epoch(final_ts) - epoch(started) <= {window}
                 AND (exit_pos IS NULL OR exit_pos > final_pos) THEN 'converted'
            WHEN exit_pos IS NOT NULL THEN 'dropped'
            WHEN epoch((SELECT t FROM clock)) - epoch(started) > {window} THEN 'dropped'
            WHEN epoch((SELECT t FROM clock)) - epoch(cur_ts) > {sla}[cur + 1] THEN 'stalled'
            ELSE 'in_progress' END AS status
        FROM jj""")


@pytest.fixture(scope="module", params=[HELPDESK, BPIC2013], ids=lambda log: log.journey)
def case(request, real_logs, tmp_path_factory):
    """(log, journey, lake snapshot, truth connection) for one real log."""
    log: RealLog = request.param
    journey = load_journey(BUILTIN_JOURNEYS[log.journey])
    con = duckdb.connect()
    if log is HELPDESK:
        path = request.getfixturevalue("helpdesk_csv")
        con.execute(f"CREATE TABLE raw AS {log.raw_sql.format(path=path)}")
    else:
        path = request.getfixturevalue("bpic2013_xes")
        con.register("xes", pa.Table.from_pylist(
            [dict(zip(("c", "a", "sub", "ts", "line"), r)) for r in read_xes(path)]))
        con.execute(f"CREATE TABLE raw AS {log.raw_sql}")
    truth(con, log, journey)
    lake_dir = tmp_path_factory.mktemp(f"{log.journey}_lake")
    stage_and_commit(RunConfig(data_dir=str(real_logs), lake=str(lake_dir), journeys=(journey,), as_of=log.as_of,
                               n_buckets=4), progress=lambda _: None)
    snapshot = open_snapshot(str(lake_dir))
    for table in ("journeys", "journey_stages", "deviations", "stage_daily"):
        con.register(f"p_{table}", snapshot.read(table, [log.as_of]))
    return log, journey, con


def rows(con, sql: str) -> list[tuple]:
    return sorted(con.execute(sql).fetchall(), key=repr)


def test_every_entry_equals_plain_sql(case):
    _, journey, con = case
    ids = list(journey.stage_ids)
    expected = rows(con, f"SELECT c, {ids}[k + 1], ts FROM t_entries")
    assert rows(con, "SELECT customer_id, stage, entered_at FROM p_journey_stages") == expected
    assert len(expected) > 5000  # real volume


def test_statuses_and_the_stalled_set_equal_plain_sql(case):
    _, journey, con = case
    ids = list(journey.stage_ids)
    expected = rows(con, f"SELECT c, status, {ids}[cur + 1] FROM t_status")
    assert rows(con, "SELECT customer_id, status, current_stage FROM p_journeys") == expected
    assert {s for _, s, _ in expected} >= {"converted", "stalled", "in_progress"}
    clock = con.execute("SELECT max(ts) FROM ev").fetchone()[0]
    assert rows(con, "SELECT DISTINCT as_of_at FROM p_journeys") == [(clock,)]  # the log's last event


def test_funnel_equals_plain_sql(case):
    _, journey, con = case
    ids = list(journey.stage_ids)
    expected = rows(con, f"""
        SELECT {ids}[a.k + 1], count(*),
               CASE WHEN a.k < {len(ids) - 1} THEN count(*) FILTER (WHERE EXISTS (
                   SELECT 1 FROM t_entries b WHERE b.c = a.c AND b.k > a.k AND b.ts >= a.ts)) END
        FROM t_entries a GROUP BY a.k""")
    assert rows(con, "SELECT stage, reached, reached_next FROM p_stage_daily WHERE channel = '*' AND segment = '*'"
                     " AND reached > 0") == expected
    assert all(next_ is None or 0 <= next_ <= n for _, n, next_ in expected)


def test_deviation_counts_by_kind_and_stage_equal_plain_sql(case):
    _, journey, con = case
    ids = list(journey.stage_ids)
    expected = rows(con, f"""
        SELECT kind, CASE WHEN kind IN ('detour', 'off_map') THEN {ids}[cur_at + 1]
                          WHEN kind = 'skipped_stage' THEN NULL ELSE {ids}[k + 1] END, count(*)
        FROM t_events WHERE kind IS NOT NULL GROUP BY ALL""")
    actual = rows(con, """SELECT kind, CASE WHEN kind = 'skipped_stage' THEN NULL ELSE stage END, count(*)
                          FROM p_deviations GROUP BY ALL""")
    assert actual == expected
    assert sum(n for *_, n in expected) > 1000
