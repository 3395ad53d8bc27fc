"""Identity stitching and exact dedupe: each priority rule on hand-built events, the Beam
join against the in-memory reference (DirectRunner and PortableRunner), and the generator's
ground truth (identity -> customer, duplicates, event count). Also the stable buckets."""
from __future__ import annotations

import pickle
from datetime import date, datetime, timezone

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from generator.generate import GenerateConfig, generate
from journey_defs.canonical import CANONICAL_SCHEMA, IDENTITY_KEYS, IDENTITY_TABLE_SCHEMA
from journey_defs.source_spec import load_sources
from transforms.buckets import bucket_of, pack, split_by_bucket, stable_hash, unpack
from transforms.identity import DUPLICATES_SCHEMA, STATS, StitchIdentities, drop_duplicates, stitch
from transforms.parse import parse_files, read_identity_table, source_files

DIRECT = PipelineOptions(flags=[], runner="DirectRunner", direct_running_mode="in_memory")
PORTABLE = PipelineOptions(flags=[], runner="PortableRunner", job_endpoint="embed", environment_type="LOOPBACK")
DAY = date(2026, 1, 5)


def events(*rows: dict) -> pa.Table:
    """Canonical events from short dicts: id, identity keys, and where the record was read."""
    return pa.Table.from_pylist([{
        "event_id": r["id"], "anonymous_id": r.get("anon"), "user_id": r.get("user"), "email": r.get("email"),
        "phone": r.get("phone"), "channel": "web", "event_type": "page_view",
        "ts": datetime(2026, 1, 5, 9, i, tzinfo=timezone.utc), "source": "web",
        "source_file": r.get("file", "web/2026-01-05/events.jsonl"), "source_line": r.get("line", i + 1),
        "source_date": r.get("day", DAY),
    } for i, r in enumerate(rows)], schema=CANONICAL_SCHEMA)


def crm(*rows: tuple) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(["customer_id", "email", "phone"], r)) for r in rows],
                                schema=IDENTITY_TABLE_SCHEMA)


def customers(table: pa.Table) -> dict[str, str]:
    return dict(zip(table["event_id"].to_pylist(), table["customer_id"].to_pylist()))


def stats_with(**counts: int) -> dict[str, int]:
    return {**dict.fromkeys(STATS, 0), **counts}


CRM = crm(("C1", "ada@example.com", "+15550001"), ("C2", "bo@example.com", "+15550002"))


# --- priority rules -------------------------------------------------------------------
def test_user_id_comes_first_even_when_other_identities_resolve_elsewhere():
    out = stitch(events(
        {"id": "e1", "user": "u9", "anon": "a1", "email": "ada@example.com"},
        {"id": "e2", "anon": "a1", "user": "u1"},
    ), CRM)
    assert customers(out.events) == {"e1": "u9", "e2": "u1"}
    assert out.stats == stats_with(user_id=2, link_conflicts=1)


def test_anonymous_events_before_login_join_the_user_and_a_link_beats_the_crm():
    out = stitch(events(
        {"id": "browse", "anon": "a1"},                               # before login
        {"id": "chat", "anon": "a1", "email": "bo@example.com"},      # the CRM says C2: the link wins
        {"id": "login", "anon": "a1", "user": "u1"},
        {"id": "other", "anon": "a2"},
    ), CRM)
    assert customers(out.events) == {"browse": "u1", "chat": "u1", "login": "u1", "other": "anonymous_id:a2"}
    assert out.stats == stats_with(user_id=1, linked_anonymous=2, unresolved_anonymous_id=1)


def test_an_anonymous_id_with_several_users_takes_the_smallest_by_string_order_and_is_counted():
    out = stitch(events(
        {"id": "x", "anon": "a1"},
        {"id": "l1", "anon": "a1", "user": "u2"},
        {"id": "l2", "anon": "a1", "user": "u10"},
        {"id": "l3", "anon": "a1", "user": "u2"},   # the same pair again is no new conflict
        {"id": "y", "anon": "a2"},
        {"id": "l4", "anon": "a2", "user": "u3"},
    ), CRM)
    assert customers(out.events)["x"] == "u10"  # "u10" < "u2" as strings
    assert customers(out.events)["y"] == "u3"
    assert out.stats["link_conflicts"] == 1


def test_crm_by_email_then_by_phone():
    out = stitch(events(
        {"id": "mail", "email": "ada@example.com"},
        {"id": "call", "phone": "+15550002"},
        {"id": "both", "email": "ada@example.com", "phone": "+15550002"},  # email first
        {"id": "unknown_mail_known_phone", "email": "zed@example.com", "phone": "+15550001"},
        {"id": "anon_with_mail", "anon": "a7", "email": "bo@example.com"},  # never linked: CRM email
    ), CRM)
    assert customers(out.events) == {"mail": "C1", "call": "C2", "both": "C1", "unknown_mail_known_phone": "C1",
                                     "anon_with_mail": "C2"}
    assert out.stats == stats_with(crm_email=3, crm_phone=2)


def test_a_crm_value_of_several_customers_takes_the_smallest_id_and_is_counted():
    table = crm(("C9", "ada@example.com", "+1"), ("C3", "ada@example.com", "+2"), ("C5", None, "+2"))
    out = stitch(events({"id": "m", "email": "ada@example.com"}, {"id": "p", "phone": "+2"}), table)
    assert customers(out.events) == {"m": "C3", "p": "C3"}
    assert (out.stats["crm_email_conflicts"], out.stats["crm_phone_conflicts"]) == (1, 1)


def test_unresolved_identities_stay_their_own_customer_anonymous_then_email_then_phone():
    out = stitch(events(
        {"id": "a", "anon": "a9", "email": "zed@example.com", "phone": "+19"},
        {"id": "e", "email": "zed@example.com", "phone": "+19"},
        {"id": "p", "phone": "+19"},
    ), CRM)
    assert customers(out.events) == {"a": "anonymous_id:a9", "e": "email:zed@example.com", "p": "phone:+19"}
    assert out.stats == stats_with(unresolved_anonymous_id=1, unresolved_email=1, unresolved_phone=1)


def test_an_empty_string_counts_as_absent():
    out = stitch(events(
        {"id": "e1", "user": "", "anon": "a1", "email": ""},
        {"id": "e2", "anon": "a1", "user": "u1"},
        {"id": "e3", "anon": "", "user": "", "email": "ada@example.com"},
    ), CRM)
    assert customers(out.events) == {"e1": "u1", "e2": "u1", "e3": "C1"}


def test_an_event_without_any_identity_is_an_error():
    with pytest.raises(ValueError, match="no identity at all"):
        stitch(events({"id": "ghost"}), CRM)


# --- exact dedupe ---------------------------------------------------------------------
def test_dedupe_keeps_the_earliest_copy_and_counts_the_others_per_file_of_the_dropped_copy():
    table = events(
        {"id": "x", "user": "u", "day": date(2026, 1, 6), "file": "web/2026-01-06/events.jsonl", "line": 1},
        {"id": "y", "user": "u", "day": DAY, "file": "web/b.jsonl", "line": 1},
        {"id": "x", "user": "u", "day": None, "file": "zzz.csv", "line": 9},          # null day first: kept
        {"id": "y", "user": "u", "day": DAY, "file": "web/a.jsonl", "line": 7},       # same day, file a < b: kept
        {"id": "z", "user": "u", "day": DAY, "file": "web/a.jsonl", "line": 5},
        {"id": "z", "user": "u", "day": DAY, "file": "web/a.jsonl", "line": 2},       # same file, line 2 < 5: kept
        {"id": "x", "user": "u", "day": date(2026, 1, 5), "file": "web/2026-01-05/events.jsonl", "line": 3},
        {"id": "solo", "user": "u"},
    )
    kept, duplicates = drop_duplicates(table)
    assert list(zip(kept["event_id"].to_pylist(), kept["source_line"].to_pylist())) == [
        ("x", 9), ("y", 7), ("z", 2), ("solo", 8)]  # input order kept
    assert duplicates.schema == DUPLICATES_SCHEMA
    assert duplicates.to_pylist() == [
        {"source_file": "web/2026-01-05/events.jsonl", "n_duplicates": 1},
        {"source_file": "web/2026-01-06/events.jsonl", "n_duplicates": 1},
        {"source_file": "web/a.jsonl", "n_duplicates": 1},
        {"source_file": "web/b.jsonl", "n_duplicates": 1},
    ]
    assert stitch(table, CRM).stats["duplicates"] == 4
    assert drop_duplicates(events({"id": "only"}))[1].num_rows == 0


# --- stable buckets -------------------------------------------------------------------
def test_stable_hash_is_pinned_and_does_not_depend_on_layout():
    values = pa.array(["", "a", "abcdefgh", "abcdefghi", "customer-42@example.com", "é", None])
    assert stable_hash(values).tolist() == [  # pinned: a change moves every row to another bucket
        6718767978292723091, 10193703042561916984, 11985946289615257854, 14851873610965618701,
        2494714007158857951, 3350997649779859495, 6718767978292723091]  # null hashes as ''
    assert stable_hash(pa.chunked_array([values.slice(0, 2), values.slice(2)])).tolist() == stable_hash(values).tolist()
    assert stable_hash(values.slice(3)).tolist() == stable_hash(values)[3:].tolist()
    assert stable_hash(values.cast(pa.large_string())).tolist() == stable_hash(values).tolist()
    rows = pa.table({"a": ["x", "y"], "b": ["y", "x"]})
    assert stable_hash(rows).tolist() == [2900607441241069202, 15962221126910363639]


def test_buckets_split_into_compact_parts_in_input_order_and_pack_round_trips():
    table = pa.table({"key": [f"k{i % 50}" for i in range(10_000)], "i": np.arange(10_000)})
    buckets = bucket_of(table["key"], 8)
    assert buckets.min() >= 0 and buckets.max() < 8 and len(np.unique(buckets)) == 8
    parts = split_by_bucket(table, buckets)
    assert [b for b, _ in parts] == list(range(8))
    assert sum(p.num_rows for _, p in parts) == table.num_rows
    for b, part in parts:
        assert np.all(np.diff(part["i"].to_numpy()) > 0)
        assert set(bucket_of(part["key"], 8)) == {b}
        assert len(pickle.dumps(part)) < len(pickle.dumps(table)) / 3  # a copy, not a slice of the whole
        assert unpack([pack(part)]).equals(part)
    assert unpack([], table.schema).num_rows == 0 and unpack([]) is None


# --- the Beam join ----------------------------------------------------------------------
MIXED = events(
    {"id": "w1", "anon": "a1"}, {"id": "w2", "anon": "a1", "user": "u2"}, {"id": "w3", "anon": "a1", "user": "u1"},
    {"id": "c1", "anon": "a3", "email": "bo@example.com"}, {"id": "m1", "email": "ada@example.com"},
    {"id": "p1", "phone": "+15550002"}, {"id": "p2", "phone": "+17770000"}, {"id": "m2", "email": "x@y.z"},
    {"id": "a4", "anon": "a4", "phone": "+15550001"}, {"id": "a5", "anon": "a5"},
    {"id": "w1", "anon": "a1", "file": "web/2026-01-06/events.jsonl", "day": date(2026, 1, 6)},
    {"id": "m1", "email": "ada@example.com", "file": "email/x.jsonl", "line": 99},
    {"id": "u7", "user": "u7"}, {"id": "w4", "anon": "a1", "user": "u3"},
)


def run_stitch(pipeline, batches, crm_batches, n_buckets):
    """StitchIdentities over the batches, flattened to rows for assert_that."""
    result = (pipeline | "Events" >> beam.Create(batches)) | StitchIdentities(
        pipeline | "CRM" >> beam.Create(crm_batches), n_buckets)
    rows = result.events | "Rows" >> beam.FlatMap(lambda t: t.to_pylist())
    duplicates = result.duplicates | "Duplicate rows" >> beam.Map(lambda t: t.to_pylist())
    return rows, duplicates, result.stats


def test_the_beam_join_equals_the_in_memory_reference_and_counts_with_metrics():
    crm_batches = [CRM.slice(0, 1), CRM.slice(1), crm(("C0", "bo@example.com", None))]  # bo@: C0 and C2
    expected = stitch(MIXED, pa.concat_tables(crm_batches))
    pipeline = BeamTestPipeline(options=DIRECT)
    batches = [MIXED.slice(0, 5), MIXED.slice(5, 6), MIXED.slice(11)]
    rows, duplicates, stats = run_stitch(pipeline, batches, crm_batches, n_buckets=4)
    assert_that(rows, equal_to(expected.events.to_pylist()), label="events")
    assert_that(duplicates, equal_to([expected.duplicates.to_pylist()]), label="duplicates")
    assert_that(stats, equal_to(list(expected.stats.items())), label="stats")
    result = pipeline.run()
    result.wait_until_finish()
    counters = {m.key.metric.name: m.committed for m in
                result.metrics().query(MetricsFilter().with_namespace("identity"))["counters"]}
    assert counters == {k: v for k, v in expected.stats.items() if v}
    assert expected.stats == stats_with(user_id=4, linked_anonymous=1, crm_email=2, crm_phone=2,
                                        unresolved_anonymous_id=1, unresolved_email=1, unresolved_phone=1,
                                        link_conflicts=1, crm_email_conflicts=1, duplicates=2)
    assert customers(expected.events)["c1"] == "C0"


def test_the_beam_join_runs_on_the_portable_runner():
    expected = stitch(MIXED, CRM)
    with BeamTestPipeline(options=PORTABLE) as pipeline:
        rows, duplicates, stats = run_stitch(pipeline, [MIXED.slice(0, 7), MIXED.slice(7)], [CRM], n_buckets=2)
        assert_that(rows | beam.Map(lambda r: (r["event_id"], r["customer_id"])),
                    equal_to(list(customers(expected.events).items())))
        assert_that(stats, equal_to(list(expected.stats.items())), label="stats")


# --- the generator's ground truth -------------------------------------------------------
@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    generate(out, GenerateConfig(customers=2000, days=10, seed=11, fault_rate=0.02), progress=lambda *_: None)
    return out


def parse_batch(job: tuple[str, list], data_dir: str) -> pa.Table:
    name, files = job
    return parse_files(load_sources([name])[name], files, data_dir=data_dir).events


def test_stitching_the_generated_sample_matches_its_ground_truth(sample):
    specs = load_sources()
    jobs = [(name, [f]) for name, spec in specs.items() if spec.kind == "events" for f in source_files(spec, sample)]
    crm_path = source_files(specs["crm"], sample)[0][0]
    truth = pq.read_table(sample / "ground_truth" / "identities.parquet")
    faults = pq.read_table(sample / "ground_truth" / "faults.parquet")
    n_duplicates = pc.sum(pc.equal(faults["kind"], "duplicate")).as_py()
    n_events = pq.read_metadata(sample / "ground_truth" / "events.parquet").num_rows
    assert n_duplicates > 0 and len(jobs) > 40

    def identities(table):
        for key in IDENTITY_KEYS:
            present = table.filter(pc.is_valid(table[key]))
            yield from zip([key] * present.num_rows, present[key].to_pylist(), present["customer_id"].to_pylist())

    with BeamTestPipeline(options=DIRECT) as p:
        batches = p | "Files" >> beam.Create(jobs) | "Parse" >> beam.Map(parse_batch, str(sample))
        known = p | "CRM file" >> beam.Create([crm_path]) | "Read CRM" >> beam.Map(
            lambda path: read_identity_table(load_sources(["crm"])["crm"], path))
        result = batches | StitchIdentities(known, n_buckets=8)
        assert_that(result.events | "Identities" >> beam.FlatMap(identities) | beam.Distinct(),
                    equal_to(list(zip(*[truth[c].to_pylist() for c in ("identity_key", "value", "customer_key")]))),
                    label="identity map")
        assert_that(result.duplicates | beam.Map(lambda t: pc.sum(t["n_duplicates"]).as_py()),
                    equal_to([n_duplicates]), label="duplicates")
        assert_that(result.events | beam.Map(lambda t: t.num_rows) | beam.CombineGlobally(sum),
                    equal_to([n_events]), label="events")
