"""The nightly journey pipeline for one as-of date: raw files of the ingest days → canonical
events (with the lookback already committed to the lake) → identity stitching → per-customer
sessions, journeys, deviations, feedback → stage metrics; written as Parquet into the run's
own lake folder, and checked: every raw file's records balance (records = events + bad rows
+ duplicates) and the bad-row share is under the threshold. Staging is all it does: the
caller (flows/night.py) gates the staged run, commits it and publishes it.

Runner-agnostic: DirectRunner by default (Python runner chosen explicitly, no Prism), any
other runner (Flink, Spark, Dataflow, PortableRunner) by pipeline options."""
from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from journey_defs.model import JourneyMap
from journey_defs.outputs import OFF_MAP_COUNTS
from journey_defs.source_spec import SourceSpec, load_sources
from lake import RunFolder, Snapshot, collect_garbage, discard, new_run_info, normalize_root, open_snapshot, owned_partitions
from lake import crash
from lake.files import read_table
from lake.tables import TABLES
from transforms.buckets import pack, unpack
from transforms.customer_journeys import BuildJourneys
from transforms.journeys import AsOf
from transforms.identity import StitchIdentities
from transforms.ingest import ParseSources
from transforms.manifest import build_manifest, problems, rows_per_file
from transforms.parse import ParseLimits, read_identity_table, source_files
from transforms.stage_metrics import STAGE_INPUTS, combine_stage_daily
from transforms.write import WriteParts

DEFAULT_RUNNER_FLAGS = ("--runner=DirectRunner", "--direct_running_mode=in_memory")
TYPE_CHECK_FLAGS = ("--pipeline_type_check", "--no_pipeline_type_check")
"""Beam checks the type hints of every transform as the pipeline is built: 0.6 s of the 1.0 s
its construction takes (Helpdesk run, this machine), for hints this pipeline does not use
(its elements are Arrow tables and packed bytes, checked by their schemas). Off unless a
runner flag turns it on."""


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
    as_of_at: datetime | None = None          # an instant within as_of (default: its end)

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
class StagedRun:
    """A run's output, staged in its own lake folder and not yet committed."""

    config: RunConfig
    folder: RunFolder
    based_on: int                 # the commit record version its lookback was read from
    sources: tuple[str, ...]      # the events sources it read
    seconds: float
    records: int
    events: int
    bad_rows: int
    duplicates: int
    rows_written: dict[str, int] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.folder.run_id

    @property
    def events_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def owned(self) -> list[tuple[str, date, str]]:
        """The (table, day, scope) this run replaces when committed."""
        return owned_partitions(self.run_id, self.config.as_of, self.config.days,
                                [j.id for j in self.config.journeys], self.sources)

    def info(self) -> dict:
        return new_run_info(self.run_id, self.config.as_of, self.config.days, [j.id for j in self.config.journeys],
                            self.sources)


def run(config: RunConfig, progress=print) -> StagedRun:
    """Run the pipeline into a new run folder of the lake and check its row accounting;
    raise RunFailed (the folder removed, the lake's committed state untouched) when the
    input is too broken to publish. The caller holds the lake's writer lock."""
    began = time.perf_counter()
    run_id = f"{config.as_of.isoformat()}-{uuid.uuid4().hex[:8]}"
    root = normalize_root(config.lake)
    folder = RunFolder(root, run_id)
    snapshot = open_snapshot(root)
    removed = collect_garbage(root, snapshot.state)  # what killed runs left behind
    if removed:
        progress(f"lake {root}: removed {removed} folder(s) left by runs that did not commit")
    specs = load_sources(sorted({s for j in config.journeys for s in j.sources}), config.sources_dirs)
    sources = tuple(sorted(name for name, spec in specs.items() if spec.kind == "events"))
    progress(f"run {run_id}: ingest {config.days[0]}..{config.days[-1]}, as of {config.as_of}, "
             f"journeys {', '.join(j.id for j in config.journeys)}")
    try:
        flags = list(config.runner_flags)
        if not any(f.split("=")[0] in TYPE_CHECK_FLAGS for f in flags):
            flags.append("--no_pipeline_type_check")
        pipeline = beam.Pipeline(options=PipelineOptions(flags))
        _build(pipeline, config, specs, folder, snapshot, sources)
        result = pipeline.run()
        result.wait_until_finish()
        manifest = _manifest(folder, config.as_of)
        _check(manifest, config)
    except BaseException:
        discard(folder)
        raise
    totals = {k: int(pc.sum(manifest.column(k)).as_py() or 0) for k in ("records", "events", "bad_rows", "duplicates")}
    staged = StagedRun(config, folder, snapshot.state.version, sources, time.perf_counter() - began,
                       rows_written=_rows_written(result), **totals)
    progress(f"run {run_id}: {staged.records:,} records → {staged.events:,} events, {staged.bad_rows:,} bad rows, "
             f"{staged.duplicates:,} duplicates in {staged.seconds:.1f} s ({staged.events_per_second:,.0f} records/s)")
    crash.point("staged", folder.path)
    return staged


def _manifest(folder: RunFolder, as_of: date) -> pa.Table:
    schema = TABLES["manifest"].schema
    parts = [read_table(f) for f in folder.files("manifest", as_of)]
    return pa.concat_tables([schema.empty_table(), *(p.select(schema.names).cast(schema) for p in parts)])


def _rows_written(result) -> dict[str, int]:
    """Rows per table, from the writers' counters (no need to read the files back)."""
    counters = result.metrics().query(MetricsFilter().with_namespace("write"))["counters"]
    return {c.key.metric.name.removesuffix("_rows"): c.committed or c.attempted for c in counters}


def _check(manifest: pa.Table, config: RunConfig) -> None:
    stops = problems(manifest)
    if stops:
        more = f"\n  … and {len(stops) - 20} more" if len(stops) > 20 else ""
        raise RunFailed(f"{len(stops)} raw file(s) not accounted for, nothing was published:\n  "
                        + "\n  ".join(stops[:20]) + more)
    records = pc.sum(manifest.column("records")).as_py() or 0
    bad = pc.sum(manifest.column("bad_rows")).as_py() or 0
    if records and bad / records > config.bad_row_threshold:
        raise RunFailed(f"bad-row share {bad / records:.2%} ({bad:,} of {records:,} records) is above the "
                        f"threshold {config.bad_row_threshold:.2%}; nothing was published")


def _build(p: beam.Pipeline, config: RunConfig, specs: dict[str, SourceSpec], folder: RunFolder,
           snapshot: Snapshot, sources: tuple[str, ...]) -> None:
    parsed = p | "Ingest" >> ParseSources(specs, config.data_dir, list(config.days), config.limits, config.files_per_batch)
    lookback = p | "Lookback" >> _ReadLookback(config, snapshot, sources)
    crm = p | "ReadCRM" >> beam.Create(_identity_files(specs, config.data_dir)) | "ParseCRM" >> beam.MapTuple(
        lambda name, path: read_identity_table(specs[name], path))
    # Packed: the Flatten below is a materialised boundary on most runners.
    stitched = (
        (parsed.events | "PackEvents" >> beam.Map(pack), lookback) | "WithLookback" >> beam.Flatten()
        | "Stitch" >> StitchIdentities(crm, config.n_buckets)
    )
    whole_logs = not any(spec.dated for spec in specs.values() if spec.kind == "events")
    as_of = AsOf.at(config.as_of_at) if config.as_of_at else AsOf.end_of(config.as_of)
    built = (stitched.events, crm) | "Journeys" >> BuildJourneys(
        config.journeys, as_of, config.n_buckets, clock_at_last_event=whole_logs and not config.as_of_at)

    new_days = set(config.days)
    new_events = stitched.events | "NewEventsOnly" >> beam.Map(_new_events, new_days)
    write = lambda table: WriteParts(folder, table, config.as_of)  # noqa: E731
    new_events | "NameEventParts" >> beam.Map(lambda t: (_part_name(t), t)) | "WriteEvents" >> beam.ParDo(
        write("events"))
    parsed.bad_rows | "NameBadParts" >> beam.Map(lambda t: (_part_name(t), t)) | "WriteBadRows" >> beam.ParDo(
        write("bad_rows"))
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
         folder.run_id, config.as_of, files, dups, written)),
         files=beam.pvalue.AsSingleton(counts["files"]), dups=beam.pvalue.AsSingleton(counts["duplicates"]),
         written=beam.pvalue.AsSingleton(counts["written"]))
     | "WriteManifest" >> beam.ParDo(write("manifest")))


class _ReadLookback(beam.PTransform):
    """Committed events of earlier ingest days, of the sources this run reads (one packed
    table per part file). Whole-log (undated) sources are re-read by every run, so their
    rows are left out."""

    def __init__(self, config: RunConfig, snapshot: Snapshot, sources: tuple[str, ...]):
        super().__init__()
        self.config, self.snapshot, self.sources = config, snapshot, sources

    def expand(self, pbegin):
        first = min(self.config.days)
        days = [first - timedelta(days=i) for i in range(1, self.config.lookback_days + 1)]
        files = [path for d in days for path in self.snapshot.files("events", d, self.sources)]
        return (pbegin | beam.Create(files) | "ReadPart" >> beam.Map(read_table)
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
