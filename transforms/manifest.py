"""Row accounting per raw file read by a run: records = events + bad rows + duplicates.
Computed from three independent counts (the parser's, the dedupe's and the events written),
so a record lost anywhere shows up as an imbalance."""
from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from journey_defs.outputs import MANIFEST


def rows_per_file(table: pa.Table) -> dict[str, int]:
    """Rows of an events or bad-rows table per source_file: the counts accounting compares."""
    if table.num_rows == 0:
        return {}
    counts = pc.value_counts(table.column("source_file"))
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))


def build_manifest(run_id: str, as_of_date, file_counts: list[pa.Table], duplicates: list[pa.Table],
                   written: list[pa.Table]) -> pa.Table:
    """file_counts: FILE_COUNTS tables; duplicates: (source_file, n_duplicates);
    written: (source_file, n_events) of the new events after dedupe."""
    con = duckdb.connect()
    try:
        con.register("files", _concat(file_counts, [("source", pa.string()), ("source_file", pa.string()),
                                                    ("source_date", pa.date32()), ("records", pa.int64()),
                                                    ("parsed_events", pa.int64()), ("bad_rows", pa.int64())]))
        con.register("dups", _concat(duplicates, [("source_file", pa.string()), ("n_duplicates", pa.int64())]))
        con.register("written", _concat(written, [("source_file", pa.string()), ("n_events", pa.int64())]))
        table = con.sql("""
            WITH d AS (SELECT source_file, sum(n_duplicates) AS n FROM dups GROUP BY ALL),
                 w AS (SELECT source_file, sum(n_events) AS n FROM written GROUP BY ALL)
            SELECT ? AS run_id, CAST(? AS DATE) AS as_of_date, f.source, f.source_file, f.source_date,
                   f.records, coalesce(w.n, 0) AS events, f.bad_rows, coalesce(d.n, 0) AS duplicates,
                   f.records = coalesce(w.n, 0) + f.bad_rows + coalesce(d.n, 0) AS balanced
            FROM files f LEFT JOIN d USING (source_file) LEFT JOIN w USING (source_file)
            ORDER BY f.source, f.source_file""", params=[run_id, as_of_date]).to_arrow_table()
    finally:
        con.close()
    return table.cast(MANIFEST)


def _concat(tables: list[pa.Table], fields) -> pa.Table:
    schema = pa.schema(fields)
    tables = [t.select(schema.names).cast(schema) for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else schema.empty_table()
