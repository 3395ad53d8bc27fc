"""Row accounting per raw file of a run: records = events + bad rows + duplicates.
Computed from three independent counts (the parser's, the dedupe's and the events written),
so a record lost anywhere shows up as an imbalance. A file that failed (not readable as its
spec says) never balances, so the run stops; a skipped file (matched by no source) balances
with zeros and stays listed with its reason."""
from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from journey_defs.outputs import FILE_COUNTS, MANIFEST


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
        con.register("files", _concat(file_counts, FILE_COUNTS))
        con.register("dups", _concat(duplicates, pa.schema([("source_file", pa.string()), ("n_duplicates", pa.int64())])))
        con.register("written", _concat(written, pa.schema([("source_file", pa.string()), ("n_events", pa.int64())])))
        table = con.sql("""
            WITH d AS (SELECT source_file, sum(n_duplicates) AS n FROM dups GROUP BY ALL),
                 w AS (SELECT source_file, sum(n_events) AS n FROM written GROUP BY ALL)
            SELECT ? AS run_id, CAST(? AS DATE) AS as_of_date, f.source, f.source_file, f.source_date,
                   f.records, coalesce(w.n, 0) AS events, f.bad_rows, coalesce(d.n, 0) AS duplicates,
                   f.status <> 'failed' AND f.records = coalesce(w.n, 0) + f.bad_rows + coalesce(d.n, 0) AS balanced,
                   f.status, f.reason
            FROM files f LEFT JOIN d USING (source_file) LEFT JOIN w USING (source_file)
            ORDER BY f.source, f.source_file""", params=[run_id, as_of_date]).to_arrow_table()
    finally:
        con.close()
    return table.cast(MANIFEST)


def problems(manifest: pa.Table) -> list[str]:
    """One line per file that stops the run: failed files first, with their reason, then
    files whose records do not balance."""
    failed = manifest.filter(pc.equal(manifest.column("status"), "failed"))
    unbalanced = manifest.filter(pc.and_(pc.invert(manifest.column("balanced")),
                                         pc.not_equal(manifest.column("status"), "failed")))
    return [f"{m['source_file']}: failed: {m['reason']}" for m in failed.to_pylist()] + [
        f"{m['source_file']}: {m['records']} records != {m['events']} events + {m['bad_rows']} bad rows + "
        f"{m['duplicates']} duplicates" for m in unbalanced.to_pylist()]


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = [t.select(schema.names).cast(schema) for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else schema.empty_table()
