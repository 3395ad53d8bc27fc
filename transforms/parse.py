"""Raw source files -> canonical events + bad rows, vectorized (pure functions for Beam DoFns).

Why this module exists: it is the entry point of parsing, composing the pieces that each own
one concern: which files a source has (source_files, here), format readers that turn bytes
into records (raw_records), the query that validates records and extracts events
(validation_sql, run on a sql_session connection), and turning the query's output into
events and bad rows with their raw text (here). `parse_files` parses a batch of one source's
files with one connection and one query, so the fixed cost of a query (connecting, planning
a large statement) is paid once per batch, not once per file; `parse_file` and `parse_bytes`
are a batch of one. Nothing is dropped: `records_read == events + bad_rows`, per call.

The identity (CRM) reader and the normalisation functions live in identity_table; they and
`ParseLimits`/`stable_event_id` are re-exported here, the import path callers use.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from journey_defs.canonical import BAD_ROW_SCHEMA, CANONICAL_SCHEMA
from journey_defs.source_spec import SourceSpec
from transforms.identity_table import normalize_email, normalize_phone, read_identity_table
from transforms.raw_records import FILE_COLUMN, Records, read_records
from transforms.sql_session import reused_connection
from transforms.validation_sql import ParseLimits, events_query, stable_event_id

__all__ = [
    "STAGE", "ParseLimits", "ParseResult", "source_files", "relative_name", "parse_file", "parse_files", "parse_bytes", "dedupe",
    "read_identity_table", "normalize_email", "normalize_phone", "stable_event_id",
]

STAGE = "parse"


@dataclass(frozen=True)
class ParseResult:
    """Events and bad rows of one file or batch; `records_read == events + bad_rows`, always."""

    events: pa.Table
    bad_rows: pa.Table
    records_read: int


# --- files ---------------------------------------------------------------------------
def source_files(spec: SourceSpec, data_dir: str | Path, day: date | None = None) -> list[tuple[str, date | None]]:
    """The spec's files under data_dir with their day partition (None for paths without
    {date}, which are returned whatever `day` is), sorted. Listed through Beam's
    FileSystems, so data_dir may be local or gs://, s3://... A directory that looks like a
    day but is not a real date fails loudly instead of being skipped."""
    root = str(data_dir).rstrip("/") or "/"
    dated = "{date}" in spec.path
    date_at = re.compile(_glob_regex(spec.path))
    listed = spec.path.replace("{date}", day.isoformat()) if day and dated else spec.path
    found = []
    for path in _matching_files(f"{root}/{listed}"):
        match = date_at.fullmatch(path[len(root) + 1:])
        if match is None:
            continue
        file_date = None
        if dated:
            try:
                file_date = date.fromisoformat(match.group("date"))
            except ValueError:
                raise ValueError(f"{path}: '{match.group('date')}' in the path is not a valid YYYY-MM-DD day") from None
            if day and file_date != day:
                continue  # listed under a wildcard that comes before the date
        found.append((path, file_date))
    return sorted(found)


def _matching_files(pattern: str) -> list[str]:
    """Candidate files for a glob: the path itself when it has no wildcard, else every file
    under its literal directory (the caller filters by its exact regex: Beam's own glob
    reads `**/` differently)."""
    literal = re.match(r"[^*?\[{]*", pattern).group(0)
    if literal == pattern:
        return [pattern] if FileSystems.exists(pattern) and not os.path.isdir(pattern) else []
    base = literal[:literal.rfind("/") + 1]
    return [m.path for m in FileSystems.match([base + "**"])[0].metadata_list]


def relative_name(path: str | Path, data_dir: str | Path) -> str:
    """`path` relative to data_dir with '/' separators: the `source_file` events record."""
    path, root = str(path), str(data_dir)
    if "://" not in root:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    prefix = root.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise ValueError(f"{path} is not under {root}")
    return path[len(prefix):]


def _glob_regex(pattern: str) -> str:
    out = []
    for token in re.split(r"(\{date\}|\*\*/|\*|\?|\[[^\]]*\])", pattern):
        if token == "{date}":
            out.append(r"(?P<date>\d{4}-\d{2}-\d{2})")
        elif token == "**/":
            out.append(r"(?:.*/)?")
        elif token == "*":
            out.append(r"[^/]*")
        elif token == "?":
            out.append(r"[^/]")
        elif token.startswith("["):
            out.append(token)
        else:
            out.append(re.escape(token))
    return "".join(out)


# --- parsing ---------------------------------------------------------------------------
def parse_file(
    spec: SourceSpec, path: str | Path, *, data_dir: str | Path, file_date: date | None,
    limits: ParseLimits = ParseLimits(),
) -> ParseResult:
    """Parse one file; `source_file` is recorded relative to data_dir."""
    return parse_files(spec, [(path, file_date)], data_dir=data_dir, limits=limits)


def parse_files(
    spec: SourceSpec, files: Sequence[tuple[str | Path, date | None]], *, data_dir: str | Path,
    limits: ParseLimits = ParseLimits(),
) -> ParseResult:
    """Parse a batch of (path, file_date) of one spec with one query: the same rows, in the
    same order, as concatenating `parse_file` of each. Clock checks use each record's own
    file date. Memory grows with the batch: pass a day's files or a few, not a data lake."""
    return _parse(spec, [
        (relative_name(path, data_dir), Path(path).read_bytes(), file_date) for path, file_date in files
    ], limits)


def parse_bytes(
    spec: SourceSpec, data: bytes, *, source_file: str, file_date: date | None,
    limits: ParseLimits = ParseLimits(),
) -> ParseResult:
    """Parse one file's bytes into canonical events and bad rows (nothing dropped)."""
    return parse_contents(spec, [(source_file, data, file_date)], limits)


def parse_contents(spec: SourceSpec, inputs: Sequence[tuple[str, bytes, date | None]],
                   limits: ParseLimits = ParseLimits()) -> ParseResult:
    """Parse a batch of (source_file, bytes, file_date) already read by the caller (e.g. via
    Beam's filesystems, so gs:// and s3:// inputs work the same)."""
    return _parse(spec, inputs, limits)


def _parse(spec: SourceSpec, inputs: Sequence[tuple[str, bytes, date | None]], limits: ParseLimits) -> ParseResult:
    """(source_file, bytes, file_date) of one spec -> one ParseResult. Files whose records
    share a shape (always, except Parquet files with different schemas) share one query."""
    if spec.kind != "events":
        raise ValueError(f"source '{spec.name}' is a {spec.kind} source; use read_identity_table")
    records = [read_records(spec, data, i) for i, (_, data, _) in enumerate(inputs)]
    files = [(source_file, file_date) for source_file, _, file_date in inputs]
    events, bad_rows = [], []
    with reused_connection(spec.timestamp.timezone) as con:
        for run in _same_shape_runs(records):
            sql, params = events_query(spec, run[0].relation, files, limits)
            table = pa.concat_tables([r.table for r in run])
            con.register("src", table)
            try:
                out = con.sql(sql, params=params).to_arrow_table()
            finally:
                con.unregister("src")
            good, bad = _split(out, table, run)
            events.append(good)
            bad_rows.append(bad)
    return ParseResult(
        events=pa.concat_tables(events) if events else CANONICAL_SCHEMA.empty_table(),
        bad_rows=pa.concat_tables(bad_rows) if bad_rows else BAD_ROW_SCHEMA.empty_table(),
        records_read=sum(r.table.num_rows for r in records),
    )


def _same_shape_runs(records: list[Records]) -> list[list[Records]]:
    """Consecutive records with the same relation and table schema (one query each)."""
    runs: list[list[Records]] = []
    for r in records:
        if runs and r.relation == runs[-1][0].relation and r.table.schema == runs[-1][0].table.schema:
            runs[-1].append(r)
        else:
            runs.append([r])
    return runs


def _split(out: pa.Table, table: pa.Table, run: list[Records]) -> tuple[pa.Table, pa.Table]:
    """Query output over `table` (the run's records, concatenated) -> (events in
    CANONICAL_SCHEMA, bad rows in BAD_ROW_SCHEMA)."""
    if not (out["source_line"].equals(table[run[0].line_column]) and out[FILE_COLUMN].equals(table[FILE_COLUMN])):
        raise RuntimeError("parse query changed the record order")  # we rely on DuckDB keeping row order
    reason = out["reason"]
    if reason.null_count == out.num_rows:
        good, bad = out, out.slice(0, 0)
    else:
        good, bad = out.filter(pc.is_null(reason)), out.filter(pc.is_valid(reason))
    ts = good["ts"].cast(pa.int64()).cast(CANONICAL_SCHEMA.field("ts").type)
    good = good.set_column(good.schema.get_field_index("ts"), "ts", ts)
    events = good.select(CANONICAL_SCHEMA.names).cast(CANONICAL_SCHEMA)

    # Bad rows' text and reader-level details come from their file's records, by row index.
    positions = np.flatnonzero(reason.is_valid().to_numpy(zero_copy_only=False))
    starts = np.cumsum([0] + [r.table.num_rows for r in run])
    member = np.searchsorted(starts, positions, side="right") - 1
    local = positions - starts[member]
    raw_text: list[str] = []
    for k in np.unique(member):
        raw_text += run[k].raw_text(local[member == k])
    detail = bad["detail"].to_pylist()
    for i, why in enumerate(bad["reason"].to_pylist()):
        explain = run[member[i]].explain
        if detail[i] is None and explain is not None:
            detail[i] = explain(why, int(local[i]))
    bad_rows = pa.table({
        "source": bad["source"],
        "source_file": bad["source_file"],
        "source_line": bad["source_line"],
        "source_date": bad["source_date"],
        "stage": pa.array([STAGE] * bad.num_rows, pa.string()),
        "reason": bad["reason"],
        "detail": pa.array(detail, pa.string()),
        "raw_text": pa.array(raw_text, pa.string()),
    }).cast(BAD_ROW_SCHEMA)
    return events, bad_rows


# --- dedupe ---------------------------------------------------------------------------
def dedupe(events: pa.Table) -> tuple[pa.Table, int]:
    """Keep the first event per event_id (by source_file, source_line); return the number removed.
    Exact because event ids are stable: a re-delivered record has the same id."""
    order = pa.table({
        "event_id": events["event_id"],
        "source_file": events["source_file"],
        "source_line": events["source_line"],
        "_i": pa.array(np.arange(events.num_rows, dtype=np.int64)),
    }).sort_by([("source_file", "ascending"), ("source_line", "ascending"), ("_i", "ascending")])
    first = order.group_by("event_id", use_threads=False).aggregate([("_i", "first")])
    keep = np.sort(first["_i_first"].to_numpy())
    return events.take(pa.array(keep)), events.num_rows - len(keep)
