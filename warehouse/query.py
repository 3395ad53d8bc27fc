"""Read-only SQL over the warehouse file, and the result in the format asked for.

Sealed: every connection the project opens for users (`journeys query`, `alerts`, `report`,
the notify task) is read-only, with DuckDB's file system access off and its configuration
locked once the warehouse is attached. So no statement can write a file (COPY TO, EXPORT
DATABASE over the warehouse or into the lake), read one (read_csv, read_text, glob, a path
in FROM), attach another database, install or load an extension, or turn any of that back
on (SET, RESET, PRAGMA): DuckDB itself refuses, before touching anything. Readers never
take the write lock a publish needs (publish writes a copy and renames it anyway)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

FORMATS = ("table", "csv", "json", "parquet")


class QueryError(ValueError):
    """The query could not run (missing warehouse, bad SQL, a refused write or file access).
    Always one line: the CLI prints it after `journeys <command>:` and exits 2."""


SEALED = {"access_mode": "READ_ONLY", "enable_external_access": False, "autoload_known_extensions": False,
          "autoinstall_known_extensions": False, "allow_community_extensions": False}


def open_readonly(warehouse: str | Path) -> duckdb.DuckDBPyConnection:
    """The warehouse, sealed (see the module docstring); QueryError when there is none."""
    path = Path(warehouse)
    if not path.is_file():
        raise QueryError(f"no warehouse at {path}: publish a run first (journeys run / journeys publish)")
    try:
        con = duckdb.connect(str(path), config=SEALED)
    except duckdb.Error as exc:  # not a DuckDB file, a newer format, ...
        raise query_error(exc) from None
    con.execute("SET enable_progress_bar = false")  # session-only: not accepted in the connect config
    con.execute("SET lock_configuration = true")
    return con


def query(warehouse: str | Path, sql: str) -> pa.Table:
    con = open_readonly(warehouse)
    try:
        relation = con.sql(sql)
        if relation is None:
            raise QueryError("the statement returns no rows (the warehouse is read-only here; use SELECT)")
        return relation.to_arrow_table()
    except duckdb.Error as exc:
        raise query_error(exc) from None
    finally:
        con.close()


REFUSED = "refused: the query path cannot read or write files or change settings"
HOW_TO_EXPORT = "export with --format csv|json|parquet --out FILE, or use your own DuckDB session"


def query_error(exc: duckdb.Error) -> QueryError:
    """DuckDB's error as one line. A refusal of the seal says so, keeps DuckDB's first line
    (which file or setting) and how to get a result out instead."""
    first, *rest = _lines(str(exc)) or [type(exc).__name__]
    if isinstance(exc, duckdb.PermissionException) or "configuration has been locked" in first:
        return QueryError(f"{REFUSED} ({first}); {HOW_TO_EXPORT}")
    return QueryError(f"{first} ({'; '.join(rest)})" if rest else first)


def _lines(message: str) -> list[str]:
    """The message's lines, blank ones and the ^^^ under the SQL dropped: joined on one line
    they point at nothing, while the SQL near the error and "Did you mean" still help."""
    lines = (" ".join(line.split()) for line in message.splitlines())
    return [line for line in lines if line.strip("^ ")]


def render(table: pa.Table, fmt: str, max_width: int = 40) -> bytes:
    """The result as bytes in `fmt` (one of FORMATS)."""
    if fmt == "csv":
        out = io.BytesIO()
        pacsv.write_csv(table, out)
        return out.getvalue()
    if fmt == "json":
        return (json.dumps(table.to_pylist(), default=str, indent=1) + "\n").encode()
    if fmt == "parquet":
        out = io.BytesIO()
        pq.write_table(table, out)
        return out.getvalue()
    if fmt == "table":
        return text_table(table, max_width).encode()
    raise QueryError(f"unknown format '{fmt}': expected one of {', '.join(FORMATS)}")


def text_table(table: pa.Table, max_width: int = 40) -> str:
    """Aligned columns for a terminal: numbers right, text left, long values cut with '…'."""
    def cell(value) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return str(value).lower()
        text = f"{value:,.4g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)
        return text if len(text) <= max_width else text[:max_width - 1] + "…"

    columns = [[cell(v) for v in table.column(i).to_pylist()] for i in range(table.num_columns)]
    numeric = [pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
               for f in table.schema]
    widths = [max([len(name), *map(len, col)]) for name, col in zip(table.column_names, columns)]
    line = lambda values: "  ".join(  # noqa: E731
        v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()
    rows = [line(table.column_names), line(["-" * w for w in widths])]
    rows += [line([col[r] for col in columns]) for r in range(table.num_rows)]
    rows.append(f"({table.num_rows:,} row{'s' if table.num_rows != 1 else ''})")
    return "\n".join(rows) + "\n"
