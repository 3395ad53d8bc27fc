"""What DuckDB accepts, asked of DuckDB itself, so a definition fails at load and not in Beam.

Why this module exists: a journey map's regexes and attribute names, and a source spec's
strptime pattern, time zone and JSON field paths, only reach DuckDB when a run builds its
SQL, deep inside a Beam pipeline, where a rejection is a long traceback. Python's own rules
differ (`re` has look-around, RE2 has not; `zoneinfo` knows `posix/...` names, ICU does not),
so the loaders ask the DuckDB the run uses, with the SQL forms the run builds:

- regex: `regexp_matches(text, 'pattern')` (transforms.match, partial match, no flags);
- attribute of the `attributes` JSON: `json_extract_string(json, '$."name"')` (transforms.match);
- strptime pattern: `try_strptime(text, 'pattern')` (transforms.validation_sql);
- time zone: `SET TimeZone = 'zone'` (transforms.sql_session, ICU);
- JSON-lines field: `json_extract_string(doc, ['$."a"."b"', ...])` (transforms.raw_records).

If one of those forms changes there, change it here; tests/test_journey_loader.py and
tests/test_source_spec.py run what passes here through the real transforms. Each function
returns DuckDB's reason (None when DuckDB accepts). One in-memory connection per process
serves every check; a check costs a fraction of a millisecond.
"""
from __future__ import annotations

import os
import re
import threading

import duckdb

__all__ = ["regex_error", "strptime_error", "timezone_error", "attribute_path_error", "json_field_error"]

_lock = threading.Lock()
_connection: tuple[int, duckdb.DuckDBPyConnection] | None = None  # (pid, connection)
_forked: list = []  # a parent's connection seen after a fork: never used nor closed in the child
_ERROR_KIND = re.compile(r"^[A-Za-z ]*Error: ")
_WILDCARD = "DuckDB reads '*' as a JSON wildcard, not a key"


def regex_error(pattern: str) -> str | None:
    """Why RE2 (as DuckDB's regexp_matches compiles it) rejects `pattern`."""
    return _reason(f"SELECT regexp_matches(''::VARCHAR, {_literal(pattern)})")


def strptime_error(pattern: str) -> str | None:
    """Why DuckDB's strptime rejects `pattern` (try_strptime still raises on a bad pattern)."""
    reason = _reason(f"SELECT try_strptime(''::VARCHAR, {_literal(pattern)})")
    return reason.split(": ", 1)[-1] if reason and reason.startswith("Failed to parse format specifier") else reason


def timezone_error(zone: str) -> str | None:
    """Why DuckDB (ICU) does not know `zone`; the session zone is restored after the probe."""
    reason = _reason(f"SET TimeZone = {_literal(zone)}", reset="SET TimeZone = 'UTC'")
    return reason.split("\n", 1)[0] if reason else None


def attribute_path_error(name: str) -> str | None:
    """Why `name` cannot be looked up as one key of the `attributes` JSON: DuckDB rejects the
    path, or reads it as a wildcard (a list, which no predicate can compare)."""
    path = '$."' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    reason = _reason(f"SELECT typeof(json_extract_string('{{}}', {_literal(path)}))", expect="VARCHAR")
    return _WILDCARD if reason == "VARCHAR[]" else reason


def json_field_error(field: str) -> str | None:
    """Why DuckDB rejects the JSON path of a JSON-lines field (dots separate nested keys)."""
    path = "$." + ".".join('"' + part.replace('"', '\\"') + '"' for part in field.split("."))
    reason = _reason(f"SELECT try(json_extract_string('{{}}', [{_literal(path)}]))")
    return _WILDCARD if reason and "wildcards" in reason else reason


def _literal(text: str) -> str:
    """A SQL string literal, quoted as transforms.sql_session.sql_literal does."""
    return "'" + text.replace("'", "''") + "'"


def _reason(sql: str, reset: str | None = None, expect: str | None = None) -> str | None:
    """DuckDB's error for `sql` without its 'Invalid Input Error: ' prefix, else None; with
    `expect`, the single value the query returns when it is not `expect`."""
    with _lock:
        con = _shared()
        try:
            value = con.execute(sql).fetchone()
        except duckdb.Error as exc:
            return _ERROR_KIND.sub("", str(exc), count=1).strip()
        finally:
            if reset:
                con.execute(reset)
    return None if expect is None or value[0] == expect else str(value[0])


def _shared() -> duckdb.DuckDBPyConnection:
    """This process's probe connection (a parent's is not used after a fork)."""
    global _connection
    if _connection is not None and _connection[0] != os.getpid():
        _forked.append(_connection[1])
        _connection = None
    if _connection is None:
        _connection = (os.getpid(), duckdb.connect(":memory:"))
    return _connection[1]
