"""Write Arrow tables as Parquet part files of the lake's staging area (Beam FileSystems)."""
from __future__ import annotations

from datetime import date

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from transforms.lake import part_path, write_table


class WriteParts(beam.DoFn):
    """Element: (part name, table). Rows go to the partition of their `partition_column` date
    (or `default_date` where that is null / when no column is given); one file per partition
    and part name, so re-running the same input writes the same file names."""

    def __init__(self, root: str, table: str, default_date: date, partition_column: str | None = None):
        self.root, self.table, self.default_date, self.partition_column = root, table, default_date, partition_column
        self.rows = Metrics.counter("write", f"{table}_rows")

    def process(self, element):
        part, table = element
        if table.num_rows == 0:
            return
        for day, rows in _by_date(table, self.partition_column, self.default_date):
            write_table(part_path(self.root, self.table, day, part), rows)
            self.rows.inc(rows.num_rows)


def _by_date(table: pa.Table, column: str | None, default: date):
    if column is None:
        yield default, table
        return
    days = pc.fill_null(table.column(column), pa.scalar(default, pa.date32()))
    for day in pc.unique(days).to_pylist():
        yield day, table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
