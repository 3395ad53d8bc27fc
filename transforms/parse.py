"""Raw source files -> canonical events + bad rows, vectorized (pure functions for Beam DoFns).

Format readers only turn bytes into *records*: an Arrow table with the physical line of each
record, a pre-check reason for records the reader already knows are broken (invalid UTF-8,
bad JSON, wrong column count, broken XML) and the spec's raw fields as strings. One DuckDB
query then validates and extracts every format the same way, so a rule (timestamp parsing,
reason order, identity normalisation) exists once. JSONL, the hot path, never creates a
Python object per record: lines become an Arrow array straight from the file's bytes.
"""
from __future__ import annotations

import csv
import gc
import hashlib
import io
import json
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Sequence
from xml.parsers import expat

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from journey_defs.canonical import (
    BAD_ROW_SCHEMA,
    CANONICAL_SCHEMA,
    CHANNELS,
    IDENTITY_KEYS,
    IDENTITY_TABLE_SCHEMA,
    TYPED_ATTRIBUTES,
)
from journey_defs.source_spec import SourceSpec, TimestampSpec

log = logging.getLogger(__name__)

STAGE = "parse"
_BOM = b"\xef\xbb\xbf"
_NL_CHUNK = 1 << 22


@dataclass(frozen=True)
class ParseLimits:
    """How far an event's time may lie outside its file's day before it is rejected."""

    max_clock_skew: timedelta = timedelta(hours=1)  # ts after file day end + this -> clock_skew
    allowed_lateness: timedelta = timedelta(days=7)  # ts before file day start - this -> too_late


@dataclass(frozen=True)
class ParseResult:
    """Events and bad rows of one file; `records_read == events + bad_rows`, always."""

    events: pa.Table
    bad_rows: pa.Table
    records_read: int


# --- files ---------------------------------------------------------------------------
def source_files(spec: SourceSpec, data_dir: str | Path, day: date | None = None) -> list[tuple[str, date | None]]:
    """The spec's files under data_dir with their day partition (None for paths without
    {date}, which are returned whatever `day` is), sorted. A directory that looks like a
    day but is not a real date fails loudly instead of being skipped."""
    root = Path(data_dir)
    dated = "{date}" in spec.path
    stamp = day.isoformat() if day else "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
    date_at = re.compile(_glob_regex(spec.path))
    found = []
    for path in root.glob(spec.path.replace("{date}", stamp)):
        if not path.is_file():
            continue
        file_date = None
        if dated:
            text = date_at.fullmatch(path.relative_to(root).as_posix()).group("date")
            try:
                file_date = date.fromisoformat(text)
            except ValueError:
                raise ValueError(f"{path}: '{text}' in the path is not a valid YYYY-MM-DD day") from None
        found.append((str(path), file_date))
    return sorted(found)


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


def parse_file(
    spec: SourceSpec, path: str | Path, *, data_dir: str | Path, file_date: date | None,
    limits: ParseLimits = ParseLimits(),
) -> ParseResult:
    """Parse one file; `source_file` is recorded relative to data_dir."""
    source_file = Path(path).resolve().relative_to(Path(data_dir).resolve()).as_posix()
    return parse_bytes(spec, Path(path).read_bytes(), source_file=source_file, file_date=file_date, limits=limits)


def parse_bytes(
    spec: SourceSpec, data: bytes, *, source_file: str, file_date: date | None,
    limits: ParseLimits = ParseLimits(),
) -> ParseResult:
    """Parse one file's bytes into canonical events and bad rows (nothing dropped)."""
    if spec.kind != "events":
        raise ValueError(f"source '{spec.name}' is a {spec.kind} source; use read_identity_table")
    records = _read_records(spec, data)
    con = _connect(spec.timestamp.timezone)
    try:
        con.register("src", records.table)
        sql = _events_sql(spec, records.relation, source_file=source_file, file_date=file_date, limits=limits)
        out = con.sql(sql).to_arrow_table()
    finally:
        con.close()
    events, bad = _split(out, records, spec, source_file, file_date)
    return ParseResult(events=events, bad_rows=bad, records_read=records.table.num_rows)


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


def read_identity_table(spec: SourceSpec, path: str | Path) -> pa.Table:
    """The CRM/identity table, normalised (IDENTITY_TABLE_SCHEMA). Rows that are malformed or
    have no customer id carry no usable mapping; they are skipped with a warning."""
    if spec.kind != "identity":
        raise ValueError(f"source '{spec.name}' is not an identity source")
    records = _read_records(spec, Path(path).read_bytes())
    cols = {key: f"f_{i}" for i, key in enumerate(spec.referenced_fields())}
    mapping = spec.identity_map
    pick = {k: (f"_nz({cols[mapping[k]]})" if k in mapping else "NULL::VARCHAR") for k in IDENTITY_TABLE_SCHEMA.names}
    con = _connect()
    try:
        con.register("src", records.table)
        out = con.sql(
            f"""SELECT {pick['customer_id']} AS customer_id, _email({pick['email']}) AS email,
                       _phone({pick['phone']}) AS phone, {pick['segment']} AS segment
                FROM ({records.relation}) WHERE pre_reason IS NULL"""
        ).to_arrow_table()
    finally:
        con.close()
    kept = out.filter(pc.is_valid(out["customer_id"]))
    if kept.num_rows < records.table.num_rows:
        skipped = records.table.num_rows - kept.num_rows
        log.warning("%s: %d identity rows skipped (malformed or without customer_id)", path, skipped)
    return kept.cast(IDENTITY_TABLE_SCHEMA)


# --- normalisation: one SQL definition, also exposed for Arrow arrays -----------------
_MACROS = """
CREATE TEMP MACRO _nz(x) AS CASE
    WHEN ascii(x) IN (9, 10, 13, 32) OR ends_with(x, ' ') OR ends_with(x, chr(9)) OR ends_with(x, chr(10))
        OR ends_with(x, chr(13)) THEN nullif(trim(x, ' ' || chr(9) || chr(10) || chr(13)), '')
    ELSE nullif(x, '') END;
CREATE TEMP MACRO _email(x) AS lower(_nz(x));
CREATE TEMP MACRO _phone(x) AS nullif('+' || regexp_replace(x, '[^0-9]+', '', 'g'), '+');
CREATE TEMP MACRO _int(x) AS CASE WHEN TRY_CAST(x AS DOUBLE) = TRY_CAST(x AS INTEGER) THEN TRY_CAST(x AS INTEGER) END;
CREATE TEMP MACRO _num(x) AS CASE WHEN isfinite(TRY_CAST(x AS DOUBLE)) THEN TRY_CAST(x AS DOUBLE) END;
CREATE TEMP MACRO _iso(x) AS CASE WHEN ascii(x) BETWEEN 48 AND 57 AND isfinite(TRY_CAST(x AS TIMESTAMPTZ))
    THEN epoch_us(TRY_CAST(x AS TIMESTAMPTZ)) END;  -- digit first: DuckDB also reads 'epoch', 'infinity'
CREATE TEMP MACRO _epoch(x, scale) AS CASE WHEN abs(TRY_CAST(x AS DECIMAL(38, 9))) < 2.5e17 / scale
    THEN CAST(round(TRY_CAST(x AS DECIMAL(38, 9)) * scale) AS BIGINT) END;
CREATE TEMP MACRO _q(x) AS '''' || CASE WHEN length(x) > 80 THEN left(x, 77) || '...' ELSE x END || '''';
CREATE TEMP MACRO _utc(us) AS strftime(make_timestamp(us), '%Y-%m-%dT%H:%M:%S') || 'Z';
"""


def _connect(tz: str = "UTC") -> duckdb.DuckDBPyConnection:
    """A fresh in-memory connection per call (picklable callers, no shared state); naive
    times are read in `tz`."""
    con = duckdb.connect()
    con.execute(f"SET TimeZone = {_lit(tz)}")
    con.execute(_MACROS)
    return con


def _normalize(values, macro: str) -> pa.Array:
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, pa.string())
    con = _connect()
    try:
        con.register("a", pa.table({"v": arr}))
        out = con.sql(f"SELECT {macro}(v) AS v FROM a").to_arrow_table()["v"]
    finally:
        con.close()
    return out.combine_chunks().cast(pa.string())


def normalize_email(values) -> pa.Array:
    """Emails trimmed and lower-cased; empty -> null."""
    return _normalize(values, "_email")


def normalize_phone(values) -> pa.Array:
    """Phones as '+' and digits only ('+44 (20) 7946-0001' -> '+442079460001'); no digits -> null."""
    return _normalize(values, "_phone")


# --- the shared validation / extraction query ------------------------------------------
def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ts_sql(x: str, ts: TimestampSpec) -> str:
    """UTC microseconds (BIGINT) of raw text x, NULL when it does not parse."""
    if ts.format == "iso8601":
        return f"_iso({x})"
    if ts.format == "epoch_s":
        return f"_epoch({x}, 1000000)"
    if ts.format == "epoch_ms":
        return f"_epoch({x}, 1000)"
    # TIMESTAMP -> TIMESTAMPTZ uses the session time zone (the spec's), DST-aware.
    return f"epoch_us(CAST(try_strptime({x}, {_lit(ts.format)}) AS TIMESTAMPTZ))"


def _ts_name(ts: TimestampSpec) -> str:
    return ts.format if not ts.is_pattern else f"'{ts.format}'"


def _events_sql(spec: SourceSpec, relation: str, *, source_file: str, file_date: date | None, limits: ParseLimits) -> str:
    col = {path: f"f_{i}" for i, path in enumerate(spec.referenced_fields())}
    ts, et = spec.timestamp, spec.event_type
    derived: list[str] = [f"{_ts_sql(col[ts.field], ts)} AS _ts"]  # stage p columns
    checks: list[tuple[str, str, str]] = []  # (condition, reason, detail) in BAD_ROW order

    checks.append(("pre_reason IS NOT NULL", "pre_reason", "pre_detail"))
    checks.append((f"{col[ts.field]} IS NULL", "'missing_timestamp'",
                   _lit(f"timestamp field '{ts.field}' is missing or empty")))
    checks.append(("_ts IS NULL", "'bad_timestamp'",
                   f"'timestamp ' || _q({col[ts.field]}) || {_lit(' does not match ' + _ts_name(ts))}"))
    if et.field:
        raw_type = col[et.field]
        checks.append((f"{raw_type} IS NULL", "'missing_event_type'",
                       _lit(f"event type field '{et.field}' is missing or empty")))
        if et.allowed:
            checks.append((f"{raw_type} NOT IN ({', '.join(map(_lit, et.allowed))})", "'unknown_event_type'",
                           f"'event type ' || _q({raw_type}) || {_lit(' not in ' + ', '.join(et.allowed))}"))
        mapped = " ".join(f"WHEN {_lit(a)} THEN {_lit(b)}" for a, b in et.map)
        event_type = f"CASE {raw_type} {mapped} ELSE {raw_type} END" if et.map else raw_type
    else:
        event_type = _lit(et.value)
    if spec.channel_field:
        derived.append(f"lower({col[spec.channel_field]}) AS _channel")
        checks.append((f"_channel IS NULL OR _channel NOT IN ({', '.join(map(_lit, CHANNELS))})", "'unknown_channel'",
                       f"'channel ' || coalesce(_q({col[spec.channel_field]}), '(empty)') || "
                       f"{_lit(' in field ' + repr(spec.channel_field) + ' is not one of ' + ', '.join(CHANNELS))}"))
        channel = "_channel"
    else:
        channel = _lit(spec.channel)

    typed = {}
    for fs in spec.fields:
        dtype = TYPED_ATTRIBUTES[fs.name]
        if fs.seconds_between:
            start, end = (col[p] for p in fs.seconds_between)
            t0, t1 = _ts_sql(start, ts), _ts_sql(end, ts)
            derived.append(f"({t1} - {t0}) / 1e6 AS _t_{fs.name}")
            for raw, parsed, name in ((start, t0, fs.seconds_between[0]), (end, t1, fs.seconds_between[1])):
                checks.append((f"{raw} IS NOT NULL AND {parsed} IS NULL", "'wrong_type'",
                               f"{_lit(fs.name + ': ')} || _q({raw}) || "
                               f"{_lit(f' in field {name!r} is not a timestamp ({_ts_name(ts)})')}"))
        elif pa.types.is_string(dtype):
            derived.append(f"{col[fs.path]} AS _t_{fs.name}")
        else:
            integer = pa.types.is_integer(dtype)
            derived.append(f"{'_int' if integer else '_num'}({col[fs.path]}) AS _t_{fs.name}")
            checks.append((f"{col[fs.path]} IS NOT NULL AND _t_{fs.name} IS NULL", "'wrong_type'",
                           f"{_lit(fs.name + ': ')} || _q({col[fs.path]}) || "
                           f"{_lit(f' in field {fs.path!r} is not ' + ('a whole number' if integer else 'a number'))}"))
        typed[fs.name] = f"_t_{fs.name}"

    identity = {}
    for key, path in spec.identity:
        identity[key] = {"email": f"lower({col[path]})", "phone": f"_phone({col[path]})"}.get(key, col[path])
        derived.append(f"{identity[key]} AS _id_{key}")
    checks.append((" AND ".join(f"_id_{k} IS NULL" for k in identity), "'missing_identity'",
                   _lit("no identity: " + ", ".join(f"{p!r} ({k})" for k, p in spec.identity) + " all empty")))
    if file_date is not None:
        day0 = int(datetime(file_date.year, file_date.month, file_date.day, tzinfo=timezone.utc).timestamp()) * 10**6
        upper = day0 + 86_400 * 10**6 + _micros(limits.max_clock_skew)
        lower = day0 - _micros(limits.allowed_lateness)
        checks.append((f"_ts >= {upper}", "'clock_skew'",
                       f"'timestamp ' || _utc(_ts) || {_lit(f' is after the end of file day {file_date} + {limits.max_clock_skew} clock skew')}"))
        checks.append((f"_ts < {lower}", "'too_late'",
                       f"'timestamp ' || _utc(_ts) || {_lit(f' is before the start of file day {file_date} - {limits.allowed_lateness} allowed lateness')}"))

    event_id = f"{_lit(spec.name + ':')} || " + (
        f"coalesce({col[spec.event_id]}, " if spec.event_id else "("
    ) + f"left(md5({_lit(spec.name + chr(31) + source_file + chr(31))} || CAST(line AS VARCHAR)), 20))"
    attributes = _attributes_sql([(name, col[path]) for name, path in spec.attributes])
    source_date = f"DATE '{file_date.isoformat()}'" if file_date else "NULL::DATE"
    # `_bad` is cheap boolean work for every row; the reason and detail CASEs run only on bad rows.
    bad = "coalesce(" + " OR ".join(f"({c})" for c, _, _ in checks) + ", false)"
    reason = "CASE " + " ".join(f"WHEN {c} THEN {r}" for c, r, _ in checks) + " END"
    detail = "CASE " + " ".join(f"WHEN {c} THEN {d}" for c, _, d in checks) + " END"
    nz = ", ".join(f"_nz({c}) AS {c}" for c in col.values())
    return f"""
    WITH rec AS ({relation}),
    v AS (SELECT line, pre_reason, pre_detail, {nz} FROM rec),
    p AS (SELECT *, {', '.join(derived)} FROM v),
    r AS (SELECT *, CASE WHEN {bad} THEN {reason} END AS _reason FROM p)
    SELECT {event_id} AS event_id, NULL::VARCHAR AS customer_id,
        {', '.join((f"_id_{k}" if k in identity else "NULL::VARCHAR") + f" AS {k}" for k in IDENTITY_KEYS)},
        {channel} AS channel, {event_type} AS event_type, _ts AS ts,
        {', '.join((typed.get(n, "NULL") + f" AS {n}") for n in TYPED_ATTRIBUTES)},
        {attributes} AS attributes,
        {_lit(spec.name)} AS source, {_lit(source_file)} AS source_file, line AS source_line,
        {source_date} AS source_date, _reason AS reason,
        CASE WHEN _reason IS NOT NULL THEN {detail} END AS detail
    FROM r"""


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 10**6 + delta.microseconds


def _attributes_sql(pairs: list[tuple[str, str]]) -> str:
    """One JSON object text of the non-null attributes (string values), NULL when none.
    json_object writes nulls as `"key":null`; as every value is a quoted string, that exact
    text can only be a null member, so plain replaces remove it (cheaper than concatenation)."""
    if not pairs:
        return "NULL::VARCHAR"
    obj = "CAST(json_object(" + ", ".join(f"{_lit(n)}, {c}" for n, c in pairs) + ") AS VARCHAR)"
    stripped = obj
    for name, _ in pairs:
        member = json.dumps(name) + ":null"
        stripped = f"replace(replace({stripped}, {_lit(member + ',')}, ''), {_lit(',' + member)}, '')"
    present = " OR ".join(f"{c} IS NOT NULL" for _, c in pairs)
    complete = " AND ".join(f"{c} IS NOT NULL" for _, c in pairs)
    return f"CASE WHEN {complete} THEN {obj} WHEN {present} THEN {stripped} END"


def _split(out: pa.Table, records: "_Records", spec: SourceSpec, source_file: str, file_date: date | None):
    """Query output -> (events in CANONICAL_SCHEMA, bad rows in BAD_ROW_SCHEMA)."""
    if not out["source_line"].equals(records.table[records.line_column]):  # we rely on DuckDB keeping row order
        raise RuntimeError("parse query changed the record order")
    reason = out["reason"]
    if reason.null_count == out.num_rows:
        good, bad = out, out.slice(0, 0)
    else:
        good, bad = out.filter(pc.is_null(reason)), out.filter(pc.is_valid(reason))
    positions = np.flatnonzero(reason.is_valid().to_numpy(zero_copy_only=False))  # record indices of bad rows
    ts = good["ts"].cast(pa.int64()).cast(CANONICAL_SCHEMA.field("ts").type)
    good = good.set_column(good.schema.get_field_index("ts"), "ts", ts)
    events = good.select(CANONICAL_SCHEMA.names).cast(CANONICAL_SCHEMA)

    raw_text = records.raw_text(positions)
    detail = bad["detail"].to_pylist()
    for i, why in enumerate(bad["reason"].to_pylist()):
        if detail[i] is None and records.explain is not None:
            detail[i] = records.explain(why, int(positions[i]))
    bad_rows = pa.table({
        "source": pa.array([spec.name] * bad.num_rows, pa.string()),
        "source_file": pa.array([source_file] * bad.num_rows, pa.string()),
        "source_line": bad["source_line"],
        "source_date": pa.array([file_date] * bad.num_rows, pa.date32()),
        "stage": pa.array([STAGE] * bad.num_rows, pa.string()),
        "reason": bad["reason"],
        "detail": pa.array(detail, pa.string()),
        "raw_text": pa.array(raw_text, pa.string()),
    }).cast(BAD_ROW_SCHEMA)
    return events, bad_rows


# --- format readers: bytes -> records ---------------------------------------------------
@dataclass
class _Records:
    """A reader's output. `table` is registered as `src`; `relation` is SQL over it yielding
    line, pre_reason, pre_detail and f_0..f_n (VARCHAR, in spec.referenced_fields() order).
    The query keeps the table's row order, so a record is known by its row index: `raw_text`
    rebuilds the text of given records (only bad rows pay for it); `explain` gives the detail
    of a reader-level rejection the SQL could only flag."""

    table: pa.Table
    relation: str = "SELECT * FROM src"
    raw_text: Callable[[np.ndarray], list[str]] = lambda indices: []
    explain: Callable[[str, int], str] | None = None
    line_column: str = "line"


def _read_records(spec: SourceSpec, data: bytes) -> _Records:
    paths = spec.referenced_fields()
    if spec.format == "jsonl":
        return _jsonl_records(data, paths)
    if spec.format == "parquet":
        return _parquet_records(data, paths)
    with _cyclic_gc_paused():
        if spec.format == "csv":
            return _csv_records(data, paths, spec.delimiter)
        return _xes_records(data, paths)


@contextmanager
def _cyclic_gc_paused():
    """The CSV and XES readers build many small lists/tuples (no cycles); without this the
    cyclic GC rescans them over and over, which made CSV parsing 2-3x slower."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _newlines(buf: bytes) -> np.ndarray:
    """Offsets of every '\\n', in chunks so no file-sized temporary is allocated."""
    u8 = np.frombuffer(buf, np.uint8)
    scratch = np.empty(min(_NL_CHUNK, len(u8)), np.bool_)
    parts = [np.empty(0, np.int64)]
    for s in range(0, len(u8), _NL_CHUNK):
        chunk = u8[s:s + _NL_CHUNK]
        np.equal(chunk, 10, out=scratch[:len(chunk)])
        parts.append(np.flatnonzero(scratch[:len(chunk)]) + s)
    return np.concatenate(parts)


def _physical_lines(buf: bytes, base: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) byte offsets of each physical line, '\\n' excluded; no empty last line."""
    nl = _newlines(buf)
    nl = nl[nl >= base]
    starts = np.concatenate([[base], nl + 1]).astype(np.int64)
    ends = np.concatenate([nl, [len(buf)]]).astype(np.int64)
    if starts[-1] == len(buf):
        starts, ends = starts[:-1], ends[:-1]
    return starts, ends


def _blank_lines(buf: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Mask of whitespace-only lines; only lines that start with whitespace are looked at."""
    u8 = np.frombuffer(buf, np.uint8)
    empty = ends <= starts
    first = u8[np.minimum(starts, max(len(u8) - 1, 0))] if len(u8) else np.empty(0, np.uint8)
    maybe = np.flatnonzero(~empty & np.isin(first, (9, 13, 32)))
    for i in maybe:
        empty[i] = not buf[starts[i]:ends[i]].strip()
    return empty


def _is_utf8(buf: bytes, start: int) -> bool:
    whole = pa.LargeStringArray.from_buffers(1, pa.py_buffer(np.array([start, len(buf)], np.int64)), pa.py_buffer(buf))
    try:
        whole.validate(full=True)
        return True
    except pa.ArrowInvalid:
        return False


def _jsonl_records(data: bytes, paths: Sequence[str]) -> _Records:
    """One record per non-blank line; the JSON is parsed in SQL (json_extract_string over all
    paths at once, `try` for invalid JSON). A record's string spans up to the next record, so
    skipped blank lines just add trailing whitespace that JSON ignores."""
    base = 3 if data.startswith(_BOM) else 0
    starts, ends = _physical_lines(data, base)
    invalid = np.empty(0, np.int64)
    buf, buf_starts = data, starts
    if not _is_utf8(data, base):
        # Replace bad bytes, then compare the lines that gained U+FFFD with the original.
        buf = data[base:].decode("utf-8", "replace").encode("utf-8")
        buf_starts, buf_ends = _physical_lines(buf, 0)
        u8 = np.frombuffer(buf, np.uint8)
        hits = np.flatnonzero((u8[:-2] == 0xEF) & (u8[1:-1] == 0xBF) & (u8[2:] == 0xBD))
        suspects = np.unique(np.searchsorted(buf_starts, hits, side="right") - 1)
        invalid = np.array([i for i in suspects if data[starts[i]:ends[i]] != buf[buf_starts[i]:buf_ends[i]]], np.int64)
        ends_for_blank = buf_ends
    else:
        ends_for_blank = ends
    keep = np.flatnonzero(~_blank_lines(buf, buf_starts, ends_for_blank))
    offsets = np.append(buf_starts[keep], len(buf)).astype(np.int64)
    docs = pa.LargeStringArray.from_buffers(len(keep), pa.py_buffer(offsets), pa.py_buffer(buf))
    pre = pa.nulls(len(keep), pa.string())
    if len(invalid):
        pre = pc.if_else(pa.array(np.isin(keep, invalid)), pa.scalar("invalid_utf8"), pre)
    table = pa.table({"line": pa.array(keep + 1), "pre_reason": pre, "doc": docs})  # no type=: slow path
    jpaths = "[" + ", ".join(_lit(_json_path(p)) for p in paths) + "]"
    fields = ", ".join(f"_j[{i + 1}] AS f_{i}" for i in range(len(paths)))
    relation = f"""
        SELECT line,
            CASE WHEN pre_reason IS NOT NULL THEN pre_reason
                 WHEN _j IS NULL OR (doc[1] <> '{{' AND json_type(doc) <> 'OBJECT') THEN 'malformed' END AS pre_reason,
            NULL::VARCHAR AS pre_detail, {fields}
        FROM (SELECT line, pre_reason, doc,
                     CASE WHEN pre_reason IS NULL THEN try(json_extract_string(doc, {jpaths})) END AS _j
              FROM src)"""

    def original(index: int) -> bytes:
        line = keep[index]
        return data[starts[line]:ends[line]].rstrip(b"\r")

    def explain(reason: str, index: int) -> str:
        raw = original(index)
        if reason == "invalid_utf8":
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not valid UTF-8"
        try:
            value = json.loads(raw)
        except ValueError as exc:
            return f"invalid JSON: {exc}"
        if isinstance(value, dict):  # e.g. NaN or lone surrogates, which strict JSON forbids
            return "not strict JSON (NaN, Infinity or an invalid escape)"
        return f"JSON {type(value).__name__} where an object was expected"

    return _Records(
        table, relation,
        raw_text=lambda indices: [original(int(i)).decode("utf-8", "backslashreplace") for i in indices],
        explain=explain,
    )


def _json_path(path: str) -> str:
    return "$." + ".".join('"' + part.replace('"', '\\"') + '"' for part in path.split("."))


def _string_records(lines: list[int], pre: dict[int, tuple[str, str]], columns, raw_of) -> _Records:
    """Records of the readers that produce Python strings anyway (CSV, XES). `pre` maps a
    record index to its (reason, detail); `raw_of(index)` gives a record's text."""
    pre_reason, pre_detail = [None] * len(lines), [None] * len(lines)
    for i, (why, detail) in pre.items():
        pre_reason[i], pre_detail[i] = why, detail
    table = pa.table({
        "line": pa.array(np.asarray(lines, np.int64)),
        "pre_reason": pa.array(pre_reason, pa.string()),
        "pre_detail": pa.array(pre_detail, pa.string()),
        **{f"f_{i}": pa.array(values, pa.string()) for i, values in enumerate(columns)},
    })
    return _Records(table, raw_text=lambda indices: [raw_of(int(i)) for i in indices])


def _decode(data: bytes) -> tuple[str, bool]:
    """Text and whether it was valid UTF-8; invalid bytes survive as surrogates."""
    try:
        return data.decode("utf-8-sig"), True
    except UnicodeDecodeError:
        return data.decode("utf-8-sig", "surrogateescape"), False


def _readable(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _csv_rows(reader) -> list[tuple[int, int, list | csv.Error]]:
    """(first physical line index, end index, row or csv.Error) for every row, blank ones too."""
    rows, done = [], 0
    while True:
        try:
            for row in reader:
                rows.append((done, reader.line_num, row))
                done = reader.line_num
            return rows
        except csv.Error as exc:
            rows.append((done, reader.line_num, exc))
            done = reader.line_num


def _csv_records(data: bytes, paths: Sequence[str], delimiter: str) -> _Records:
    """Header on the first row; each later non-blank row is a record starting at its line.
    Python's csv module (C) splits rows; columns are transposed with zip, and the record text
    is only rebuilt for rows that turn out bad."""
    text, valid = _decode(data)
    phys = io.StringIO(text, newline="").readlines()

    def raw(a: int, b: int) -> str:
        return "".join(phys[a:b]).rstrip("\r\n")

    rows = [r for r in _csv_rows(csv.reader(phys, delimiter=delimiter))
            if not (isinstance(r[2], list) and len(r[2]) <= 1 and not raw(r[0], r[1]).strip())]
    at = next((i for i, r in enumerate(rows) if isinstance(r[2], list)), len(rows))
    header = rows[at][2] if at < len(rows) else []
    rows = rows[:at] + rows[at + 1:]  # rows before the header can only be CSV errors
    width, filler = len(header), (None,) * len(header)
    pre: dict[int, tuple[str, str]] = {}
    for i, (a, b, row) in enumerate(rows):
        if not valid and not raw(a, b).isascii():
            try:
                raw(a, b).encode("utf-8")
            except UnicodeEncodeError as exc:
                bad_byte = ord(raw(a, b)[exc.start]) - 0xDC00
                pre[i] = ("invalid_utf8", f"byte 0x{bad_byte:02x} at column {exc.start + 1} is not valid UTF-8")
                continue
        if not isinstance(row, list):
            pre[i] = ("malformed", f"CSV error: {row}")
        elif len(row) != width:
            pre[i] = ("malformed", f"expected {width} columns as in the header, got {len(row)}")
    fields = list(zip(*(filler if i in pre else r[2] for i, r in enumerate(rows)))) or [()] * width
    where = {name: i for i, name in reversed(list(enumerate(header)))}
    columns = [fields[where[p]] if p in where else [None] * len(rows) for p in paths]
    return _string_records(
        [a + 1 for a, _, _ in rows], pre, columns,
        raw_of=lambda i: _readable(raw(rows[i][0], rows[i][1])),
    )


def _parquet_records(data: bytes, paths: Sequence[str]) -> _Records:
    """Rows as read by pyarrow; fields are cast to text in SQL (nested paths = struct members)."""
    table = pq.read_table(pa.BufferReader(data))
    names = set(table.column_names)
    src = table.append_column("__line__", pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64)))

    def ref(path: str) -> str:
        if path in names:
            return '"' + path.replace('"', '""') + '"'
        parts = path.split(".")
        if parts[0] in names and pa.types.is_struct(table.schema.field(parts[0]).type):
            return ".".join('"' + p.replace('"', '""') + '"' for p in parts)
        return "NULL"

    fields = ", ".join(f"CAST({ref(p)} AS VARCHAR) AS f_{i}" for i, p in enumerate(paths))
    relation = f'SELECT "__line__" AS line, NULL::VARCHAR AS pre_reason, NULL::VARCHAR AS pre_detail, {fields} FROM src'

    def raw_text(indices: np.ndarray) -> list[str]:
        rows = table.take(pa.array(np.asarray(indices, np.int64))).to_pylist()
        return [json.dumps(row, default=str, ensure_ascii=False) for row in rows]

    return _Records(src, relation, raw_text=raw_text, line_column="__line__")


_XES_VALUES = {"string", "date", "int", "float", "boolean", "id"}


def _xes_records(data: bytes, paths: Sequence[str]) -> _Records:
    """One record per <event>; trace attributes become `case:<key>` fields. If the XML breaks,
    the events before the break are kept and the rest becomes one malformed record."""
    parser = expat.ParserCreate()
    stack: list[str] = []
    events: list[tuple[int, int, int, dict]] = []  # line, start byte, end byte, attributes
    state = {"event": None, "trace": {}, "trace_first": 0, "last_end": 0}

    def start(name, attrs):
        stack.append(name)
        parent = stack[-2] if len(stack) > 1 else None
        if name == "event" and state["event"] is None:
            state["event"] = (parser.CurrentLineNumber, parser.CurrentByteIndex, {}, len(stack))
        elif name == "trace":
            state["trace"], state["trace_first"] = {}, len(events)
        elif name in _XES_VALUES and "key" in attrs:
            event = state["event"]
            if event is not None and parent == "event" and len(stack) == event[3] + 1:
                event[2][attrs["key"]] = attrs.get("value")
            elif parent == "trace" and event is None:
                state["trace"]["case:" + attrs["key"]] = attrs.get("value")

    def end(name):
        event = state["event"]
        if name == "event" and event is not None and len(stack) == event[3]:
            stop = data.index(b">", parser.CurrentByteIndex) + 1
            events.append((event[0], event[1], stop, event[2]))
            state["event"], state["last_end"] = None, stop
        elif name == "trace":
            close_trace()
        stack.pop()

    def close_trace():
        for _, _, _, attributes in events[state["trace_first"]:]:
            for key, value in state["trace"].items():
                attributes.setdefault(key, value)
        state["trace"], state["trace_first"] = {}, len(events)

    parser.StartElementHandler, parser.EndElementHandler = start, end
    broken = None
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        close_trace()
        at = state["event"][1] if state["event"] else state["last_end"]
        while at < len(data) and data[at:at + 1].isspace():
            at += 1
        broken = (data.count(b"\n", 0, at) + 1, data[at:], f"broken XML: {exc}")

    lines = [e[0] for e in events]
    columns = [[e[3].get(p) for e in events] for p in paths]
    pre: dict[int, tuple[str, str]] = {}
    if broken:
        line, rest, detail = broken
        try:
            rest.decode("utf-8")
            pre[len(lines)] = ("malformed", detail)
        except UnicodeDecodeError:
            pre[len(lines)] = ("invalid_utf8", detail)
        lines.append(line)
        for values in columns:
            values.append(None)

    def raw_of(i: int) -> str:
        text = data[events[i][1]:events[i][2]] if i < len(events) else broken[1]
        return text.decode("utf-8", "backslashreplace")

    return _string_records(lines, pre, columns, raw_of)


def stable_event_id(source: str, source_file: str, line: int) -> str:
    """The id of a record without a source id (same as the SQL): source + md5 of file and line."""
    digest = hashlib.md5(f"{source}\x1f{source_file}\x1f{line}".encode()).hexdigest()[:20]
    return f"{source}:{digest}"
