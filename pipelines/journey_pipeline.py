"""The nightly journey pipeline for one as-of date: raw files of the ingest days → canonical
events (with the lookback already in the lake) → identity stitching → per-customer sessions,
journeys, deviations, feedback → stage metrics; written as Parquet to a staging area, then
committed to the lake only if the bad-row share is under the threshold and every raw file's
records balance (records = events + bad rows + duplicates).

Runner-agnostic: DirectRunner by default (Python runner chosen explicitly, no Prism), any
other runner (Flink, Spark, Dataflow, PortableRunner) by pipeline options."""
from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable
from datetime import date, timedelta

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from journey_defs.model import JourneyMap
from journey_defs.outputs import OFF_MAP_COUNTS
from journey_defs.source_spec import SourceSpec, load_sources
from transforms import lake
from transforms.buckets import pack, unpack
from transforms.customer_journeys import BuildJourneys
from transforms.identity import StitchIdentities
from transforms.ingest import ParseSources
from transforms.manifest import build_manifest, rows_per_file
from transforms.parse import ParseLimits, read_identity_table, source_files
from transforms.stage_metrics import STAGE_INPUTS, combine_stage_daily
from transforms.write import WriteParts

DEFAULT_RUNNER_FLAGS = ("--runner=DirectRunner", "--direct_running_mode=in_memory")


class RunFailed(RuntimeError):
    """The run published nothing; the message says why."""


@dataclass(frozen=True)
class RunConfig:
    data_dir: str
    lake: str
    journeys: tuple[JourneyMap, ...]
    as_of: date
    ingest_days: tuple[date, ...] = ()        # default: (as_of,)
    sources_dirs: tuple[str, ...] = ()
    n_buckets: int = 16
    files_per_batch: int = 8
    bad_row_threshold: float = 0.05
    limits: ParseLimits = ParseLimits()
    runner_flags: tuple[str, ...] = DEFAULT_RUNNER_FLAGS

    @property
    def days(self) -> tuple[date, ...]:
        return self.ingest_days or (self.as_of,)

    @property
    def lookback_days(self) -> int:
        """Events this far back are re-read from the lake: every journey still open as of the
        run started within its conversion window; duplicates can arrive this late."""
        window = max(j.conversion_window for j in self.journeys)
        return max(window, self.limits.allowed_lateness).days + 1


@dataclass
class RunReport:
    run_id: str
    as_of: date
    seconds: float
    records: int
    events: int
    bad_rows: int
    duplicates: int
    rows_written: dict[str, int] = field(default_factory=dict)
    gate_seconds: float | None = None

    @property
    def events_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def run(config: RunConfig, progress=print, gate: Callable[[str, str], pa.Table | None] | None = None) -> RunReport:
    """Run the pipeline and commit its output to the lake; raise RunFailed (lake untouched)
    when the input is too broken to publish. `gate(staging, run_id)`, when given, checks the
    staged output before the commit: it raises to stop the run (the lake is left untouched)
    or returns the check rows, committed as the run's `checks` partition."""
    began = time.perf_counter()
    run_id = f"{config.as_of.isoformat()}-{uuid.uuid4().hex[:8]}"
    staging = lake.partition_dir(config.lake, "_staging", config.as_of) + f"-{run_id}"
    specs = load_sources(sorted({s for j in config.journeys for s in j.sources}), config.sources_dirs)
    progress(f"run {run_id}: ingest {config.days[0]}..{config.days[-1]}, as of {config.as_of}, "
             f"journeys {', '.join(j.id for j in config.journeys)}")
    try:
        pipeline = beam.Pipeline(options=PipelineOptions(list(config.runner_flags)))
        _build(pipeline, config, specs, staging, run_id)
        result = pipeline.run()
        result.wait_until_finish()
        manifest = lake.read_partition(staging, "manifest", config.as_of)
        _check(manifest, config)
        written = _rows_written(result)
        if gate is not None:
            began_gate = time.perf_counter()
            checks = gate(staging, run_id)
            gate_seconds = time.perf_counter() - began_gate
            if checks is not None:
                lake.write_table(lake.part_path(staging, "checks", config.as_of, "gate"), checks)
                written["checks"] = checks.num_rows
        lake.commit(staging, config.lake, [(t, d) for t in lake.TABLES for d in _owned_days(t, config)])
    except BaseException:
        lake.discard(staging)
        raise
    totals = {k: int(pc.sum(manifest.column(k)).as_py() or 0) for k in ("records", "events", "bad_rows", "duplicates")}
    report = RunReport(run_id, config.as_of, time.perf_counter() - began, rows_written=written,
                       gate_seconds=gate_seconds if gate is not None else None, **totals)
    progress(f"run {run_id}: {report.records:,} records → {report.events:,} events, {report.bad_rows:,} bad rows, "
             f"{report.duplicates:,} duplicates in {report.seconds:.1f} s ({report.events_per_second:,.0f} records/s)")
    return report


def _rows_written(result) -> dict[str, int]:
    """Rows per table, from the writers' counters (no need to read the files back)."""
    counters = result.metrics().query(MetricsFilter().with_namespace("write"))["counters"]
    return {c.key.metric.name.removesuffix("_rows"): c.committed or c.attempted for c in counters}


def _owned_days(table: str, config: RunConfig) -> tuple[date, ...]:
    """Partitions a run replaces: raw-data tables by ingest day, derived tables by as-of day."""
    return tuple(sorted(set(config.days) | {config.as_of})) if table in ("events", "bad_rows") else (config.as_of,)


def _check(manifest: pa.Table, config: RunConfig) -> None:
    unbalanced = manifest.filter(pc.invert(manifest.column("balanced")))
    if unbalanced.num_rows:
        first = unbalanced.slice(0, 1).to_pylist()[0]
        raise RunFailed(f"row accounting does not balance for {unbalanced.num_rows} file(s), e.g. "
                        f"{first['source_file']}: {first['records']} records != {first['events']} events + "
                        f"{first['bad_rows']} bad rows + {first['duplicates']} duplicates")
    records = pc.sum(manifest.column("records")).as_py() or 0
    bad = pc.sum(manifest.column("bad_rows")).as_py() or 0
    if records and bad / records > config.bad_row_threshold:
        raise RunFailed(f"bad-row share {bad / records:.2%} ({bad:,} of {records:,} records) is above the "
                        f"threshold {config.bad_row_threshold:.2%}; nothing was published")


def _build(p: beam.Pipeline, config: RunConfig, specs: dict[str, SourceSpec], staging: str, run_id: str) -> None:
    parsed = p | "Ingest" >> ParseSources(specs, config.data_dir, list(config.days), config.limits, config.files_per_batch)
    lookback = p | "Lookback" >> _ReadLookback(config)
    crm = p | "ReadCRM" >> beam.Create(_identity_files(specs, config.data_dir)) | "ParseCRM" >> beam.MapTuple(
        lambda name, path: read_identity_table(specs[name], path))
    # Packed: the Flatten below is a materialised boundary on most runners.
    stitched = (
        (parsed.events | "PackEvents" >> beam.Map(pack), lookback) | "WithLookback" >> beam.Flatten()
        | "Stitch" >> StitchIdentities(crm, config.n_buckets)
    )
    built = (stitched.events, crm) | "Journeys" >> BuildJourneys(config.journeys, config.as_of, config.n_buckets)

    new_days = set(config.days)
    new_events = stitched.events | "NewEventsOnly" >> beam.Map(_new_events, new_days)
    write = lambda table, column=None: WriteParts(staging, table, config.as_of, column)  # noqa: E731
    new_events | "NameEventParts" >> beam.Map(lambda t: (_part_name(t), t)) | "WriteEvents" >> beam.ParDo(
        write("events", "source_date"))
    parsed.bad_rows | "NameBadParts" >> beam.Map(lambda t: (_part_name(t), t)) | "WriteBadRows" >> beam.ParDo(
        write("bad_rows", "source_date"))
    for name in ("identities", "sessions", "journeys", "journey_stages", "deviations", "feedback"):
        built[name] | f"Write_{name}" >> beam.ParDo(write(name))
    (built["off_map"] | "OffMapByJourney" >> beam.Map(lambda kv: (_journey_of(kv[0]), kv[1]))
     | "GroupOffMap" >> beam.GroupByKey() | "SumOffMap" >> beam.MapTuple(_sum_off_map)
     | "WriteOffMap" >> beam.ParDo(write("off_map")))
    journeys_by_id = {j.id: j for j in config.journeys}
    stage_inputs = {
        name: built[name] | f"{name}_ByJourney" >> beam.Map(
            lambda kv, columns: (_journey_of(kv[0]), pack(kv[1].select(columns))), STAGE_INPUTS[name].names)
        for name in ("journeys", "journey_stages")
    }
    (stage_inputs | "GroupStageInputs" >> beam.CoGroupByKey()
     | "StageDaily" >> beam.MapTuple(lambda jid, g: (jid, combine_stage_daily(
         [unpack([b]) for b in g["journey_stages"]], [unpack([b]) for b in g["journeys"]],
         journeys_by_id[jid], config.as_of)))
     | "WriteStageDaily" >> beam.ParDo(write("stage_daily")))

    counts = {
        "files": parsed.file_counts | "AllFileCounts" >> beam.combiners.ToList(),
        "duplicates": stitched.duplicates | "AllDuplicates" >> beam.combiners.ToList(),
        "written": new_events | "CountWritten" >> beam.Map(_events_per_file) | "AllWritten" >> beam.combiners.ToList(),
    }
    (p | "ManifestSeed" >> beam.Create([None])
     | "Manifest" >> beam.Map(lambda _, files, dups, written: ("all", build_manifest(
         run_id, config.as_of, files, dups, written)),
         files=beam.pvalue.AsSingleton(counts["files"]), dups=beam.pvalue.AsSingleton(counts["duplicates"]),
         written=beam.pvalue.AsSingleton(counts["written"]))
     | "WriteManifest" >> beam.ParDo(write("manifest")))


class _ReadLookback(beam.PTransform):
    """Events of earlier ingest days already in the lake (one packed table per part file).
    Whole-log (undated) sources are re-read by every run, so their rows are left out."""

    def __init__(self, config: RunConfig):
        super().__init__()
        self.config = config

    def expand(self, pbegin):
        first = min(self.config.days)
        days = [first - timedelta(days=i) for i in range(1, self.config.lookback_days + 1)]
        files = [path for d in days for path in lake.partition_files(self.config.lake, "events", d)]
        return (pbegin | beam.Create(files) | "ReadPart" >> beam.Map(lake.read_table)
                | "DatedOnly" >> beam.Map(lambda t: pack(t.filter(pc.is_valid(t.column("source_date"))))))


def _identity_files(specs: dict[str, SourceSpec], data_dir: str) -> list[tuple[str, str]]:
    return [(name, path) for name, spec in specs.items() if spec.kind == "identity"
            for path, _ in source_files(spec, data_dir)]


def _new_events(table: pa.Table, new_days: set[date]) -> pa.Table:
    """Events read from this run's files (not the lookback): their file's day is an ingest day,
    or they come from a whole-log source."""
    days = table.column("source_date")
    mask = pc.or_(pc.is_null(days), pc.is_in(days, pa.array(sorted(new_days), pa.date32())))
    return table.filter(pc.fill_null(mask, True))


def _part_name(table: pa.Table) -> str:
    """A stable part-file name from the content, so re-running the same input rewrites the
    same files."""
    ids = table.column("event_id") if "event_id" in table.column_names else table.column("source_file")
    first = pc.min(ids).as_py() or ""
    return hashlib.md5(f"{first}|{table.num_rows}".encode()).hexdigest()[:16]


def _events_per_file(table: pa.Table) -> pa.Table:
    counts = rows_per_file(table)
    return pa.table({"source_file": pa.array(list(counts), pa.string()), "n_events": pa.array(list(counts.values()), pa.int64())})


def _journey_of(part: str) -> str:
    """Journey id of a per-bucket part name f"{journey_id}-{bucket}"."""
    return part.rsplit("-", 1)[0]


def _sum_off_map(journey_id: str, parts) -> tuple[str, pa.Table]:
    table = pa.concat_tables([OFF_MAP_COUNTS.empty_table(), *(t.cast(OFF_MAP_COUNTS) for t in parts)])
    summed = table.group_by(["journey_id", "channel", "event_type"]).aggregate([("n_events", "sum")])
    summed = summed.select(["journey_id", "channel", "event_type", "n_events_sum"])
    return journey_id, summed.rename_columns(OFF_MAP_COUNTS.names).sort_by(
        [("n_events", "descending"), ("channel", "ascending"), ("event_type", "ascending")])
