"""The generator: deterministic, realistic, and its ground truth agrees with the files it wrote
(checked by reading the files back through the source specs, not by trusting the generator)."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generator.generate import GenerateConfig, generate
from generator.simulate import Incident
from journey_defs.loader import BUILTIN_JOURNEYS, load_journey
from journey_defs.source_spec import load_sources
from transforms.parse import dedupe, parse_files, read_identity_table, source_files

CONFIG = GenerateConfig(customers=2500, days=14, seed=11, fault_rate=0.03)
EVENT_SOURCES = ("web", "email", "chat", "phone", "survey")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    generate(out, CONFIG, progress=lambda _: None)
    return out


@pytest.fixture(scope="module")
def parsed(sample):
    """Every raw file read back through the built-in source specs."""
    specs = load_sources(EVENT_SOURCES)
    results = [parse_files(spec, source_files(spec, sample), data_dir=sample) for spec in specs.values()]
    return {
        "events": pa.concat_tables([r.events for r in results]),
        "bad_rows": pa.concat_tables([r.bad_rows for r in results]),
        "records": sum(r.records_read for r in results),
    }


def truth(sample: Path, name: str) -> pa.Table:
    return pq.read_table(sample / "ground_truth" / f"{name}.parquet")


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "summary.json"):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    small = GenerateConfig(customers=5_000, days=10, seed=5)
    for name in ("a", "b"):
        generate(tmp_path / name, small, progress=lambda _: None)
    generate(tmp_path / "c", GenerateConfig(customers=5_000, days=10, seed=6), progress=lambda _: None)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")


def test_layout_one_file_per_source_and_day(sample):
    days = {(CONFIG.start + timedelta(days=d)).isoformat() for d in range(CONFIG.days)}
    for source in ("web", "email", "chat", "phone"):
        assert {p.name for p in (sample / source).iterdir()} == days
    assert (sample / "crm" / "customers.csv").exists()


def test_every_injected_bad_record_is_found_where_the_truth_says(sample, parsed):
    faults = truth(sample, "faults").to_pylist()
    expected = Counter((f["file"], f["line"], f["reason"]) for f in faults if f["reason"])
    bad = parsed["bad_rows"].select(["source_file", "source_line", "reason"]).to_pylist()
    found = Counter((b["source_file"], b["source_line"], b["reason"]) for b in bad)
    assert sum(expected.values()) > 100
    assert found == expected
    assert set(Counter(f["kind"] for f in faults)) == {
        "malformed", "missing_timestamp", "bad_timestamp", "invalid_utf8", "clock_skew",
        "duplicate", "late", "unknown_event_type", "wrong_type"}


def test_row_accounting_and_duplicates_match_truth(sample, parsed):
    faults = truth(sample, "faults")
    unique, duplicates = dedupe(parsed["events"])
    assert duplicates == pc_count(faults, "kind", "duplicate") > 0
    assert unique.num_rows == truth(sample, "events").num_rows
    assert parsed["records"] == parsed["events"].num_rows + parsed["bad_rows"].num_rows
    lines = sum(len(p.read_bytes().splitlines()) - (1 if p.suffix == ".csv" else 0)
                for s in EVENT_SOURCES for p in (sample / s).rglob("*.*"))
    assert parsed["records"] == lines


def pc_count(table: pa.Table, column: str, value: str) -> int:
    return sum(1 for v in table.column(column).to_pylist() if v == value)


def test_late_events_sit_in_a_later_file_than_their_day(sample, parsed):
    late = {(f["file"], f["line"]): f["true_date"] for f in truth(sample, "faults").to_pylist() if f["kind"] == "late"}
    assert late
    events = parsed["events"].to_pylist()
    found = {(e["source_file"], e["source_line"]): e["ts"].date() for e in events
             if e["ts"].date() < e["source_date"]}
    # Late records, plus duplicates re-delivered in the next day's file, are the only ones
    # older than their file; the late ones carry their true day.
    assert {k: v for k, v in found.items() if k in late} == late
    duplicates = {(f["file"], f["line"]) for f in truth(sample, "faults").to_pylist() if f["kind"] == "duplicate"}
    assert set(found) - set(late) <= duplicates


def test_identity_truth_agrees_with_the_files_and_the_crm(sample, parsed):
    """Resolve identities in plain SQL from the raw events and the CRM table, independently of
    the generator: a web anonymous id belongs to the user id it co-occurs with; e-mails and
    phones resolve through the CRM; anything else stays its own unresolved customer."""
    unique, _ = dedupe(parsed["events"])
    crm = read_identity_table(load_sources(["crm"])["crm"], sample / "crm" / "customers.csv")
    con = duckdb.connect()
    con.register("ev", unique)
    con.register("crm", crm)
    con.register("gt", truth(sample, "identities"))
    resolved = con.sql("""
        WITH links AS (SELECT DISTINCT anonymous_id, user_id FROM ev WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL),
        ids AS (
            SELECT 'anonymous_id' AS k, anonymous_id AS v FROM ev WHERE anonymous_id IS NOT NULL
            UNION SELECT 'user_id', user_id FROM ev WHERE user_id IS NOT NULL
            UNION SELECT 'email', email FROM ev WHERE email IS NOT NULL
            UNION SELECT 'phone', phone FROM ev WHERE phone IS NOT NULL)
        SELECT k, v, CASE k
            WHEN 'user_id' THEN v
            WHEN 'anonymous_id' THEN coalesce((SELECT any_value(user_id) FROM links l WHERE l.anonymous_id = v), 'anonymous_id:' || v)
            WHEN 'email' THEN coalesce((SELECT any_value(customer_id) FROM crm WHERE crm.email = v), 'email:' || v)
            ELSE coalesce((SELECT any_value(customer_id) FROM crm WHERE crm.phone = v), 'phone:' || v) END AS customer
        FROM ids""").fetchall()
    expected = set(con.sql("SELECT identity_key, value, customer_key FROM gt").fetchall())
    assert set(resolved) == expected
    # An anonymous id never links to two customers, and every kind of identity occurs unresolved.
    assert con.execute("SELECT count(*) FROM (SELECT anonymous_id FROM ev WHERE user_id IS NOT NULL "
                       "GROUP BY anonymous_id HAVING count(DISTINCT user_id) > 1)").fetchone()[0] == 0
    unresolved = {k for k, _, c in expected if c.startswith(f"{k}:")}
    assert unresolved == {"anonymous_id", "email", "phone"}


def test_stage_entries_are_touchpoint_events_in_the_files(sample, parsed):
    """Every stage entry in the truth is an event in the files that matches that stage's
    touchpoints in the journey map, at exactly the recorded time."""
    journey = load_journey(BUILTIN_JOURNEYS["subscription"])
    unique, _ = dedupe(parsed["events"])
    cols = ["channel", "event_type", "ts", "page", "campaign", "queue", "topic", "disposition"]
    matched = Counter()
    for e in unique.select(cols).to_pylist():
        stage = journey.stage_of(e["channel"], e["event_type"], e)
        if stage:
            matched[(stage, e["ts"])] += 1
    customers = truth(sample, "customers")
    entries = Counter()
    for stage in journey.stage_ids:
        for ts in customers.column(f"entered_{stage}").drop_null().to_pylist():
            entries[(stage, ts)] += 1
    assert entries and not (entries - matched)


def test_statuses_follow_the_journey_rules(sample):
    journey = load_journey(BUILTIN_JOURNEYS["subscription"])
    customers = truth(sample, "customers").to_pylist()
    end = pa.scalar(np.datetime64(CONFIG.start + timedelta(days=CONFIG.days), "us")).as_py()
    for c in customers:
        start = c["entered_discover"].replace(tzinfo=None)
        if c["status"] == "converted":
            assert c["entered_repeat_purchase"] is not None
            assert c["entered_repeat_purchase"].replace(tzinfo=None) - start <= journey.conversion_window
        elif c["status"] == "stalled":
            stage = journey.stage(c["furthest_stage"])
            assert end - c[f"entered_{stage.id}"].replace(tzinfo=None) > stage.max_time_in_stage
        elif c["status"] == "dropped":
            assert c["exit_at"] is not None or end - start > journey.conversion_window
    statuses = Counter(c["status"] for c in customers)
    assert all(statuses[s] > 0 for s in ("converted", "dropped", "stalled", "in_progress"))
    history = truth(sample, "status_history").to_pylist()
    last_day = CONFIG.start + timedelta(days=CONFIG.days - 1)
    assert Counter(h["status"] for h in history if h["valid_to"] == last_day) == statuses
    # Intervals of one customer are contiguous and never overlap.
    by_customer = {}
    for h in history:
        by_customer.setdefault(h["customer_key"], []).append((h["valid_from"], h["valid_to"]))
    for spans in by_customer.values():
        spans.sort()
        assert all(b[0] == a[1] + timedelta(days=1) for a, b in zip(spans, spans[1:]))
        assert spans[-1][1] == last_day


def test_sessions_deviations_and_feedback_are_recorded(sample):
    sessions = truth(sample, "sessions")
    events = truth(sample, "events")
    assert sum(sessions["n_events"].to_pylist()) == events.num_rows
    kinds = Counter(truth(sample, "deviations")["kind"].to_pylist())
    assert set(kinds) == {"skipped_stage", "backtrack", "detour", "off_map"}
    feedback = truth(sample, "feedback")
    assert set(feedback["channel"].to_pylist()) == {"chat", "phone", "survey"}


def test_realism_personas_weekly_seasonality_and_skewed_time_in_stage(sample):
    customers = truth(sample, "customers").to_pylist()
    by_persona = Counter(c["persona"] for c in customers)
    converted = Counter(c["persona"] for c in customers if c["entered_first_purchase"])
    rates = {p: converted[p] / by_persona[p] for p in by_persona}
    assert rates["digital_native"] > rates["bargain_hunter"]
    weekday = Counter(c["entered_discover"].weekday() for c in customers)
    assert min(weekday[d] for d in range(5)) > max(weekday[5], weekday[6])
    hours = [(c["entered_sign_up"] - c["entered_discover"]).total_seconds() / 3600
             for c in customers if c["entered_sign_up"]]
    assert np.mean(hours) > 1.3 * np.median(hours)  # a long tail: some customers stall
    channels = Counter(c["entry_channel_first_purchase"] for c in customers if c["entry_channel_first_purchase"])
    assert channels["web"] > channels["phone"] > 0


def test_incident_raises_that_stages_drop_off_from_its_day(tmp_path):
    base = GenerateConfig(customers=6000, days=20, seed=3, fault_rate=0.0)
    rates = {}
    for name, incident in (("clean", None), ("incident", Incident("verify", 10, 2.0))):
        generate(tmp_path / name, GenerateConfig(**{**vars(base), "incident": incident}), progress=lambda _: None)
        c = truth(tmp_path / name, "customers").to_pylist()
        onset = pa.scalar(np.datetime64(base.start + timedelta(days=10), "us")).as_py()
        # Entrants early enough that the next step (median ~30 h) is visible before the end.
        late = [x for x in c if x["entered_verify"] and onset <= x["entered_verify"].replace(tzinfo=None)
                < onset + timedelta(days=5)]
        rates[name] = sum(1 for x in late if not x["entered_first_purchase"] and not x["entered_onboarding"]) / len(late)
    assert rates["incident"] > rates["clean"] + 0.2


@pytest.mark.parametrize("text, message", [
    ("stage=verify,from=3", "expected stage=X,from=DAY,factor=F"),
    ("stage=nowhere,from=3,factor=2", "incident stage must be one of"),
    ("stage=repeat_purchase,from=3,factor=2", "incident stage must be one of"),
    ("stage=verify,from=3,factor=2,extra=1", "unknown keys"),
])
def test_bad_incident_is_a_clear_error(text, message):
    with pytest.raises(ValueError, match=message):
        Incident.parse(text)


def test_cli_generate_and_summary(tmp_path):
    out = tmp_path / "cli"
    journeys = [sys.executable, "-m", "flows.cli"]
    gen = subprocess.run([*journeys, "generate", "--customers", "400", "--days", "4", "--seed", "2", "--out", str(out)],
                         capture_output=True, text=True, check=True)
    assert "events/s" in gen.stdout and (out / "ground_truth" / "summary.json").exists()
    summary = subprocess.run([*journeys, "summary", "--data", str(out)], capture_output=True, text=True, check=True)
    assert "Discover" in summary.stdout and "bad rows by reason" in summary.stdout
    bad = subprocess.run([*journeys, "generate", "--customers", "10", "--incident", "stage=x", "--out", str(out)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "expected stage=X,from=DAY,factor=F" in bad.stderr
