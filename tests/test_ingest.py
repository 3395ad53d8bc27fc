"""ParseSources on a real Beam runner: every record of every file comes out as an event or a
bad row, with per-file counts that match reading the files directly."""
from __future__ import annotations

from datetime import date, timedelta

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from generator.generate import GenerateConfig, generate
from journey_defs.source_spec import load_sources
from transforms.ingest import ParseSources, file_batches

CONFIG = GenerateConfig(customers=400, days=4, seed=21, fault_rate=0.05)
RUNNER = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("ingest")
    generate(out, CONFIG, progress=lambda _: None)
    return out


def days(n: int) -> list[date]:
    return [CONFIG.start + timedelta(days=i) for i in range(n)]


def test_file_batches_cover_each_days_files_once(sample):
    specs = load_sources(["web", "email", "crm"])
    batches = file_batches(specs, str(sample), days(3), per_batch=2)
    files = [f for _, batch in batches for f in batch]
    assert len(files) == len(set(files)) == 6  # web + email for 3 days; the CRM is not an events source
    assert all(len(batch) <= 2 for _, batch in batches)
    assert {d for _, d in files} == {d.isoformat() for d in days(3)}


def test_every_record_is_an_event_or_a_bad_row_with_the_truths_reason(sample):
    specs = load_sources(["web", "email", "chat", "phone", "survey"])
    faults = pq.read_table(sample / "ground_truth" / "faults.parquet").to_pylist()
    expected_bad = sorted((f["file"], f["line"], f["reason"]) for f in faults if f["reason"])
    files = [p for s in specs for p in (sample / s).rglob("*.*")]
    records_in_files = sum(len(p.read_bytes().splitlines()) - (p.suffix == ".csv") for p in files)
    with BeamTestPipeline(options=RUNNER) as p:
        parsed = p | ParseSources(specs, str(sample), days(CONFIG.days), files_per_batch=3)
        bad = parsed.bad_rows | "BadKeys" >> beam.FlatMap(
            lambda t: zip(t.column("source_file").to_pylist(), t.column("source_line").to_pylist(),
                          t.column("reason").to_pylist()))
        assert_that(bad, equal_to(expected_bad), label="BadRowsAsInTruth")
        totals = (parsed.file_counts | beam.Map(lambda t: (t.num_rows, sum(t.column("records").to_pylist())))
                  | beam.CombineGlobally(lambda rows: tuple(map(sum, zip(*rows))) if rows else (0, 0)))
        assert_that(totals, equal_to([(len(files), records_in_files)]), label="AllFilesAllRecords")
        events = (parsed.events | beam.Map(lambda t: t.num_rows) | "SumEvents" >> beam.CombineGlobally(sum))
        assert_that(events, equal_to([records_in_files - len(expected_bad)]), label="EventsAreTheRest")


def test_undated_whole_log_is_read_once_whatever_the_days(tmp_path):
    (tmp_path / "helpdesk").mkdir()
    (tmp_path / "helpdesk" / "helpdesk.csv").write_text(
        "concept:name,lifecycle:transition,org:resource,time:timestamp,case:concept:name,case:variant\n"
        "Assign seriousness,complete,Value 1,2012-06-01 09:30:00+02:00,Case1,Variant 1\n"
        "Closed,complete,Value 1,2012-06-02 10:00:00+02:00,Case1,Variant 1\n")
    specs = load_sources(["helpdesk"])
    with BeamTestPipeline(options=RUNNER) as p:
        parsed = p | ParseSources(specs, str(tmp_path), days(3))
        counts = parsed.file_counts | beam.FlatMap(lambda t: t.select(["source_file", "records"]).to_pylist())
        assert_that(counts, equal_to([{"source_file": "helpdesk/helpdesk.csv", "records": 2}]))
