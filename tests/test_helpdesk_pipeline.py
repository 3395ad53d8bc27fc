"""The real Helpdesk log through the whole pipeline: every record accounted for, and the
command gates and publishes it. Its journeys are checked case by case against plain SQL in
tests/test_real_log_semantics.py."""
from __future__ import annotations

from datetime import date

import duckdb
import pytest

from journey_defs.loader import BUILTIN_JOURNEYS, load_journey
from flows.night import stage_and_commit as run
from pipelines.journey_pipeline import RunConfig

AS_OF = date(2012, 6, 30)  # mid-log: many tickets open, some stalled


@pytest.fixture(scope="module")
def helpdesk_run(helpdesk_csv, real_logs, tmp_path_factory):
    journey = load_journey(BUILTIN_JOURNEYS["helpdesk"])
    lake_dir = tmp_path_factory.mktemp("helpdesk_lake")
    report = run(RunConfig(data_dir=str(real_logs), lake=str(lake_dir), journeys=(journey,),
                           as_of=AS_OF, n_buckets=4), progress=lambda _: None)
    return journey, lake_dir, report


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
