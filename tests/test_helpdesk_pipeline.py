"""The real Helpdesk log through the whole pipeline, checked against stage and stall counts
computed independently in plain SQL over the raw CSV (ordered mode written out by hand)."""
from __future__ import annotations

from collections import Counter
from datetime import date

import duckdb
import pytest

from journey_defs.loader import BUILTIN_JOURNEYS, load_journey
from flows.night import stage_and_commit as run
from pipelines.journey_pipeline import RunConfig
from lake import open_snapshot

AS_OF = date(2012, 6, 30)  # mid-log: many tickets open, some stalled


@pytest.fixture(scope="module")
def helpdesk_run(helpdesk_csv, real_logs, tmp_path_factory):
    journey = load_journey(BUILTIN_JOURNEYS["helpdesk"])
    lake_dir = tmp_path_factory.mktemp("helpdesk_lake")
    report = run(RunConfig(data_dir=str(real_logs), lake=str(lake_dir), journeys=(journey,),
                           as_of=AS_OF, n_buckets=4), progress=lambda _: None)
    return journey, lake_dir, report


def plain_sql_truth(csv_path) -> list[tuple]:
    """(case, current stage, status, stages entered...) per ticket, with the journey's rules:
    stages in order, each counted only after the previous required one; insert is optional;
    SLA assign 7 d, take in charge 14 d, resolve 14 d; window 60 d; INVALID/DUPLICATE exit."""
    return duckdb.connect().execute(f"""
        WITH ev AS (
            SELECT "case:concept:name" AS c, "concept:name" AS a, CAST("time:timestamp" AS TIMESTAMPTZ) AS ts
            FROM read_csv('{csv_path}', all_varchar = true)),
        cutoff AS (SELECT TIMESTAMPTZ '{AS_OF.isoformat()} 00:00:00+00' + INTERVAL 1 DAY AS t),
        e AS (SELECT * FROM ev WHERE ts < (SELECT t FROM cutoff)),
        ins AS (SELECT c, min(ts) t FROM e WHERE a = 'Insert ticket' GROUP BY c),
        asg AS (SELECT c, min(ts) t FROM e WHERE a = 'Assign seriousness' GROUP BY c),
        tic AS (SELECT e.c, min(e.ts) t FROM e JOIN asg USING (c) WHERE a = 'Take in charge ticket' AND e.ts >= asg.t GROUP BY e.c),
        res AS (SELECT e.c, min(e.ts) t FROM e JOIN tic USING (c) WHERE a = 'Resolve ticket' AND e.ts >= tic.t GROUP BY e.c),
        clo AS (SELECT e.c, min(e.ts) t FROM e JOIN res USING (c) WHERE a = 'Closed' AND e.ts >= res.t GROUP BY e.c),
        j AS (
            SELECT c, least(ins.t, asg.t) AS started, ins.t AS t_ins, asg.t AS t_asg, tic.t AS t_tic, res.t AS t_res, clo.t AS t_clo
            FROM (SELECT DISTINCT c FROM e) LEFT JOIN ins USING (c) LEFT JOIN asg USING (c) LEFT JOIN tic USING (c)
                 LEFT JOIN res USING (c) LEFT JOIN clo USING (c)
            WHERE ins.t IS NOT NULL OR asg.t IS NOT NULL),
        x AS (SELECT e.c, min(e.ts) t FROM e JOIN j USING (c) WHERE a IN ('INVALID', 'DUPLICATE') AND e.ts >= j.started GROUP BY e.c),
        cur AS (
            SELECT j.*, x.t AS exit_t,
                   CASE WHEN t_clo IS NOT NULL THEN 'closed' WHEN t_res IS NOT NULL THEN 'resolve'
                        WHEN t_tic IS NOT NULL THEN 'take_in_charge' WHEN t_asg IS NOT NULL THEN 'assign' ELSE 'insert' END AS stage,
                   coalesce(t_clo, t_res, t_tic, t_asg, t_ins) AS stage_t
            FROM j LEFT JOIN x USING (c))
        SELECT c, stage,
               CASE WHEN exit_t IS NOT NULL THEN 'dropped'
                    WHEN t_clo IS NOT NULL AND t_clo - started <= INTERVAL 60 DAY THEN 'converted'
                    WHEN (SELECT t FROM cutoff) - started > INTERVAL 60 DAY THEN 'dropped'
                    WHEN stage IN ('insert', 'assign') AND (SELECT t FROM cutoff) - stage_t > INTERVAL 7 DAY THEN 'stalled'
                    WHEN stage IN ('take_in_charge', 'resolve') AND (SELECT t FROM cutoff) - stage_t > INTERVAL 14 DAY THEN 'stalled'
                    ELSE 'in_progress' END AS status,
               t_ins IS NOT NULL, t_asg IS NOT NULL, t_tic IS NOT NULL, t_res IS NOT NULL, t_clo IS NOT NULL
        FROM cur""").fetchall()


def test_stage_counts_match_plain_sql(helpdesk_run, helpdesk_csv):
    journey, lake_dir, report = helpdesk_run
    expected = plain_sql_truth(helpdesk_csv)
    reached = Counter()
    for row in expected:
        for stage, entered in zip(journey.stage_ids, row[3:]):
            reached[stage] += bool(entered)
    stages = open_snapshot(str(lake_dir)).read("journey_stages", [AS_OF])
    assert Counter(stages["stage"].to_pylist()) == +reached
    assert reached["assign"] > 1000  # the comparison is about real volume


def test_stalled_and_status_counts_match_plain_sql(helpdesk_run, helpdesk_csv):
    _, lake_dir, _ = helpdesk_run
    expected = plain_sql_truth(helpdesk_csv)
    journeys = open_snapshot(str(lake_dir)).read("journeys", [AS_OF]).to_pylist()
    assert Counter((j["current_stage"], j["status"]) for j in journeys) == Counter((r[1], r[2]) for r in expected)
    stalled = {j["customer_id"] for j in journeys if j["status"] == "stalled"}
    assert stalled == {r[0] for r in expected if r[2] == "stalled"} and stalled


def test_every_helpdesk_record_is_accounted_for(helpdesk_run):
    _, _, report = helpdesk_run
    assert (report.records, report.events, report.bad_rows, report.duplicates) == (21_348, 21_348, 0, 0)


def test_the_command_runs_gates_and_publishes_the_real_log(helpdesk_csv, real_logs, tmp_path, capsys):
    """`journeys run` end to end on the real log (whole-log file: no time window applies), with
    every output outside the read-only shared folder."""
    from flows.cli import main

    warehouse = tmp_path / "w.duckdb"
    assert main(["run", "--date", AS_OF.isoformat(), "--data", str(real_logs), "--journey", "helpdesk",
                 "--lake", str(tmp_path / "lake"), "--warehouse", str(warehouse),
                 "--validation-dir", str(tmp_path / "validation"), "--buckets", "4"]) == 0
    assert "quality gate:" in capsys.readouterr().out
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        assert con.execute("SELECT records, events, balanced FROM runs").fetchall() == [(21_348, 21_348, True)]
        assert con.execute("SELECT count(*) FROM run_checks WHERE NOT success AND severity = 'critical'"
                           ).fetchall() == [(0,)]
    finally:
        con.close()
    assert (tmp_path / "validation" / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").is_file()
