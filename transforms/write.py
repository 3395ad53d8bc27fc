"""Write Arrow tables as Parquet part files into a run's own lake folder (Beam FileSystems)."""
from __future__ import annotations

from datetime import date

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from lake import crash
from lake.files import write_table
from lake.state import RunFolder
from lake.tables import TABLES


class WriteParts(beam.DoFn):
    """Element: (part name, table). Rows go to the partition of the lake table's rule (their
    `source_date`, or `default_date` where null / for as-of tables) and scope (their journey
    or source; the run's own id for run-scoped tables); one file per partition, scope and
    part name, so re-running the same input writes the same file names."""

    def __init__(self, folder: RunFolder, table: str, default_date: date):
        self.folder, self.table, self.default_date = folder, table, default_date
        self.rows = Metrics.counter("write", f"{table}_rows")

    def process(self, element):
        part, table = element
        if table.num_rows == 0:
            return
        spec = TABLES[self.table]
        for day, by_day in _split(table, spec.partition_column, pa.scalar(self.default_date, pa.date32())):
            for scope, rows in _split(by_day, spec.scope_column, pa.scalar(self.folder.run_id)):
                path = self.folder.part_path(self.table, day, scope, part)
                crash.point("staging", path)
                write_table(path, rows)
                crash.point("staging", path)
                self.rows.inc(rows.num_rows)


def _split(table: pa.Table, column: str | None, default: pa.Scalar):
    """(value, rows) per distinct value of `column` (nulls count as `default`)."""
    if column is None:
        yield default.as_py(), table
        return
    values = pc.fill_null(table.column(column), default)
    for value in pc.unique(values).to_pylist():
        yield value, table.filter(pc.equal(values, pa.scalar(value, values.type)))
