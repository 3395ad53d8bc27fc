"""Format readers: one file's bytes -> *records*, the same shape for every format.

Why this module exists: JSONL, CSV, Parquet and XES differ only in how a record is found and
how its fields are read. Each reader here turns bytes into an Arrow table with the physical
line of each record, a pre-check reason for records the reader already knows are broken
(invalid UTF-8, bad JSON, wrong column count, broken XML) and SQL (`Records.relation`) that
yields the spec's raw fields as strings. Validation then happens once, in SQL, for all
formats (validation_sql). JSONL, the hot path, never creates a Python object per record:
lines become an Arrow array straight from the file's bytes and the JSON is read in SQL.

A file whose header or schema lacks a field the spec reads is not read at all (FileFailure):
reading it would give every record NULL there (or, for an id, an invented one) without a word.
JSONL and XES have no header, so such gaps are decided per record, in SQL.
"""
from __future__ import annotations

import csv
import gc
import io
import json
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Sequence
from xml.parsers import expat

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from journey_defs.source_spec import SourceSpec
from transforms.sql_session import sql_literal

FILE_COLUMN = "__file__"
"""The int32 column every records table carries: the file's index in a batch of files."""

_BOM = b"\xef\xbb\xbf"
_NL_CHUNK = 1 << 22


class FileFailure(ValueError):
    """A whole file that cannot be read as its spec says (not decompressible, not Parquet, a
    column the spec reads is missing): none of its records becomes an event or a bad row, so
    the run accounts for it as a failed file. `records` is its number of data rows when known."""

    def __init__(self, reason: str, records: int = 0):
        super().__init__(reason)
        self.records = records


class _MissingFields(Exception):
    """Raised by a reader whose header/schema lacks `paths`; read_records names their roles."""

    def __init__(self, paths: list[str], has: str, records: int):
        super().__init__(paths)
        self.paths, self.has, self.records = paths, has, records


@dataclass
class Records:
    """A reader's output. `table` is registered as `src`; `relation` is SQL over it yielding
    FILE_COLUMN, line, pre_reason, pre_detail and f_0..f_n (VARCHAR, in
    spec.referenced_fields() order). Tables of one spec and format have the same schema and
    relation (Parquet: when the files' schemas match), so a batch of files is one
    concatenated table under the same relation. The query keeps the table's row order, so a
    record is known by its row index: `raw_text` rebuilds the text of given records (only bad
    rows pay for it); `explain` gives the detail of a reader-level rejection the SQL could
    only flag."""

    table: pa.Table
    relation: str = "SELECT * FROM src"
    raw_text: Callable[[np.ndarray], list[str]] = lambda indices: []
    explain: Callable[[str, int], str] | None = None
    line_column: str = "line"


def read_records(spec: SourceSpec, data: bytes, file_index: int = 0) -> Records:
    """The records of one file's bytes; `file_index` fills FILE_COLUMN. Raises FileFailure
    when the file's header or schema lacks a field the spec reads, or it is no Parquet file."""
    paths = spec.referenced_fields()
    try:
        if spec.format == "jsonl":
            records = _jsonl_records(data, paths)
        elif spec.format == "parquet":
            records = _parquet_records(data, paths)
        else:
            with _cyclic_gc_paused():
                if spec.format == "csv":
                    records = _csv_records(data, paths, spec.delimiter)
                else:
                    records = _xes_records(data, paths)
    except _MissingFields as missing:
        raise FileFailure(_missing_message(spec, missing), missing.records) from None
    index = pa.array(np.full(records.table.num_rows, file_index, np.int32))
    return replace(records, table=records.table.append_column(FILE_COLUMN, index))


def _missing_message(spec: SourceSpec, missing: _MissingFields) -> str:
    """E.g. "no column 'call_id' (the phone spec's event_id); the header has call_number, …"."""
    roles = _field_roles(spec)
    names = ", ".join(f"'{p}'" for p in missing.paths)
    noun = "column" if len(missing.paths) == 1 else "columns"
    return f"no {noun} {names} (the {spec.name} spec's {', '.join(roles[p] for p in missing.paths)}); {missing.has}"


def _field_roles(spec: SourceSpec) -> dict[str, str]:
    """What the spec reads each raw field for (its keys in the YAML), for messages."""
    roles: dict[str, list[str]] = {}
    add = lambda path, role: roles.setdefault(path, []).append(role)  # noqa: E731
    if spec.timestamp:
        add(spec.timestamp.field, "timestamp")
    if spec.event_type and spec.event_type.field:
        add(spec.event_type.field, "event_type")
    if spec.channel_field:
        add(spec.channel_field, "channel")
    if spec.event_id:
        add(spec.event_id, "event_id")
    for key, path in spec.identity:
        add(path, f"identity.{key}")
    for field in spec.fields:
        for path in field.seconds_between or (field.path,):
            add(path, f"fields.{field.name}")
    for name, path in spec.attributes:
        add(path, f"attributes.{name}")
    return {path: " and ".join(r) for path, r in roles.items()}


def _listing(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit]) + (", …" if len(names) > limit else "")
    return shown or "no columns"


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


def _invalid_utf8_lines(data: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Indices of the lines that are not valid UTF-8 (a multi-byte sequence never spans a
    '\\n'). Runs of lines are decoded at once; a run that fails is decoded again from the
    line after each bad one."""
    view = memoryview(data)
    found: list[int] = []
    step = 256
    for a in range(0, len(starts), step):
        b = min(a + step, len(starts))
        while a < b:
            try:
                str(view[starts[a]:ends[b - 1]], "utf-8")
                break
            except UnicodeDecodeError as exc:
                a = int(np.searchsorted(starts, starts[a] + exc.start, side="right")) - 1
                found.append(a)
                a += 1
    return np.array(found, np.int64)


def _jsonl_records(data: bytes, paths: Sequence[str]) -> Records:
    """One record per non-blank line; the JSON is parsed in SQL (json_extract_string over all
    paths at once, `try` for invalid JSON). A record's string spans up to the next record, so
    skipped blank lines just add trailing whitespace that JSON ignores. Valid JSON is
    extracted apart from the rest (json_valid): the same `try` expression on both sides, but
    a `try` that fails in a vector retries that vector row by row, which made it ~3x slower."""
    base = 3 if data.startswith(_BOM) else 0
    starts, ends = _physical_lines(data, base)
    invalid = np.empty(0, np.int64)
    buf = data
    if not _is_utf8(data, base):
        # Blank out (with spaces, so offsets stay) the lines that are not valid UTF-8: only
        # their pre_reason is read in SQL; their text and details come from `data`.
        invalid = _invalid_utf8_lines(data, starts, ends)
        buf = bytearray(data)
        for i in invalid:
            buf[starts[i]:ends[i]] = b" " * int(ends[i] - starts[i])
    keep = np.flatnonzero(~_blank_lines(data, starts, ends))
    offsets = np.append(starts[keep], len(buf)).astype(np.int64)
    docs = pa.LargeStringArray.from_buffers(len(keep), pa.py_buffer(offsets), pa.py_buffer(buf))
    pre = pa.nulls(len(keep), pa.string())
    if len(invalid):
        pre = pc.if_else(pa.array(np.isin(keep, invalid)), pa.scalar("invalid_utf8"), pre)
    table = pa.table({"line": pa.array(keep + 1), "pre_reason": pre, "doc": docs})  # no type=: slow path
    jpaths = "[" + ", ".join(sql_literal(_json_path(p)) for p in paths) + "]"
    fields = ", ".join(f"_j[{i + 1}] AS f_{i}" for i in range(len(paths)))
    relation = f"""
        SELECT "{FILE_COLUMN}", line,
            CASE WHEN pre_reason IS NOT NULL THEN pre_reason
                 WHEN _j IS NULL OR (doc[1] <> '{{' AND json_type(doc) <> 'OBJECT') THEN 'malformed' END AS pre_reason,
            NULL::VARCHAR AS pre_detail, {fields}
        FROM (SELECT "{FILE_COLUMN}", line, pre_reason, doc,
                     CASE WHEN pre_reason IS NOT NULL THEN NULL
                          WHEN json_valid(doc) THEN try(json_extract_string(doc, {jpaths}))
                          ELSE try(json_extract_string(doc, {jpaths})) END AS _j
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

    return Records(
        table, relation,
        raw_text=lambda indices: [original(int(i)).decode("utf-8", "backslashreplace") for i in indices],
        explain=explain,
    )


def _json_path(path: str) -> str:
    return "$." + ".".join('"' + part.replace('"', '\\"') + '"' for part in path.split("."))


def _string_records(lines: list[int], pre: dict[int, tuple[str, str]], columns, raw_of) -> Records:
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
    return Records(table, raw_text=lambda indices: [raw_of(int(i)) for i in indices])


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


def _csv_records(data: bytes, paths: Sequence[str], delimiter: str) -> Records:
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
    missing = [p for p in paths if p not in header]
    if header and missing:
        raise _MissingFields(missing, "the header has " + _listing(header), len(rows))
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


def _parquet_records(data: bytes, paths: Sequence[str]) -> Records:
    """Rows as read by pyarrow; fields are cast to text in SQL (nested paths = struct members)."""
    try:
        table = pq.read_table(pa.BufferReader(data))
    except pa.ArrowException as exc:
        raise FileFailure(f"not a readable Parquet file: {exc}") from None
    columns = {p: _struct_path(table.schema, p) for p in paths}
    missing = [p for p, parts in columns.items() if parts is None]
    if missing:
        raise _MissingFields(missing, "the schema has " + _listing(_leaf_paths(table.schema)), table.num_rows)
    src = table.append_column("__line__", pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64)))
    fields = ", ".join(
        "CAST(" + ".".join('"' + part.replace('"', '""') + '"' for part in columns[p]) + f" AS VARCHAR) AS f_{i}"
        for i, p in enumerate(paths))
    relation = f'SELECT "{FILE_COLUMN}", "__line__" AS line, NULL::VARCHAR AS pre_reason, NULL::VARCHAR AS pre_detail, {fields} FROM src'

    def raw_text(indices: np.ndarray) -> list[str]:
        rows = table.take(pa.array(np.asarray(indices, np.int64))).to_pylist()
        return [json.dumps(row, default=str, ensure_ascii=False) for row in rows]

    return Records(src, relation, raw_text=raw_text, line_column="__line__")


def _struct_path(schema: pa.Schema, path: str) -> list[str] | None:
    """The column (or the column and struct members) a spec path names; None when absent."""
    if path in schema.names:
        return [path]
    parts = path.split(".")
    if parts[0] not in schema.names:
        return None
    field = schema.field(parts[0])
    for part in parts[1:]:
        if not pa.types.is_struct(field.type) or field.type.get_field_index(part) < 0:
            return None
        field = field.type.field(part)
    return parts


def _leaf_paths(fields, prefix: str = "") -> list[str]:
    """Dotted paths of every non-struct field (how a spec names nested members)."""
    out = []
    for field in fields:
        if pa.types.is_struct(field.type):
            out += _leaf_paths(list(field.type), f"{prefix}{field.name}.")
        else:
            out.append(prefix + field.name)
    return out


_XES_VALUES = {"string", "date", "int", "float", "boolean", "id"}


def _xes_records(data: bytes, paths: Sequence[str]) -> Records:
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

