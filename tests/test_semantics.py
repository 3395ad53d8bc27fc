"""Journey semantics against plain SQL (README, "Semantics: how events become journeys").

Each case is a small hand-built log of several customers. For every ordering mode the
pipeline's tables (transforms.journeys.build_journeys, transforms.stage_metrics.stage_daily)
are compared with a truth that DuckDB computes from the same raw events. The truth SQL
follows the README's wording only: it reads the raw events and the map's stages, and never
uses the pipeline's output, its ordering rules or its helpers (not even
JourneyMap.entry_stage_ids or predecessors).

The map is a -> b -> c (optional) -> d -> e; a stage's event is the web event of its name,
the exit is web 'cancel', the support touchpoint chat 'help'. a, b and c stall after 1 day,
d and e have no limit.

Where the README leaves room, the truth reads it so: in strict mode, after the first progress
deviation stage events make neither entries nor further progress deviations ("later entries
do not count"); a stage reached after opening at a later entry stage is out_of_order (the
out_of_order row names that case) even when its p(k) was not entered either.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache

import duckdb
import pyarrow as pa
import pytest

from journey_defs.canonical import CANONICAL_SCHEMA
from journey_defs.model import JourneyMap, Stage, Touchpoint
from transforms.journeys import AsOf, build_journeys
from transforms.match import with_matches
from transforms.stage_metrics import stage_daily

MODES = ("ordered", "strict", "unordered")
STAGES = ("a", "b", "c", "d", "e")
OPTIONAL = {"c"}
LIMITS = {"a": timedelta(days=1), "b": timedelta(days=1), "c": timedelta(days=1)}
WINDOW = timedelta(days=30)
US = 10**6


def journey_map(mode: str, entry: tuple[str, ...] = (), stalls: str = "anyone") -> JourneyMap:
    return JourneyMap(
        id="sem", version="1", sources=("web", "chat"), ordering=mode, stalls=stalls, conversion_window=WINDOW,
        segment_field="segment",
        stages=tuple(Stage(s, s.upper(), (Touchpoint("web", s),), optional=s in OPTIONAL, entry=s in entry,
                           max_time_in_stage=LIMITS.get(s)) for s in STAGES),
        exits=(Touchpoint("web", "cancel"),), support=(Touchpoint("chat", "help"),))


@dataclass(frozen=True)
class Case:
    rows: tuple  # (customer, event_type, "YYYY-MM-DD HH:MM[:SS.ffffff]"[, extra columns]), in file order
    as_of: date | datetime = date(2026, 1, 10)  # a date: its end; a datetime: that instant (AsOf.at)
    entry: tuple[str, ...] = ()  # stages marked entry: true
    stalls: str = "anyone"
    crm: tuple[str, ...] = ()  # customers with a CRM record (the `segments` table)


def day(ts: str, *events: str, **extra) -> list[tuple]:
    """One customer's events, one minute apart from `ts` on: day("c1|2026-01-05 10:00", "a", "b")."""
    customer, start = ts.split("|")
    t0 = datetime.fromisoformat(start)
    return [(customer, e, str(t0 + timedelta(minutes=i)), extra) for i, e in enumerate(events)]


T = "2026-01-05 12:00:00.000001"  # an instant shared by tied events
IDENTIFIED = (*day("anon|2026-01-05 10:00", "a"), *day("user|2026-01-05 10:00", "a", user_id="u1"),
              *day("mail|2026-01-05 10:00", "a"), ("mail", "video", "2026-01-05 11:00", {"email": "m@x.io"}),
              *day("phone|2026-01-05 10:00", "a", phone="+4911"), *day("crm|2026-01-05 10:00", "a"),
              *day("exact|2026-01-10 00:00", "a"), *day("over|2026-01-09 23:59:59.999999", "a"),
              *day("nolimit|2026-01-01 10:00", "a", "b", "d"))
AS_OF_ROWS = (*day("q1|2026-01-05 10:00", "a"), ("q1", "b", "2026-01-05 12:00", {}),       # at the instant: counts
              *day("q2|2026-01-05 10:00", "a"), ("q2", "b", "2026-01-05 12:00:00.000001", {}),  # after it
              *day("q3|2026-01-05 10:00", "a"), ("q3", "cancel", "2026-01-05 12:00", {}),
              *day("q4|2026-01-04 11:59:59.999999", "a"), ("q4", "b", "2026-01-05 13:00", {}),  # 1 d + 1 µs
              *day("q5|2026-01-04 12:00", "a"),                                                  # exactly 1 d
              ("q6", "a", "2026-01-05 12:00:00.000001", {}))                                     # no journey yet
CASES = {
    "ties": Case((
        *day("t1|2026-01-05 10:00", "a"), ("t1", "d", "2026-01-05 11:00", {}), ("t1", "b", "2026-01-05 11:00", {}),
        *[("t2", s, T, {}) for s in "edba"],  # every stage at once, listed backwards
        *day("t3|2026-01-05 10:00", "a"), ("t3", "b", T, {"source_file": "z.jsonl"}),
        ("t3", "d", T, {"source_file": "a.jsonl"}),  # source order would put d first
        *day("t4|2026-01-05 10:00", "a"), ("t4", "video", T, {}), ("t4", "b", T, {}),  # stage events first
        *day("t5|2026-01-05 10:00", "a", "b"), ("t5", "d", T, {}), ("t5", "c", T, {}),  # optional c, then d
        *day("t6|2026-01-05 10:00", "a"), ("t6", "b", T, {}), ("t6", "a", T, {}),  # a repeat, then b: no backtrack
    )),
    "optional_after_next": Case((
        *day("o1|2026-01-05 10:00", "a", "b", "d", "c"), *day("o2|2026-01-05 10:00", "a", "b", "d", "c", "e"),
        *day("o3|2026-01-05 10:00", "a", "b", "d", "c", "d"), *day("o4|2026-01-05 10:00", "a", "b", "c", "d"),
    )),
    "optional_before_predecessor": Case((
        *day("s1|2026-01-05 10:00", "a", "c", "b", "d"), *day("s2|2026-01-05 10:00", "a", "c", "d"),
        *day("s3|2026-01-05 10:00", "a", "c", "c", "b", "e"),
    )),
    "backtracks": Case((
        *day("b1|2026-01-05 10:00", "a", "b", "d", "b"), *day("b2|2026-01-05 10:00", "a", "b", "d", "b", "e"),
        *day("b3|2026-01-05 10:00", "a", "b", "a", "a"), *day("b4|2026-01-05 10:00", "a", "b", "c", "d", "e", "a"),
        *day("b5|2026-01-05 10:00", "a", "b", "help", "video", "b"),
        *day("b6|2026-01-05 10:00", "a", "b", "a", "help", "video", "d"),  # strict: detours at the stopped stage
    )),
    "entry_stage": Case((
        *day("e1|2026-01-05 10:00", "d", "a", "b", "e"), *day("e2|2026-01-05 10:00", "a", "d", "b"),
        *day("e3|2026-01-05 10:00", "c", "b", "d", "e"), *day("e4|2026-01-05 10:00", "b", "c"),
        *day("e5|2026-01-05 10:00", "c", "a", "b"),
    ), entry=("d",)),
    "exits": Case((
        *day("x1|2026-01-05 10:00", "a", "b", "cancel"), *day("x2|2026-01-05 10:00", "a", "b", "d", "e", "cancel"),
        *day("x3|2026-01-04 10:00", "cancel"), *day("x3|2026-01-10 10:00", "a", "b"),
        *day("x4|2026-01-05 10:00", "a", "cancel", "b", "d", "e"),
        *day("x5|2026-01-05 10:00", "a", "d", "cancel"),  # strict: an exit after progress stopped
    )),
    "conversion_window": Case((  # 30 days; the as-of instant is 2026-01-11 00:00
        *day("w1|2025-12-12 00:00", "a"), *day("w2|2025-12-11 23:59:59.999999", "a"),
        *day("w3|2025-12-05 10:00", "a", "b", "d"), ("w3", "e", "2026-01-04 10:00", {}),
        *day("w4|2025-12-05 10:00", "a", "b", "d"), ("w4", "e", "2026-01-04 10:00:00.000001", {}),
    )),
    "stalls_anyone": Case(IDENTIFIED, crm=("crm",)),
    "stalls_identified": Case(IDENTIFIED, stalls="identified", crm=("crm",)),
    "as_of_instant": Case(AS_OF_ROWS, as_of=datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)),
    "as_of_date": Case(AS_OF_ROWS, as_of=date(2026, 1, 5)),
    "funnel": Case((
        *day("f1|2026-01-05 10:00", "a", "b", "c", "d", "e"), *day("f2|2026-01-05 10:00", "a", "b", "d"),
        *day("f3|2026-01-05 10:00", "a", "b"), *day("f4|2026-01-05 10:00", "a"),
        *day("f5|2026-01-05 10:00", "a", "d", "b"), *day("f6|2026-01-05 10:00", "a", "e"),
        *day("f7|2026-01-05 10:00", "a", "b", "d", "c"), *day("f8|2026-01-05 10:00", "a", "c", "b"),
        *day("f9|2026-01-05 10:00", "a", "b", "e", "d"), *day("f10|2026-01-05 10:00", "b", "a", "c", "e"),
    )),
}


def raw_events(case: Case) -> pa.Table:
    rows = []
    for i, (customer, event_type, ts, *extra) in enumerate(case.rows):
        rows.append({"event_id": f"e{i:03d}", "customer_id": customer, "event_type": event_type,
                     "channel": "chat" if event_type == "help" else "web", "source": "test",
                     "ts": datetime.fromisoformat(ts).replace(tzinfo=timezone.utc),
                     "source_file": "log.jsonl", "source_line": i + 1, **(extra[0] if extra else {})})
    return pa.Table.from_pylist(rows, schema=CANONICAL_SCHEMA)


def crm_table(case: Case) -> pa.Table:
    return pa.table({"customer_id": pa.array(case.crm, pa.string()),
                     "segment": pa.array(["crm"] * len(case.crm), pa.string())})


# --- the truth: plain SQL over the raw events, from the README --------------------------------
TRUTH_SQL = [
    # The map. Entry stages: the leading optional stages, the first required stage, every
    # `entry: true`; p(k): the required stage before k (none for an entry stage).
    """CREATE TABLE m AS SELECT s.*, s.entry OR NOT EXISTS (
           SELECT 1 FROM stage_map r WHERE NOT r.optional AND r.k < s.k) AS is_entry FROM stage_map s""",
    """CREATE TABLE mp AS SELECT m.*, CASE WHEN NOT is_entry THEN (
           SELECT max(r.k) FROM m r WHERE NOT r.optional AND r.k < m.k) END AS pred FROM m""",
    # For each set of entered stages (a bit mask): the first required stage not entered.
    """CREATE TABLE masks AS SELECT mask, (SELECT min(k) FROM m WHERE NOT optional AND (mask >> k) & 1 = 0) AS missing
       FROM range(0, 1 << (SELECT count(*) FROM m)) r(mask)""",
    # Events that count (at or before the instant), in order: time, map order (stage events by
    # stage, then the others), source order.
    """CREATE TABLE ev AS SELECT e.customer_id, epoch_us(e.ts) AS us, m.k,
           CASE WHEN m.k IS NOT NULL THEN 'stage' WHEN e.channel = 'web' AND e.event_type = 'cancel' THEN 'exit'
                WHEN e.channel = 'chat' AND e.event_type = 'help' THEN 'support' ELSE 'off_map' END AS role,
           coalesce(e.user_id, e.email, e.phone) IS NOT NULL AS contact,
           row_number() OVER (PARTITION BY e.customer_id
                              ORDER BY e.ts, coalesce(m.k, 1000), e.source_file, e.source_line) AS pos
       FROM events e LEFT JOIN m ON e.channel = 'web' AND e.event_type = m.stage
       WHERE epoch_us(e.ts) < $clock OR ($inclusive AND epoch_us(e.ts) = $clock)""",
    # The journey starts at the first event on an entry stage; rn numbers its events from 1.
    """CREATE TABLE jev AS SELECT ev.*, ev.pos - s.start + 1 AS rn FROM ev JOIN (
           SELECT customer_id, min(pos) AS start FROM ev JOIN m USING (k) WHERE is_entry GROUP BY ALL) s
       USING (customer_id) WHERE ev.pos >= s.start""",
    # Event by event: what a stage event does, given the stages entered so far (mask), the
    # current stage (cur) and, in strict mode, whether progress has stopped.
    """CREATE TABLE walk AS WITH RECURSIVE w AS (
           SELECT DISTINCT customer_id, 0::BIGINT AS rn, 0::BIGINT AS mask, -1::BIGINT AS cur, false AS stopped,
                  NULL::VARCHAR AS act, NULL::BIGINT AS dev_k, NULL::BIGINT AS from_k FROM jev
           UNION ALL
           SELECT customer_id, rn,
                  CASE WHEN act = 'enter' THEN mask | (1::BIGINT << k) ELSE mask END,
                  CASE WHEN act = 'enter' THEN greatest(cur, k) ELSE cur END,
                  stopped OR ($mode = 'strict' AND act IN ('skipped_stage', 'backtrack', 'out_of_order')),
                  act, CASE WHEN act = 'skipped_stage' THEN missing WHEN act <> 'enter' THEN k END,
                  CASE WHEN act <> 'enter' THEN cur END
           FROM (SELECT w.customer_id, e.rn, w.mask, w.cur, w.stopped, e.k, x.missing, CASE
                     WHEN e.k IS NULL THEN NULL
                     WHEN $mode = 'unordered' THEN CASE WHEN (w.mask >> e.k) & 1 = 0 THEN 'enter' END
                     WHEN w.stopped THEN NULL                                    -- strict: progress is over
                     WHEN (w.mask >> e.k) & 1 = 1 THEN CASE WHEN w.cur > e.k THEN 'backtrack' END  -- else a repeat
                     WHEN w.cur > e.k THEN 'out_of_order'                        -- a later stage already entered
                     WHEN p.pred IS NOT NULL AND (w.mask >> p.pred) & 1 = 0 THEN 'skipped_stage'
                     ELSE 'enter' END AS act
                 FROM w JOIN jev e ON e.customer_id = w.customer_id AND e.rn = w.rn + 1
                 LEFT JOIN mp p ON p.k = e.k JOIN masks x ON x.mask = w.mask))
       SELECT w.*, e.k, e.us, e.pos, e.role FROM w JOIN jev e USING (customer_id, rn)""",
    """CREATE TABLE entries AS SELECT customer_id, k, us AS entered_us, pos FROM walk WHERE act = 'enter'""",
]
ENTRIES_SQL = "SELECT customer_id, stage, entered_us FROM entries JOIN m USING (k) ORDER BY ALL"
STAGE_TIMES_SQL = """
    SELECT customer_id, stage, left_us, (coalesce(left_us, $clock) - entered_us) / 1e6 AS time_in_stage_s
    FROM (SELECT s.*,  -- left when a later stage of the map is entered after it (the funnel's "went on")
                 (SELECT min(entered_us) FROM entries h
                  WHERE h.customer_id = s.customer_id AND h.k > s.k AND h.pos > s.pos) AS left_us
          FROM entries s) JOIN m USING (k) ORDER BY ALL"""
DEVIATIONS_SQL = """
    SELECT customer_id, kind, st.stage, fr.stage AS from_stage
    FROM (SELECT customer_id, from_k, CASE WHEN role = 'stage' THEN act ELSE 'detour' END AS kind,
                 CASE WHEN role = 'stage' THEN dev_k ELSE cur END AS k
          FROM walk WHERE act IN ('skipped_stage', 'backtrack', 'out_of_order') OR role = 'support'
          UNION ALL SELECT customer_id, NULL, 'off_map', cur FROM walk WHERE role = 'off_map') d
    LEFT JOIN m st ON st.k = d.k LEFT JOIN m fr ON fr.k = d.from_k ORDER BY ALL"""
STATUSES_SQL = """
    WITH cur AS (SELECT customer_id, max(k) AS k, arg_max(entered_us, k) AS entered_us,
                        max(entered_us) FILTER (k = (SELECT max(k) FROM m)) AS converted_us FROM entries GROUP BY ALL),
         journey AS (SELECT customer_id, min(us) AS start_us, min(us) FILTER (role = 'exit') AS exit_us
                     FROM jev GROUP BY ALL),
         who AS (SELECT customer_id, bool_or(contact) OR customer_id IN (SELECT customer_id FROM crm) AS identified
                 FROM ev GROUP BY customer_id)
    SELECT customer_id, CASE
               WHEN converted_us - start_us <= $window AND (exit_us IS NULL OR converted_us < exit_us) THEN 'converted'
               WHEN exit_us IS NOT NULL OR $clock - start_us > $window THEN 'dropped'
               WHEN $clock - cur.entered_us > m.max_us AND ($stalls = 'anyone' OR identified) THEN 'stalled'
               ELSE 'in_progress' END AS status, m.stage AS current_stage, exit_us, identified, $clock AS as_of_us
    FROM cur JOIN journey USING (customer_id) JOIN who USING (customer_id) JOIN m USING (k) ORDER BY ALL"""
FUNNEL_SQL = """
    WITH went_on AS (SELECT s.k, EXISTS (SELECT 1 FROM entries h WHERE h.customer_id = s.customer_id AND h.k > s.k
                                                                 AND h.entered_us >= s.entered_us) AS on FROM entries s)
    SELECT m.stage, count(w.k) AS reached,
           CASE WHEN m.k < (SELECT max(k) FROM m) THEN count(w.k) FILTER (w.on) END AS reached_next
    FROM m LEFT JOIN went_on w USING (k) GROUP BY m.k, m.stage ORDER BY m.k"""
QUERIES = {"entries": ENTRIES_SQL, "stage_times": STAGE_TIMES_SQL, "deviations": DEVIATIONS_SQL,
           "statuses": STATUSES_SQL, "funnel": FUNNEL_SQL}


def clock_of(as_of: date | datetime) -> tuple[int, bool]:
    """The as-of instant in µs and whether events at it count (a timestamp: yes; a date's end: no)."""
    if isinstance(as_of, datetime):
        return int(as_of.timestamp()) * US + as_of.microsecond, True
    return int(datetime.combine(as_of + timedelta(days=1), time(), timezone.utc).timestamp()) * US, False


def truth(events: pa.Table, mode: str, case: Case) -> dict[str, list[tuple]]:
    stage_map = pa.table({"k": list(range(len(STAGES))), "stage": list(STAGES),
                          "optional": [s in OPTIONAL for s in STAGES], "entry": [s in case.entry for s in STAGES],
                          "max_us": pa.array([LIMITS[s] // timedelta(microseconds=1) if s in LIMITS else None
                                              for s in STAGES], pa.int64())})
    clock, inclusive = clock_of(case.as_of)
    params = {"mode": mode, "clock": clock, "inclusive": inclusive, "stalls": case.stalls,
              "window": WINDOW // timedelta(microseconds=1)}
    with duckdb.connect() as con:
        con.register("events", events)
        con.register("stage_map", stage_map)
        con.register("crm", crm_table(case))
        for sql in TRUTH_SQL:
            con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})
        return {name: con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql}).fetchall()
                for name, sql in QUERIES.items()}


# --- the pipeline, projected onto the same rows -------------------------------------------------
PIPELINE_SQL = {
    "entries": "SELECT customer_id, stage, epoch_us(entered_at) FROM journey_stages ORDER BY ALL",
    "stage_times": "SELECT customer_id, stage, epoch_us(left_at), time_in_stage_s FROM journey_stages ORDER BY ALL",
    "deviations": "SELECT customer_id, kind, stage, from_stage FROM deviations ORDER BY ALL",
    "statuses": "SELECT customer_id, status, current_stage, epoch_us(exit_at), identified, epoch_us(as_of_at) "
                "FROM journeys ORDER BY ALL",
    "funnel": "SELECT stage, reached, reached_next FROM daily WHERE channel = '*' AND segment = '*' "
              "ORDER BY stage_index",
}


@lru_cache(maxsize=None)
def compared(case_name: str, mode: str) -> tuple[dict, dict, pa.Table]:
    """(pipeline rows, truth rows, stage_daily) of a case in a mode."""
    case = CASES[case_name]
    events, journey = raw_events(case), journey_map(mode, case.entry, case.stalls)
    as_of = AsOf.at(case.as_of) if isinstance(case.as_of, datetime) else case.as_of
    out = build_journeys(with_matches(events, journey), journey, as_of, crm_table(case))
    as_of_day = case.as_of.date() if isinstance(case.as_of, datetime) else case.as_of
    daily = stage_daily(out.journey_stages, out.journeys, journey, as_of_day)
    with duckdb.connect() as con:
        for name, table in (("journey_stages", out.journey_stages), ("deviations", out.deviations),
                            ("journeys", out.journeys), ("daily", daily)):
            con.register(name, table)
        got = {name: con.execute(sql).fetchall() for name, sql in PIPELINE_SQL.items()}
    return got, truth(events, mode, case), daily


PARAMS = [pytest.param(c, m, id=f"{c}-{m}") for c in CASES for m in MODES]


@pytest.mark.parametrize("case,mode", PARAMS)
def test_stage_entries(case, mode):
    got, want, _ = compared(case, mode)
    assert got["entries"] == want["entries"]


@pytest.mark.parametrize("case,mode", PARAMS)
def test_left_at_and_time_in_stage(case, mode):
    got, want, _ = compared(case, mode)
    assert got["stage_times"] == want["stage_times"]


@pytest.mark.parametrize("case,mode", PARAMS)
def test_deviations(case, mode):
    got, want, _ = compared(case, mode)
    assert Counter(got["deviations"]) == Counter(want["deviations"])


@pytest.mark.parametrize("case,mode", PARAMS)
def test_statuses_current_stage_exit_and_identified(case, mode):
    got, want, _ = compared(case, mode)
    assert got["statuses"] == want["statuses"]


@pytest.mark.parametrize("case,mode", PARAMS)
def test_funnel_reached_and_reached_next(case, mode):
    got, want, daily = compared(case, mode)
    assert got["funnel"] == want["funnel"]
    for row in daily.to_pylist():
        if row["reached_next"] is not None and row["reached"]:
            assert 0 <= 1 - row["reached_next"] / row["reached"] <= 1
            assert row["conversion_rate"] == pytest.approx(row["reached_next"] / row["reached"])


def test_the_truth_reproduces_the_readmes_own_examples():
    """The oracle itself, on the README's examples (map a -> b -> (c optional) -> d [-> e])."""
    def run(mode, *events):
        want = truth(raw_events(Case(tuple(day("x|2026-01-05 10:00", *events)))), mode, Case(()))
        return [s for _, s, _ in want["entries"]], [(k, s) for _, k, s, _ in want["deviations"]]

    assert run("ordered", "a", "b", "d", "c") == (["a", "b", "d"], [("out_of_order", "c")])
    assert run("ordered", "a", "c", "b", "d") == (["a", "b", "d"], [("skipped_stage", "b")])
    assert run("strict", "a", "b", "d", "c", "e") == (["a", "b", "d"], [("out_of_order", "c")])
    assert run("unordered", "a", "d", "b") == (["a", "b", "d"], [])
