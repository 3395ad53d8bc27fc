"""Loading committed lake partitions into DuckDB (publish, the gate's frames)."""
from __future__ import annotations

import io

import duckdb
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems


def insert_parquet(con: duckdb.DuckDBPyConnection, table: str, files: list[str], columns: list[str],
                   extra: str = "", params: dict | None = None) -> int:
    """Append `columns` of the Parquet `files` (plus the `extra` select expressions, with
    `params`) to `table` by name; rows inserted. Local files are read by DuckDB itself
    (streaming, no Arrow copy); remote ones (gs://, s3://) through Beam's FileSystems, one
    file at a time."""
    if not files:
        return 0
    select = ", ".join([*(f'"{c}"' for c in columns), *([extra] if extra else [])])
    if not any("://" in f for f in files):
        return int(con.execute(f"INSERT INTO {table} BY NAME SELECT {select} FROM read_parquet($files, "
                               "union_by_name = true, hive_partitioning = false)",
                               {**(params or {}), "files": files}).fetchone()[0])
    inserted = 0
    for path in files:
        with FileSystems.open(path) as stream:
            part = pq.read_table(io.BytesIO(stream.read()), columns=columns)
        con.register("_part", part)
        con.execute(f"INSERT INTO {table} BY NAME SELECT {select} FROM _part", params or {})
        con.unregister("_part")
        inserted += part.num_rows
    return inserted
