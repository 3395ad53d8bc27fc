"""The same pipeline on DirectRunner (in memory and multi-processing) and on the portable
runner (embedded job server, loopback workers: what Flink, Spark and Dataflow need — picklable
DoFns, no shared globals) publishes the same tables."""
from __future__ import annotations

from datetime import timedelta

import pytest

from generator.generate import GenerateConfig, generate
from journey_defs.loader import BUILTIN_JOURNEYS, load_journey
from flows.night import stage_and_commit as run
from pipelines.journey_pipeline import RunConfig
from lake import open_snapshot

SAMPLE = GenerateConfig(customers=150, days=3, seed=9, fault_rate=0.02)
AS_OF = SAMPLE.start + timedelta(days=SAMPLE.days - 1)
RUNNERS = {
    "in_memory": ("--runner=DirectRunner", "--direct_running_mode=in_memory"),
    "multi_processing": ("--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"),
    "portable": ("--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"),
}
COMPARED = ("events", "identities", "journeys", "journey_stages", "deviations", "sessions", "stage_daily", "manifest")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("runners")
    generate(out, SAMPLE, progress=lambda _: None)
    return out


def published(sample, lake_dir, flags) -> dict:
    journey = load_journey(BUILTIN_JOURNEYS["subscription"])
    days = tuple(SAMPLE.start + timedelta(days=d) for d in range(SAMPLE.days))
    run(RunConfig(data_dir=str(sample), lake=str(lake_dir), journeys=(journey,), as_of=AS_OF, ingest_days=days,
                  n_buckets=3, runner_flags=flags), progress=lambda _: None)
    tables = {}
    for table in COMPARED:
        rows = open_snapshot(str(lake_dir)).read(table, [AS_OF])
        if "run_id" in rows.column_names:
            rows = rows.drop_columns(["run_id"])
        tables[table] = rows.sort_by([(c, "ascending") for c in rows.column_names])
    return tables


@pytest.mark.parametrize("runner", ["multi_processing", "portable"])
def test_runner_publishes_what_the_in_memory_runner_does(sample, tmp_path, runner):
    reference = published(sample, tmp_path / "reference", RUNNERS["in_memory"])
    assert reference["journeys"].num_rows == SAMPLE.customers
    other = published(sample, tmp_path / runner, RUNNERS[runner])
    for table in COMPARED:
        assert other[table].equals(reference[table]), table
