"""Ingest: raw files of the configured sources → canonical events, bad rows and per-file
record counts. Files are parsed in small batches (one DuckDB query per batch amortises the
query's fixed cost; memory stays bounded by the batch), bytes read through Beam's
FileSystems (transforms.parse.read_files, which decompresses .gz and the like).

Every file of a run's folders is accounted for in `file_counts`: read; failed (not readable
as its spec says, without stopping the batch's other files); or skipped, when it lies in a
dated source's day folder and no source of the run reads it."""
from __future__ import annotations

from datetime import date
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from journey_defs.outputs import FILE_COUNTS
from lake import crash
from journey_defs.source_spec import SourceSpec
from transforms.manifest import rows_per_file
from transforms.parse import (
    ParseLimits, ParseResult, parse_contents, read_files, relative_name, source_files, unmatched_day_files,
)


def file_batches(specs: dict[str, SourceSpec], data_dir: str, days: list[date], per_batch: int):
    """(source, [(path, file_date iso | None)]) batches: each day's files of each events
    source; undated files (whole logs) once."""
    batches = []
    for name, spec in specs.items():
        if spec.kind != "events":
            continue
        files = {}
        for day in days:
            files.update(dict(source_files(spec, data_dir, day)))
        listed = sorted((path, d.isoformat() if d else None) for path, d in files.items())
        batches += [(name, listed[i:i + per_batch]) for i in range(0, len(listed), per_batch)]
    return batches


def skipped_files(specs: dict[str, SourceSpec], data_dir: str, days: list[date], read: set[str]) -> pa.Table:
    """FILE_COUNTS rows (all zeros, status skipped) of the files in the day folders of the
    dated events sources that no source of the run reads (`read`: every path read). A file in
    the day folder of several sources is listed once, under the first, with every pattern."""
    expected: dict[str, tuple[str, date, list[str]]] = {}
    for name, spec in sorted(specs.items()):
        if spec.kind != "events" or not spec.dated:
            continue
        for day in days:
            for path in unmatched_day_files(spec, data_dir, day):
                if path not in read:
                    expected.setdefault(path, (name, day, []))[2].append(spec.path)
    rows = sorted((relative_name(path, data_dir), source, day, patterns)
                  for path, (source, day, patterns) in expected.items())
    return pa.table({
        "source": [source for _, source, _, _ in rows],
        "source_file": [name for name, _, _, _ in rows],
        "source_date": pa.array([day for _, _, day, _ in rows], pa.date32()),
        "records": [0] * len(rows), "parsed_events": [0] * len(rows), "bad_rows": [0] * len(rows),
        "status": ["skipped"] * len(rows),
        "reason": ["matches no source path: expected " + " or ".join(dict.fromkeys(p)) for _, _, _, p in rows],
    }, schema=FILE_COUNTS)


class ParseFileBatch(beam.DoFn):
    """Parse one batch of files of one source; events, bad rows and file counts as outputs.
    A file that cannot be read as its spec says is a failed row of the file counts, never an
    exception: the batch's other files are parsed as usual."""

    def __init__(self, specs: dict[str, SourceSpec], data_dir: str, limits: ParseLimits):
        self.specs, self.data_dir, self.limits = specs, data_dir, limits
        self.records = Metrics.counter("ingest", "records_read")
        self.bad = Metrics.counter("ingest", "bad_rows")
        self.failed = Metrics.counter("ingest", "files_failed")

    def process(self, element):
        source, files = element
        inputs = read_files([(path, date.fromisoformat(day) if day else None) for path, day in files], self.data_dir)
        result = parse_contents(self.specs[source], inputs, self.limits)
        crash.point("parse")
        self.records.inc(result.records_read)
        self.bad.inc(result.bad_rows.num_rows)
        self.failed.inc(len(result.failed))
        if result.events.num_rows:
            yield beam.pvalue.TaggedOutput("events", result.events)
        if result.bad_rows.num_rows:
            yield beam.pvalue.TaggedOutput("bad_rows", result.bad_rows)
        yield beam.pvalue.TaggedOutput("file_counts", _file_counts(source, inputs, result))


def _file_counts(source: str, inputs, result: ParseResult) -> pa.Table:
    good, bad = rows_per_file(result.events), rows_per_file(result.bad_rows)
    names = [name for name, _, _ in inputs]
    failed = result.failed
    return pa.table({
        "source": [source] * len(names),
        "source_file": names,
        "source_date": pa.array([d for _, _, d in inputs], pa.date32()),
        "records": [failed[n].records if n in failed else good.get(n, 0) + bad.get(n, 0) for n in names],
        "parsed_events": [good.get(n, 0) for n in names],
        "bad_rows": [bad.get(n, 0) for n in names],
        "status": ["failed" if n in failed else "read" for n in names],
        "reason": [str(failed[n]) if n in failed else None for n in names],
    }, schema=FILE_COUNTS)


class Ingested(NamedTuple):
    """ParseSources' outputs (Arrow tables): canonical events, bad rows, FILE_COUNTS rows."""

    events: beam.PCollection
    bad_rows: beam.PCollection
    file_counts: beam.PCollection


class ParseSources(beam.PTransform):
    """Raw files of `days` → PCollections `events`, `bad_rows`, `file_counts` (Arrow tables)."""

    def __init__(self, specs: dict[str, SourceSpec], data_dir: str, days: list[date],
                 limits: ParseLimits = ParseLimits(), files_per_batch: int = 8):
        super().__init__()
        self.specs, self.data_dir, self.days, self.limits = specs, data_dir, days, limits
        self.files_per_batch = files_per_batch

    def expand(self, pbegin):
        batches = file_batches(self.specs, self.data_dir, self.days, self.files_per_batch)
        read = {path for _, batch in batches for path, _ in batch} | {
            path for spec in self.specs.values() if spec.kind != "events" for path, _ in source_files(spec, self.data_dir)}
        skipped = skipped_files(self.specs, self.data_dir, self.days, read)
        parsed = (
            pbegin
            | "ListFiles" >> beam.Create(batches)
            | "SpreadBatches" >> beam.Reshuffle()
            | "ParseBatches" >> beam.ParDo(ParseFileBatch(self.specs, self.data_dir, self.limits))
            .with_outputs("events", "bad_rows", "file_counts")
        )
        listed = pbegin | "SkippedFiles" >> beam.Create([skipped] if skipped.num_rows else [])
        counts = (parsed.file_counts, listed) | "FileCounts" >> beam.Flatten()
        return Ingested(parsed.events, parsed.bad_rows, counts)
