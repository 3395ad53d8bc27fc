"""A source spec -> the one DuckDB query that validates records and extracts canonical events.

Why this module exists: every rule that decides whether a record is an event or a bad row
(timestamp parsing, the order in which reasons are checked, identity normalisation, the
clock limits of a file's day, the stable event id) is SQL generated here from the spec, the
same for every format. The query's text depends only on the spec, the reader's relation and
the limits, so it is built once and reused; what differs per file (its name, its day and
so its clock limits) comes in as list parameters indexed by each record's FILE_COLUMN, so
records of many files are validated by one query.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Sequence

import pyarrow as pa

from journey_defs.canonical import CHANNELS, IDENTITY_KEYS, TYPED_ATTRIBUTES
from journey_defs.source_spec import SourceSpec, TimestampSpec
from transforms.raw_records import FILE_COLUMN
from transforms.sql_session import sql_literal as _lit

_DAY_US = 86_400 * 10**6


@dataclass(frozen=True)
class ParseLimits:
    """How far an event's time may lie outside its file's day before it is rejected."""

    max_clock_skew: timedelta = timedelta(hours=1)  # ts after file day end + this -> clock_skew
    allowed_lateness: timedelta = timedelta(days=7)  # ts before file day start - this -> too_late


def events_query(
    spec: SourceSpec, relation: str, files: Sequence[tuple[str, date | None]], limits: ParseLimits,
) -> tuple[str, dict[str, list]]:
    """SQL and parameters turning `relation` (records of `files`, FILE_COLUMN = index into
    `files`, each (source_file, file_date)) into one row per record: the canonical columns,
    FILE_COLUMN, and `reason`/`detail` (NULL for events). Clock checks apply to dated files."""
    dated = any(file_date is not None for _, file_date in files)
    params: dict[str, list] = {
        "source_files": [source_file for source_file, _ in files],
        "source_dates": [file_date for _, file_date in files],
    }
    if dated:
        day0 = [None if d is None else int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()) * 10**6
                for _, d in files]
        params["skew_from"] = [None if d is None else d + _DAY_US + _micros(limits.max_clock_skew) for d in day0]
        params["late_before"] = [None if d is None else d - _micros(limits.allowed_lateness) for d in day0]
    return _events_sql(spec, relation, limits, dated), params


def stable_event_id(source: str, source_file: str, line: int) -> str:
    """The id of a record of a spec that names no id field (same as the SQL): source + md5 of file
    and line."""
    digest = hashlib.md5(f"{source}\x1f{source_file}\x1f{line}".encode()).hexdigest()[:20]
    return f"{source}:{digest}"


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


@lru_cache(maxsize=64)
def _events_sql(spec: SourceSpec, relation: str, limits: ParseLimits, dated: bool) -> str:
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
    # Per-file values: list parameters indexed by the record's file (NULL bounds: no check).
    file_of = f'"{FILE_COLUMN}" + 1'
    per_file = [f"CAST($source_files[{file_of}] AS VARCHAR) AS _source_file",
                f"CAST($source_dates[{file_of}] AS DATE) AS _source_date"]
    if dated:
        per_file += [f"CAST($skew_from[{file_of}] AS BIGINT) AS _skew_from",
                     f"CAST($late_before[{file_of}] AS BIGINT) AS _late_before"]
        checks.append(("_ts >= _skew_from", "'clock_skew'",
                       f"'timestamp ' || _utc(_ts) || ' is after the end of file day ' || CAST(_source_date AS VARCHAR) || "
                       f"{_lit(f' + {limits.max_clock_skew} clock skew')}"))
        checks.append(("_ts < _late_before", "'too_late'",
                       f"'timestamp ' || _utc(_ts) || ' is before the start of file day ' || CAST(_source_date AS VARCHAR) || "
                       f"{_lit(f' - {limits.allowed_lateness} allowed lateness')}"))

    if spec.event_id:
        # Never a hash in place of a missing id: a re-delivered copy would get another one.
        # Checked last, so a record with another defect keeps that reason.
        checks.append((f"{col[spec.event_id]} IS NULL", "'missing_event_id'",
                       _lit(f"event id field '{spec.event_id}' is missing or empty")))
        event_id = f"{_lit(spec.name + ':')} || {col[spec.event_id]}"
    else:
        event_id = (f"{_lit(spec.name + ':')} || left(md5({_lit(spec.name + chr(31))} || _source_file || "
                    f"{_lit(chr(31))} || CAST(line AS VARCHAR)), 20)")
    attributes = _attributes_sql([(name, col[path]) for name, path in spec.attributes])
    # `_bad` is cheap boolean work for every row; the reason and detail CASEs run only on bad rows.
    bad = "coalesce(" + " OR ".join(f"({c})" for c, _, _ in checks) + ", false)"
    reason = "CASE " + " ".join(f"WHEN {c} THEN {r}" for c, r, _ in checks) + " END"
    detail = "CASE " + " ".join(f"WHEN {c} THEN {d}" for c, _, d in checks) + " END"
    nz = ", ".join(f"_nz({c}) AS {c}" for c in col.values())
    return f"""
    WITH rec AS ({relation}),
    v AS (SELECT "{FILE_COLUMN}", line, pre_reason, pre_detail, {nz}, {', '.join(per_file)} FROM rec),
    p AS (SELECT *, {', '.join(derived)} FROM v),
    r AS (SELECT *, CASE WHEN {bad} THEN {reason} END AS _reason FROM p)
    SELECT {event_id} AS event_id, NULL::VARCHAR AS customer_id,
        {', '.join((f"_id_{k}" if k in identity else "NULL::VARCHAR") + f" AS {k}" for k in IDENTITY_KEYS)},
        {channel} AS channel, {event_type} AS event_type, _ts AS ts,
        {', '.join((typed.get(n, "NULL") + f" AS {n}") for n in TYPED_ATTRIBUTES)},
        {attributes} AS attributes,
        {_lit(spec.name)} AS source, _source_file AS source_file, line AS source_line,
        _source_date AS source_date, _reason AS reason,
        CASE WHEN _reason IS NOT NULL THEN {detail} END AS detail, "{FILE_COLUMN}"
    FROM r"""


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 10**6 + delta.microseconds


def _attributes_sql(pairs: list[tuple[str, str]]) -> str:
    """One JSON object text of the non-null attributes (string values), NULL when none: the
    members of the non-null values, joined. Each member is written by the same JSON writer
    as json_object (to_json), so the text is json_object's without its `"key":null` members,
    but built in one pass (cheaper than json_object followed by replaces of the null members)."""
    if not pairs:
        return "NULL::VARCHAR"
    members = ", ".join(
        f"CASE WHEN {c} IS NOT NULL THEN CAST(to_json({_lit(n)}) AS VARCHAR) || ':' || CAST(to_json({c}) AS VARCHAR) END"
        for n, c in pairs)
    present = " OR ".join(f"{c} IS NOT NULL" for _, c in pairs)
    return f"CASE WHEN {present} THEN '{{' || concat_ws(',', {members}) || '}}' END"
