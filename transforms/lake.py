"""The Parquet lake: `<lake>/<table>/date=YYYY-MM-DD/part-<name>.parquet`, read and written
through Beam's FileSystems so a local path, gs:// or s3:// work unchanged.

A run writes into `<lake>/_staging/<run id>/` and only a successful run is committed: each
of its partitions replaces the lake's partition of the same table and date. Readers of the
lake therefore never see a half-written run's files (a crash leaves only the staging dir)."""
from __future__ import annotations

import io
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

TABLES = ("events", "bad_rows", "identities", "sessions", "journeys", "journey_stages", "deviations", "feedback",
          "stage_daily", "off_map", "manifest", "checks")


def partition_dir(root: str, table: str, day: date) -> str:
    return FileSystems.join(root, table, f"date={day.isoformat()}")


def part_path(root: str, table: str, day: date, part: str) -> str:
    return FileSystems.join(partition_dir(root, table, day), f"part-{part}.parquet")


def write_table(path: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    with FileSystems.create(path) as out:
        out.write(buffer.getvalue())


def read_table(path: str) -> pa.Table:
    with FileSystems.open(path) as stream:
        return pq.read_table(io.BytesIO(stream.read()))


def partition_files(root: str, table: str, day: date) -> list[str]:
    """Part files of one partition (empty when the partition does not exist)."""
    pattern = FileSystems.join(partition_dir(root, table, day), "part-*.parquet")
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def read_partition(root: str, table: str, day: date, schema: pa.Schema | None = None) -> pa.Table:
    tables = [read_table(path) for path in partition_files(root, table, day)]
    if not tables:
        if schema is None:
            raise FileNotFoundError(f"no partition {table}/date={day} under {root}")
        return schema.empty_table()
    return pa.concat_tables(tables, promote_options="permissive")


def commit(staging: str, lake: str, replace: list[tuple[str, date]]) -> None:
    """Move the staged partitions into the lake. Each partition in `replace` (the staged ones
    and the ones this run owns but left empty) is cleared first, so re-running a day gives the
    same lake, not a union with the previous run."""
    for table, day in replace:
        old = partition_files(lake, table, day)
        if old:
            FileSystems.delete(old)
        staged = partition_files(staging, table, day)
        if staged:
            target = partition_dir(lake, table, day)
            if not FileSystems.exists(target):
                FileSystems.mkdirs(target)
            FileSystems.rename(staged, [FileSystems.join(target, path.rsplit("/", 1)[-1]) for path in staged])
    discard(staging)


def discard(staging: str) -> None:
    if FileSystems.exists(staging):
        FileSystems.delete([staging])
