"""The whole pipeline, run night by night over a generated sample, against the generator's
ground truth: stage reach, stalled and dropped customers, sessions, identities, row
accounting and late events must be exact."""
from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generator.generate import GenerateConfig, generate
from journey_defs.loader import BUILTIN_JOURNEYS, load_journey
from flows.night import stage_and_commit as run
from pipelines.journey_pipeline import RunConfig, RunFailed
from lake import open_snapshot

CONFIG = GenerateConfig(customers=1500, days=8, seed=5, fault_rate=0.01)
LAST = CONFIG.start + timedelta(days=CONFIG.days - 1)
JOURNEY = load_journey(BUILTIN_JOURNEYS["subscription"])


def nightly(data, lake_dir, day: date, **overrides) -> object:
    config = RunConfig(data_dir=str(data), lake=str(lake_dir), journeys=(JOURNEY,), as_of=day, n_buckets=4, **overrides)
    return run(config, progress=lambda _: None)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The sample, and its lake after one nightly run per day."""
    root = tmp_path_factory.mktemp("e2e")
    data, lake_dir = root / "data", root / "lake"
    generate(data, CONFIG, progress=lambda _: None)
    reports = [nightly(data, lake_dir, CONFIG.start + timedelta(days=d)) for d in range(CONFIG.days)]
    return data, lake_dir, reports


def truth(data, name) -> pa.Table:
    return pq.read_table(data / "ground_truth" / f"{name}.parquet")


def lake_table(lake_dir, table, day=LAST) -> pa.Table:
    return open_snapshot(str(lake_dir)).read(table, [day])


def all_days(lake_dir, table) -> pa.Table:
    days = [CONFIG.start + timedelta(days=d) for d in range(CONFIG.days)]
    return open_snapshot(str(lake_dir)).read(table, days)


def test_row_accounting_balances_and_matches_the_injected_faults(published):
    data, lake_dir, reports = published
    faults = truth(data, "faults").to_pylist()
    manifest = all_days(lake_dir, "manifest")
    assert all(manifest.column("balanced").to_pylist())
    assert sum(r.bad_rows for r in reports) == sum(1 for f in faults if f["reason"])
    assert sum(r.duplicates for r in reports) == sum(1 for f in faults if f["kind"] == "duplicate")
    assert all_days(lake_dir, "events").num_rows == truth(data, "events").num_rows
    bad = all_days(lake_dir, "bad_rows")
    assert Counter(zip(bad["source_file"].to_pylist(), bad["source_line"].to_pylist(), bad["reason"].to_pylist())) \
        == Counter((f["file"], f["line"], f["reason"]) for f in faults if f["reason"])


def test_late_events_are_kept_at_their_true_time(published):
    data, lake_dir, _ = published
    late = {(f["file"], f["line"]) for f in truth(data, "faults").to_pylist() if f["kind"] == "late"}
    events = all_days(lake_dir, "events").select(["source_file", "source_line", "ts", "source_date"]).to_pylist()
    older = {(e["source_file"], e["source_line"]) for e in events if e["ts"].date() < e["source_date"]}
    assert late and late <= older


def test_identities_resolve_as_the_truth_says(published):
    data, lake_dir, _ = published
    identities = lake_table(lake_dir, "identities").to_pylist()
    seen = {(r["identity_key"], r["value"], r["customer_id"]) for r in identities}
    expected = {(r["identity_key"], r["value"], r["customer_key"]) for r in truth(data, "identities").to_pylist()}
    assert seen == expected
    # Every published event carries a customer id; those of the last night carry today's.
    events = all_days(lake_dir, "events")
    assert events["customer_id"].null_count == 0


def test_stage_reach_and_statuses_equal_the_truth(published):
    data, lake_dir, _ = published
    customers = truth(data, "customers")
    stages = lake_table(lake_dir, "journey_stages")
    reached = Counter(stages["stage"].to_pylist())
    assert reached == {s: customers.num_rows - customers[f"entered_{s}"].null_count for s in JOURNEY.stage_ids
                       if customers.num_rows - customers[f"entered_{s}"].null_count}
    journeys = lake_table(lake_dir, "journeys").to_pylist()
    by_status = lambda rows, key: {s: {r[key] for r in rows if r["status"] == s}  # noqa: E731
                                   for s in ("stalled", "dropped", "converted", "in_progress")}
    assert by_status(journeys, "customer_id") == by_status(customers.to_pylist(), "customer_key")
    entries = {(r["customer_id"], r["stage"]): r["entered_at"] for r in stages.to_pylist()}
    expected = {(c["customer_key"], s): c[f"entered_{s}"] for c in customers.to_pylist()
                for s in JOURNEY.stage_ids if c[f"entered_{s}"] is not None}
    assert entries == expected


def test_sessions_and_deviations_equal_the_truth(published):
    data, lake_dir, _ = published
    sessions = lake_table(lake_dir, "sessions")
    assert sessions.num_rows == truth(data, "sessions").num_rows
    assert Counter(sessions["customer_id"].to_pylist()) == Counter(truth(data, "sessions")["customer_key"].to_pylist())
    deviations = lake_table(lake_dir, "deviations").to_pylist()
    expected = truth(data, "deviations").to_pylist()
    assert Counter((d["customer_id"], d["kind"], d["stage"]) for d in deviations) == \
        Counter((d["customer_key"], d["kind"], d["stage"]) for d in expected)


def test_off_map_counts_by_event_type_equal_the_truth(published):
    data, lake_dir, _ = published
    off_map = {(r["event_type"], r["n_events"]) for r in lake_table(lake_dir, "off_map").to_pylist()}
    expected = Counter(d["event_type"] for d in truth(data, "deviations").to_pylist() if d["kind"] == "off_map")
    assert off_map == set(expected.items()) and off_map


def test_rerunning_a_day_gives_identical_tables(published, tmp_path):
    data, lake_dir, _ = published
    before = {t: lake_table(lake_dir, t) for t in ("journeys", "journey_stages", "deviations", "stage_daily")}
    nightly(data, lake_dir, LAST)
    for table, rows in before.items():
        after = lake_table(lake_dir, table)
        key = [(c, "ascending") for c in rows.column_names]
        assert after.sort_by(key).equals(rows.sort_by(key)), table


def test_one_run_over_the_range_equals_the_nightly_runs(published, tmp_path):
    data, lake_dir, _ = published
    days = tuple(CONFIG.start + timedelta(days=d) for d in range(CONFIG.days))
    nightly(data, tmp_path / "range", LAST, ingest_days=days)
    for table in ("journeys", "journey_stages", "deviations", "feedback", "sessions", "identities", "stage_daily"):
        ranged, night = lake_table(tmp_path / "range", table), lake_table(lake_dir, table)
        key = [(c, "ascending") for c in night.column_names]
        assert ranged.sort_by(key).equals(night.sort_by(key)), table
    assert all_days(tmp_path / "range", "events").num_rows == all_days(lake_dir, "events").num_rows


def test_too_many_bad_rows_fails_and_publishes_nothing(published, tmp_path):
    data, _, _ = published
    empty_lake = tmp_path / "lake"
    with pytest.raises(RunFailed, match="bad-row share"):
        nightly(data, empty_lake, CONFIG.start, bad_row_threshold=0.0001)
    assert [p.name for p in empty_lake.rglob("*") if p.is_file()] == ["_lock"]  # no commit record, no run folder
