"""Ingest: raw files of the configured sources → canonical events, bad rows and per-file
record counts. Files are parsed in small batches (one DuckDB query per batch amortises the
query's fixed cost; memory stays bounded by the batch), bytes read through Beam's
FileSystems."""
from __future__ import annotations

from datetime import date

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from journey_defs.outputs import FILE_COUNTS
from journey_defs.source_spec import SourceSpec
from transforms.manifest import rows_per_file
from transforms.parse import ParseLimits, parse_contents, relative_name, source_files

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


class ParseFileBatch(beam.DoFn):
    """Parse one batch of files of one source; events, bad rows and file counts as outputs."""

    def __init__(self, specs: dict[str, SourceSpec], data_dir: str, limits: ParseLimits):
        self.specs, self.data_dir, self.limits = specs, data_dir, limits
        self.records = Metrics.counter("ingest", "records_read")
        self.bad = Metrics.counter("ingest", "bad_rows")

    def process(self, element):
        source, files = element
        inputs = []
        for path, day in files:
            with FileSystems.open(path) as stream:
                data = stream.read()
            relative = relative_name(path, self.data_dir)
            inputs.append((relative, data, date.fromisoformat(day) if day else None))
        result = parse_contents(self.specs[source], inputs, self.limits)
        self.records.inc(result.records_read)
        self.bad.inc(result.bad_rows.num_rows)
        if result.events.num_rows:
            yield beam.pvalue.TaggedOutput("events", result.events)
        if result.bad_rows.num_rows:
            yield beam.pvalue.TaggedOutput("bad_rows", result.bad_rows)
        yield beam.pvalue.TaggedOutput("file_counts", _file_counts(source, inputs, result.events, result.bad_rows))


def _file_counts(source: str, inputs, events: pa.Table, bad_rows: pa.Table) -> pa.Table:
    good, bad = rows_per_file(events), rows_per_file(bad_rows)
    names = [name for name, _, _ in inputs]
    return pa.table({
        "source": [source] * len(names),
        "source_file": names,
        "source_date": pa.array([d for _, _, d in inputs], pa.date32()),
        "records": [good.get(n, 0) + bad.get(n, 0) for n in names],
        "parsed_events": [good.get(n, 0) for n in names],
        "bad_rows": [bad.get(n, 0) for n in names],
    }, schema=FILE_COUNTS)


class ParseSources(beam.PTransform):
    """Raw files of `days` → PCollections `events`, `bad_rows`, `file_counts` (Arrow tables)."""

    def __init__(self, specs: dict[str, SourceSpec], data_dir: str, days: list[date],
                 limits: ParseLimits = ParseLimits(), files_per_batch: int = 8):
        super().__init__()
        self.specs, self.data_dir, self.days, self.limits = specs, data_dir, days, limits
        self.files_per_batch = files_per_batch

    def expand(self, pbegin):
        batches = file_batches(self.specs, self.data_dir, self.days, self.files_per_batch)
        return (
            pbegin
            | "ListFiles" >> beam.Create(batches)
            | "SpreadBatches" >> beam.Reshuffle()
            | "ParseBatches" >> beam.ParDo(ParseFileBatch(self.specs, self.data_dir, self.limits))
            .with_outputs("events", "bad_rows", "file_counts")
        )
