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
    """The query could not run (missing warehouse, bad SQL, an attempt to write)."""


SEALED = {"access_mode": "READ_ONLY", "enable_external_access": False, "autoload_known_extensions": False,
          "autoinstall_known_extensions": False, "allow_community_extensions": False}


def open_readonly(warehouse: str | Path) -> duckdb.DuckDBPyConnection:
    """The warehouse, sealed (see the module docstring); QueryError when there is none."""
    path = Path(warehouse)
    if not path.is_file():
        raise QueryError(f"no warehouse at {path}: publish a run first (journeys run / journeys publish)")
    con = duckdb.connect(str(path), config=SEALED)
    con.execute("SET enable_progress_bar = false")
    con.execute("SET lock_configuration = true")
    return con


def query(warehouse: str | Path, sql: str) -> pa.Table:
    con = open_readonly(warehouse)
    try:
        relation = con.sql(sql)
        if relation is None:
            raise QueryError("the statement returns no rows (the warehouse is read-only here; use SELECT)")
        return relation.to_arrow_table()
    except (duckdb.PermissionException, duckdb.InvalidInputException) as exc:
        first = str(exc).strip().splitlines()[0]
        if "disabled by configuration" in first or "configuration has been locked" in first or \
                "disabled through configuration" in first:
            raise QueryError(f"refused: the query path cannot read or write files or change settings ({first}); "
                             "export with --format csv|json|parquet --out FILE, or use your own DuckDB session") from None
        raise QueryError(first) from None
    except duckdb.Error as exc:
        raise QueryError(" ".join(str(exc).split())) from None
    finally:
        con.close()


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
