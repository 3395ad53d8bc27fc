"""Raw source files -> canonical events + bad rows, vectorized (pure functions for Beam DoFns).

Why this module exists: it is the entry point of parsing, composing the pieces that each own
one concern: which files a source has (source_files, here), format readers that turn bytes
into records (raw_records), the query that validates records and extracts events
(validation_sql, run on a sql_session connection), and turning the query's output into
events and bad rows with their raw text (here). `parse_files` parses a batch of one source's
files with one connection and one query, so the fixed cost of a query (connecting, planning
a large statement) is paid once per batch, not once per file; `parse_file` and `parse_bytes`
are a batch of one. Nothing is dropped: `records_read == events + bad_rows`, per call, and a
file that cannot be read as its spec says (FileFailure) is reported, never skipped: the
ingest accounts for it as a failed file, the other entry points raise.

Raw files may be compressed (one suffix Beam's FileSystems knows: COMPRESSION_SUFFIXES);
`read_raw` decompresses them for every reader and `source_files` lists them under the
spec's pattern without the suffix.

The identity (CRM) reader and the normalisation functions live in identity_table; they and
`ParseLimits`/`stable_event_id` are re-exported here, the import path callers use.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
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
from transforms.raw_files import COMPRESSION_SUFFIXES, read_raw
from transforms.raw_records import FILE_COLUMN, FileFailure, Records, read_records
from transforms.sql_session import reused_connection
from transforms.validation_sql import ParseLimits, events_query, stable_event_id

__all__ = [
    "STAGE", "ParseLimits", "ParseResult", "FileFailure", "COMPRESSION_SUFFIXES", "source_files", "unmatched_day_files",
    "relative_name", "read_raw", "read_files", "parse_file", "parse_files", "parse_bytes", "parse_contents", "dedupe",
    "read_identity_table", "normalize_email", "normalize_phone", "stable_event_id",
]

STAGE = "parse"




@dataclass(frozen=True)
class ParseResult:
    """Events and bad rows of one file or batch; `records_read == events + bad_rows`, always.
    `failed`: source_file -> why a file of the batch was not read (its records are in none
    of the counts)."""

    events: pa.Table
    bad_rows: pa.Table
    records_read: int
    failed: dict[str, FileFailure] = field(default_factory=dict)


# --- files ---------------------------------------------------------------------------
def source_files(spec: SourceSpec, data_dir: str | Path, day: date | None = None) -> list[tuple[str, date | None]]:
    """The spec's files under data_dir with their day partition (None for paths without
    {date}, which are returned whatever `day` is), sorted. An events source's file matches
    also with one compression suffix (web/2026-01-05/events.jsonl.gz for web/{date}/*.jsonl).
    Listed through Beam's FileSystems, so data_dir may be local or gs://, s3://... A directory
    that looks like a day but is not a real date fails loudly instead of being skipped."""
    root = _root(data_dir)
    dated = spec.dated
    date_at = re.compile(_glob_regex(spec.path))
    suffixes = _suffixes(spec)
    listed = spec.path.replace("{date}", day.isoformat()) if day and dated else spec.path
    found = []
    for path in _matching_files(f"{root}/{listed}", suffixes):
        match = _match_name(date_at, path[len(root) + 1:], suffixes)
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


def unmatched_day_files(spec: SourceSpec, data_dir: str | Path, day: date) -> list[str]:
    """Files of `day`'s folder of a dated source that its path does not match, sorted: what a
    day delivered that this source leaves unread. The day folder is the pattern's directory
    that holds {date} (day filled in) and the literal directories after it, e.g. web/2026-01-05/
    for web/{date}/*.jsonl, searched recursively; a pattern with {date} only in the file name
    has no day folder (its directory holds every day)."""
    folder = _day_folder(spec.path)
    if folder is None:
        return []
    root = _root(data_dir)
    filled = folder.replace("{date}", day.isoformat())
    inside = re.compile(_glob_regex(filled + "/"))
    read = {path for path, _ in source_files(spec, data_dir, day)}
    return sorted(path for path in _files_under(_literal_dir(f"{root}/{filled}/"))
                  if path not in read and inside.match(path[len(root) + 1:]))


def _day_folder(pattern: str) -> str | None:
    dirs = pattern.split("/")[:-1]
    at = next((i for i, d in enumerate(dirs) if "{date}" in d), None)
    if at is None:
        return None
    end = at + 1
    while end < len(dirs) and not re.search(r"[*?\[]", dirs[end]):
        end += 1
    return "/".join(dirs[:end])


def _root(data_dir: str | Path) -> str:
    return str(data_dir).rstrip("/") or "/"


def _suffixes(spec: SourceSpec) -> tuple[str, ...]:
    """Compression suffixes a spec's files may carry (events and identity sources alike)."""
    return COMPRESSION_SUFFIXES


def _match_name(regex: re.Pattern, name: str, suffixes: tuple[str, ...]) -> re.Match | None:
    """The pattern's match of `name`, or of `name` without one compression suffix."""
    match = regex.fullmatch(name)
    stem = _without_compression(name, suffixes)
    return match if match or stem == name else regex.fullmatch(stem)


def _without_compression(name: str, suffixes: tuple[str, ...]) -> str:
    lower = name.lower()
    return next((name[:-len(s)] for s in suffixes if lower.endswith(s)), name)


def _matching_files(pattern: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """Candidate files for a glob: the path itself (or compressed) when it has no wildcard,
    else every file under its literal directory (the caller filters by its exact regex:
    Beam's own glob reads `**/` differently)."""
    literal = re.match(r"[^*?\[{]*", pattern).group(0)
    if literal == pattern:
        return [p for p in (pattern, *(pattern + s for s in suffixes))
                if FileSystems.exists(p) and not os.path.isdir(p)]
    return _files_under(_literal_dir(pattern))


def _literal_dir(pattern: str) -> str:
    """The directory of a glob up to its first wildcard, with its trailing '/'."""
    literal = re.match(r"[^*?\[{]*", pattern).group(0)
    return literal[:literal.rfind("/") + 1]


def _files_under(base: str) -> list[str]:
    """Every file under the directory `base` (with its trailing '/'): through Beam's
    FileSystems for gs://, s3://...; locally through symbolic links too (_local_files_under)."""
    if "://" not in base:
        return _local_files_under(base)
    return [m.path for m in FileSystems.match([base + "**"])[0].metadata_list]


def _local_files_under(base: str) -> list[str]:
    """Every file under a local directory, named by the path it has there: a symbolic link to
    a file is a file, a link to a directory is walked (Beam's local listing, os.walk, does
    not follow it; a link back to a folder it is in is not walked again), a dangling link is
    listed (reading it fails, naming it: nothing is dropped unseen)."""
    out: list[str] = []

    def walk(folder: str, ancestors: frozenset[str]) -> None:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.is_dir():  # follows links
                real = os.path.realpath(entry.path)
                if real not in ancestors:
                    walk(entry.path, ancestors | {real})
            else:
                out.append(entry.path)

    folder = base.rstrip("/") or "/"
    if os.path.isdir(folder):
        walk(folder, frozenset({os.path.realpath(folder)}))
    return out


def relative_name(path: str | Path, data_dir: str | Path) -> str:
    """`path` relative to data_dir with '/' separators: the `source_file` events record. A
    local path is taken as it was listed, not resolved: a symbolic link (to a file or a day
    folder) keeps the name it has in the data directory."""
    path, root = str(path), str(data_dir)
    if "://" not in root:
        absolute, absolute_root = os.path.abspath(path), os.path.abspath(root)
        if os.path.commonpath([absolute, absolute_root]) == absolute_root:
            return Path(os.path.relpath(absolute, absolute_root)).as_posix()
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    prefix = root.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise ValueError(f"{path} is not under {root}")
    return path[len(prefix):]


def read_files(files: Sequence[tuple[str | Path, date | None]], data_dir: str | Path,
               ) -> list[tuple[str, bytes | FileFailure, date | None]]:
    """(source_file, bytes, file_date) of each (path, file_date); a file that cannot be
    decompressed keeps its place with its FileFailure instead of bytes."""
    out = []
    for path, file_date in files:
        try:
            data = read_raw(path)
        except FileFailure as failure:
            data = failure
        out.append((relative_name(path, data_dir), data, file_date))
    return out


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
    """Parse one file; `source_file` is recorded relative to data_dir. Raises FileFailure
    when the file cannot be read as its spec says."""
    return parse_files(spec, [(path, file_date)], data_dir=data_dir, limits=limits)


def parse_files(
    spec: SourceSpec, files: Sequence[tuple[str | Path, date | None]], *, data_dir: str | Path,
    limits: ParseLimits = ParseLimits(),
) -> ParseResult:
    """Parse a batch of (path, file_date) of one spec with one query: the same rows, in the
    same order, as concatenating `parse_file` of each. Clock checks use each record's own
    file date. Memory grows with the batch: pass a day's files or a few, not a data lake.
    Raises FileFailure naming every file that cannot be read as its spec says."""
    return _strict(_parse(spec, read_files(files, data_dir), limits))


def parse_bytes(
    spec: SourceSpec, data: bytes, *, source_file: str, file_date: date | None,
    limits: ParseLimits = ParseLimits(),
) -> ParseResult:
    """Parse one file's bytes into canonical events and bad rows (nothing dropped); raises
    FileFailure when they cannot be read as the spec says."""
    return _strict(parse_contents(spec, [(source_file, data, file_date)], limits))


def parse_contents(spec: SourceSpec, inputs: Sequence[tuple[str, bytes | FileFailure, date | None]],
                   limits: ParseLimits = ParseLimits()) -> ParseResult:
    """Parse a batch of (source_file, bytes, file_date) already read by the caller (read_files:
    through Beam's filesystems, so gs:// and s3:// inputs work the same). Files that cannot be
    read as the spec says (a FileFailure in place of bytes, or from the reader) are in
    `failed`; the others are parsed as if they were alone."""
    return _parse(spec, inputs, limits)


def _strict(result: ParseResult) -> ParseResult:
    if result.failed:
        raise FileFailure("; ".join(f"{name}: {failure}" for name, failure in result.failed.items()),
                          sum(f.records for f in result.failed.values()))
    return result


def _parse(spec: SourceSpec, inputs: Sequence[tuple[str, bytes | FileFailure, date | None]],
           limits: ParseLimits) -> ParseResult:
    """(source_file, bytes, file_date) of one spec -> one ParseResult. Files whose records
    share a shape (always, except Parquet files with different schemas) share one query."""
    if spec.kind != "events":
        raise ValueError(f"source '{spec.name}' is a {spec.kind} source; use read_identity_table")
    records, failed = [], {}
    for i, (source_file, data, _) in enumerate(inputs):
        if isinstance(data, FileFailure):
            failed[source_file] = data
            continue
        try:
            records.append(read_records(spec, data, i))
        except FileFailure as failure:
            failed[source_file] = failure
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
        failed=failed,
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
