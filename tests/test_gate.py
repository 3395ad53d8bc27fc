"""The quality gate with real Great Expectations checkpoints: a clean run passes and is
published with its checks; staged output that breaks each critical expectation stops the run
(the warehouse file stays byte-for-byte the same, the lake too) with the failed expectation,
its observed value and samples; each drift warning is recorded with the numbers plain SQL
gives."""
from __future__ import annotations

import hashlib
import json
import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dataclasses import replace

from expectations.gate import GateFailed, run_gate
from expectations.run_context import GateLimits
from flows import night
from lake import RunFolder, discard, writer_lock
from lake.files import read_table, write_table
from pipelines.journey_pipeline import RunConfig
from tests.warehouse_sample import DAYS, JOURNEY, LAST
from warehouse.publish import publish

QUIET = lambda _: None  # noqa: E731


def config_for(data, lake_dir, day=LAST) -> RunConfig:
    return RunConfig(data_dir=str(data), lake=str(lake_dir), journeys=(JOURNEY,), as_of=day, n_buckets=4)


def gated_run(config: RunConfig, validation, warehouse, limits=GateLimits(), progress=QUIET):
    """The night's sequence with the gate's own limits: stage, gate, commit, publish."""
    with writer_lock(config.lake):
        staged = night.stage(config, progress)
        checked = night.gate(staged, str(validation), limits, progress)
        night.commit(staged, checked)
        publish(config.lake, warehouse, [config.as_of], config.journeys, progress)
    return staged, checked


@pytest.fixture(scope="module")
def staged(sample, tmp_path_factory):
    """A copy of the sample's lake, and the staged (uncommitted) output of a rerun of the last
    night kept aside as run folder "test-run": what the gate sees inside a run."""
    data, lake_dir = sample
    root = tmp_path_factory.mktemp("gate")
    own_lake = root / "lake"
    shutil.copytree(lake_dir, own_lake)
    with writer_lock(str(own_lake)):
        run = night.stage(config_for(data, own_lake), QUIET)
    kept = RunFolder(str(root / "staged"), "test-run")
    shutil.copytree(run.folder.path, kept.path)
    discard(run.folder)
    return data, own_lake, kept, run


def folder_files(folder: RunFolder, table: str) -> list[str]:
    return folder.files(table, LAST)


def tampered(staged, tmp_path, table: str, change) -> RunFolder:
    """A copy of the staged output (made once per test) with `change(table) -> table` applied
    to one table's partition of the last day."""
    _, _, kept, _ = staged
    folder = RunFolder(str(tmp_path / "staging"), kept.run_id)
    if not Path(folder.path).exists():
        shutil.copytree(kept.path, folder.path)
    files = folder.files(table, LAST)
    original = pa.concat_tables([read_table(f) for f in files])
    scope = Path(files[0]).parent.name.split("=", 1)[1]
    for path in files:
        Path(path).unlink()
    write_table(folder.part_path(table, LAST, scope, "tampered"), change(original))
    return folder


def gate(staged, folder: RunFolder, tmp_path, limits=GateLimits()):
    _, _, _, run = staged
    context = night.gate_context(replace(run, folder=folder))
    return run_gate(context, tmp_path / "validation", limits, progress=QUIET)


def set_column(table: pa.Table, name: str, values) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, pa.field(name, values.type if hasattr(values, "type") else table.schema.field(i).type),
                            values)


def first_row_changed(table: pa.Table, name: str, value) -> pa.Table:
    column = table[name].to_pylist()
    column[0] = value
    field = table.schema.field(name)
    return table.set_column(table.schema.get_field_index(name), field.with_nullable(True),
                            pa.array(column, field.type))


CRITICAL_CASES = {
    "duplicate event id": ("events", lambda t: pa.concat_tables([t, t.slice(0, 2)]),
                           "canonical_events", "expect_column_values_to_be_unique", "event_id_hash"),
    "missing event id": ("events", lambda t: first_row_changed(t, "event_id", None),
                         "canonical_events", "expect_column_values_to_be_in_set", "event_id_missing"),
    "null timestamp": ("events", lambda t: first_row_changed(t, "ts", None),
                       "canonical_events", "expect_column_values_to_not_be_null", "ts"),
    "unknown channel": ("events", lambda t: first_row_changed(t, "channel", "fax"),
                        "canonical_events", "expect_column_values_to_be_in_set", "channel"),
    "timestamp outside the window": ("events", lambda t: set_column(
        t, "ts", pc.add(t["ts"], pa.scalar(timedelta(days=40)))),
        "canonical_events", "expect_column_values_to_be_between", "dated_ts"),
    "unknown event type of a closed vocabulary": ("events", lambda t: set_column(
        t, "event_type", pc.if_else(pc.equal(t["source"], "email"), "teleport", t["event_type"])),
        "canonical_events", "expect_column_values_to_be_in_set", "typed_as"),
    "unbalanced file": ("manifest", lambda t: set_column(t, "records", pc.add(t["records"], 1)),
                        "row_accounting", "expect_column_pair_values_to_be_equal", "records,accounted"),
    "invalid status": ("journeys", lambda t: first_row_changed(t, "status", "vanished"),
                       "journey_statuses", "expect_column_values_to_be_in_set", "status"),
    "negative time in stage": ("journey_stages", lambda t: first_row_changed(t, "time_in_stage_s", -5.0),
                               "time_in_stage", "expect_column_values_to_be_between", "time_in_stage_s"),
    "stage entered before the stage it follows": ("journey_stages", lambda t: set_column(
        t, "entered_at", pc.if_else(pc.greater(t["stage_index"], 0),
                                    pc.subtract(t["entered_at"], pa.scalar(timedelta(days=60))), t["entered_at"])),
        "stage_order", "expect_column_pair_values_a_to_be_greater_than_b", "entered_at,earlier_stage_entered_at"),
    "a stage gains customers along the journey": ("stage_daily", lambda t: set_column(
        t, "reached", pc.if_else(pc.equal(t["stage"], "verify"), 10**6, t["reached"])),
        "funnel", "expect_column_pair_values_a_to_be_greater_than_b", "reached_before,reached"),
    "rate above one": ("stage_daily", lambda t: set_column(
        t, "conversion_rate", pc.if_else(pc.is_valid(t["conversion_rate"]), 1.5, t["conversion_rate"])),
        "stage_rates", "expect_column_values_to_be_between", "conversion_rate"),
    "journeys missing for customers with stages": ("journeys", lambda t: t.slice(1),
                                                   "reconcile", "expect_column_pair_values_to_be_equal",
                                                   "journeys,customers_with_stages"),
}


@pytest.mark.parametrize("case", CRITICAL_CASES)
def test_each_critical_expectation_stops_the_run(staged, tmp_path, case):
    table, change, suite, expectation, columns = CRITICAL_CASES[case]
    with pytest.raises(GateFailed) as failed:
        gate(staged, tampered(staged, tmp_path, table, change), tmp_path)
    rows = failed.value.checks.to_pylist()
    hit = [r for r in rows if (r["suite"], r["expectation"], r["columns"]) == (suite, expectation, columns)]
    assert hit and not hit[0]["success"] and hit[0]["severity"] == "critical", [r for r in rows if not r["success"]]
    assert f"{suite}.{expectation}({columns})" in str(failed.value)
    assert hit[0]["observed"] and (hit[0]["unexpected_count"] or 0) >= 1
    if suite in ("stage_order", "time_in_stage", "journey_statuses"):  # names who, not only values
        assert '"customer_id": "' in str(failed.value) and '"journey_id": "subscription"' in str(failed.value)
    if suite in ("stage_order", "time_in_stage", "funnel"):
        assert '"stage": "' in str(failed.value)
    if case == "duplicate event id":
        first_two = read_table(folder_files(staged[2], "events")[0]).slice(0, 2)["event_id"].to_pylist()
        assert all(event_id in hit[0]["details"] for event_id in first_two)
    record = json.loads((tmp_path / "validation" / "runs" / "test-run.json").read_text())
    assert record["status"] == "failed" and any(f["suite"] == suite for f in record["failed"])


def test_a_clean_run_passes_and_is_published_with_its_checks(sample, tmp_path):
    data, lake_dir = sample
    own_lake = tmp_path / "lake"
    shutil.copytree(lake_dir, own_lake)
    warehouse, validation = tmp_path / "w.duckdb", tmp_path / "validation"
    run, checked = gated_run(config_for(data, own_lake), validation, warehouse)
    failed = [r for r in checked.checks.to_pylist() if not r["success"]]
    assert not [r for r in failed if r["severity"] == "critical"]
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        n, failures = con.execute("SELECT count(*), count(*) FILTER (NOT success) FROM run_checks").fetchall()[0]
        runs = con.execute("SELECT run_id, expectations, warnings, balanced FROM runs").fetchall()
    finally:
        con.close()
    assert n == checked.checks.num_rows >= 20 and failures == len(failed)
    assert runs == [(run.run_id, n, len(failed), True)]
    assert (validation / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").is_file()
    assert json.loads((validation / "runs" / f"{run.run_id}.json").read_text())["status"] == "passed"


def test_a_gate_failure_leaves_the_warehouse_byte_for_byte_and_the_lake_unchanged(sample, tmp_path):
    """Real input that parses but breaks a critical expectation: the sample's 1% bad rows
    against a gate allowing none."""
    data, lake_dir = sample
    own_lake = tmp_path / "lake"
    shutil.copytree(lake_dir, own_lake)
    warehouse = tmp_path / "w.duckdb"
    publish(str(own_lake), warehouse, DAYS, [JOURNEY], progress=QUIET)
    before = hashlib.sha256(warehouse.read_bytes()).hexdigest()
    lake_before = sorted(p.relative_to(own_lake).as_posix() for p in own_lake.rglob("*") if p.name != "_lock")
    state_before = (own_lake / "_state.json").read_bytes()
    with pytest.raises(GateFailed, match=r"run_totals\.expect_column_values_to_be_between\(bad_row_share\)"):
        gated_run(config_for(data, own_lake), tmp_path / "validation", warehouse, GateLimits(bad_row_threshold=0.0))
    assert hashlib.sha256(warehouse.read_bytes()).hexdigest() == before
    assert sorted(p.relative_to(own_lake).as_posix() for p in own_lake.rglob("*") if p.name != "_lock") == lake_before
    assert (own_lake / "_state.json").read_bytes() == state_before
    assert not list(tmp_path.glob("w.duckdb.publishing-*"))


def warnings_of(result) -> dict[str, dict]:
    return {r["suite"]: r for r in result.checks.to_pylist() if not r["success"] and r["severity"] == "warning"}


def test_off_map_share_warning_reports_the_share_and_top_types(staged, tmp_path):
    _, _, kept, _ = staged
    result = gate(staged, kept, tmp_path, GateLimits(off_map_share=0.001))
    warning = warnings_of(result)["drift_off_map"]
    details = json.loads(warning["details"])["subscription"]
    con = duckdb.connect()
    off, events = con.execute(
        "SELECT (SELECT sum(n_events) FROM read_parquet($o)), (SELECT sum(n_events) FROM read_parquet($s))",
        {"o": folder_files(kept, "off_map"), "s": folder_files(kept, "sessions")}).fetchall()[0]
    top = con.execute("SELECT channel || '/' || event_type FROM read_parquet($o) ORDER BY n_events DESC LIMIT 1",
                      {"o": folder_files(kept, "off_map")}).fetchall()[0][0]
    assert (details["off_map_events"], details["events"]) == (off, events)
    assert f"{off / events:.1%} of {events:,} events" in warning["observed"] and top in warning["observed"]
    assert not [r for r in result.checks.to_pylist() if r["severity"] == "critical" and not r["success"]]


def test_identity_resolution_drop_warning_reports_the_rates(staged, tmp_path):
    """Half of the as-of day's events lose their customer (as if the CRM feed broke)."""
    def unresolve(t):
        keep = pa.array([i % 2 == 0 for i in range(t.num_rows)])
        return set_column(t, "customer_id", pc.if_else(
            pc.and_(keep, pc.equal(t["source_date"], LAST)), t["customer_id"],
            pc.if_else(pc.equal(t["source_date"], LAST), pc.binary_join_element_wise("email:", t["event_id"], ""),
                       t["customer_id"])))
    folder = tampered(staged, tmp_path, "events", unresolve)
    result = gate(staged, folder, tmp_path)
    warning = warnings_of(result)["drift_identity"]
    details = json.loads(warning["details"])
    con = duckdb.connect()
    staged_events = folder_files(folder, "events")
    today = con.execute("SELECT avg(CASE WHEN customer_id LIKE 'email:%' OR customer_id LIKE 'anonymous_id:%' "
                        "OR customer_id LIKE 'phone:%' THEN 0 ELSE 1 END) FROM read_parquet($f)",
                        {"f": staged_events}).fetchall()[0][0]
    assert details["resolution_rate"] == round(today, 4) and details["resolution_rate"] < details["floor"]
    assert f"identity resolution {today:.1%}" in warning["observed"]


def test_channel_volume_collapse_warning_names_the_channel(staged, tmp_path):
    """The chat feed delivers almost nothing on the as-of day."""
    def drop_chat(t):
        chat = pc.equal(t["channel"], "chat")
        return t.filter(pc.invert(chat))
    def without_chat_events(manifest):  # the files still balance: their records were never there
        gone = pc.and_(pc.equal(manifest["source"], "chat"), pc.equal(manifest["source_date"], LAST))
        manifest = set_column(manifest, "records", pc.if_else(gone, pc.subtract(manifest["records"],
                                                                                  manifest["events"]),
                                                              manifest["records"]))
        return set_column(manifest, "events", pc.if_else(gone, 0, manifest["events"]))
    tampered(staged, tmp_path, "events", drop_chat)
    staging = tampered(staged, tmp_path, "manifest", without_chat_events)
    limits = GateLimits(min_trailing_events=1)
    result = gate(staged, staging, tmp_path, limits)
    warning = warnings_of(result)["drift_channel_volume"]
    details = json.loads(warning["details"])
    assert details["chat"]["events"] == 0 and details["chat"]["trailing_median"] > 0
    assert "chat: 0 events <" in warning["observed"]


def test_warnings_are_published_with_the_run_and_shown_by_the_report(sample, tmp_path):
    from warehouse.report import render_html, render_text
    from warehouse.report_data import load_report_data

    data, lake_dir = sample
    own_lake = tmp_path / "lake"
    shutil.copytree(lake_dir, own_lake)
    warehouse = tmp_path / "w.duckdb"
    _, checked = gated_run(config_for(data, own_lake), tmp_path / "validation", warehouse,
                           GateLimits(off_map_share=0.001))
    observed = warnings_of(checked)["drift_off_map"]["observed"]
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        assert con.execute("SELECT warnings, warning_details FROM runs").fetchall() == [
            (1, f"drift_off_map off_map_share: {observed}")]
    finally:
        con.close()
    report = load_report_data(warehouse, "subscription", LAST)
    assert report.quality_warnings == (("drift_off_map", observed),)
    assert f"data quality warning: drift_off_map: {observed}" in render_text(report)
    assert "match no touchpoint" in render_html(report)
