"""DuckDB sessions with the shared SQL building blocks (normalisation and parsing macros).

Why this module exists: the validation query (validation_sql) and the identity-table reader
(identity_table) must trim, lower-case and normalise values by the very same rules, so those
rules are written once, as SQL macros, and every connection is opened here with them. A
connection is fresh per call and closed by the caller: callers stay picklable and share no
state (Beam workers, threads). Parsing, called per small batch of files, instead borrows a
connection kept per thread and process (`reused_connection`), as opening one costs ~30 ms.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator

import duckdb
import pyarrow as pa

MACROS = """
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
"""`_nz` trims whitespace and maps empty to NULL (cheaply: most values need no trim); `_email`,
`_phone` normalise identities; `_int`, `_num`, `_iso`, `_epoch` parse text or give NULL;
`_q` quotes a value for a message; `_utc` renders UTC microseconds."""


def connect(tz: str = "UTC") -> duckdb.DuckDBPyConnection:
    """A fresh in-memory connection with MACROS; naive times are read in `tz`. Queries on it
    keep the row order of a registered Arrow table, which callers rely on: the optimizer
    that turns a constant `IN (...)` list into a join is off, as a join does not keep the
    order once the scan runs in parallel over a table of several record batches."""
    con = duckdb.connect()
    con.execute(f"SET TimeZone = {sql_literal(tz)}")
    con.execute("SET disabled_optimizers = 'in_clause'")
    con.execute("SET enable_progress_bar = false")  # a library call must not draw on the user's terminal
    con.execute(MACROS)
    return con


_reused = threading.local()
_forked: list = []  # a parent's connections seen after a fork: never used nor closed in the child


@contextmanager
def reused_connection(tz: str = "UTC") -> Iterator[duckdb.DuckDBPyConnection]:
    """A `connect(tz)` connection for a `with` block, kept for the next block of the same
    thread and process (opening one costs ~30 ms, a lot for a small batch of files). The block
    must leave no state behind (unregister what it registers); a block that raises closes the
    connection instead. A nested block gets a fresh connection of its own."""
    con = getattr(_reused, "con", None)
    if con is not None and _reused.pid != os.getpid():
        _forked.append(con)
        con = None
    _reused.con = None
    if con is None:
        con = connect(tz)
    elif _reused.tz != tz:
        con.execute(f"SET TimeZone = {sql_literal(tz)}")
    try:
        yield con
    except BaseException:
        con.close()
        raise
    if getattr(_reused, "con", None) is None:
        _reused.con, _reused.pid, _reused.tz = con, os.getpid(), tz
    else:
        con.close()


def query_tables(sql: str, tables: dict[str, pa.Table], params: dict | None = None) -> pa.Table:
    """Run `sql` over the Arrow `tables` (registered under their names) on this thread's
    reused connection and return the result; the tables are unregistered afterwards."""
    with reused_connection() as con:
        try:
            for name, table in tables.items():
                con.register(name, table)
            return con.sql(sql, params=params).to_arrow_table()
        finally:
            for name in tables:
                con.unregister(name)


def sql_literal(text: str) -> str:
    """`text` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"
