"""Publish lake partitions into the DuckDB warehouse file, atomically and idempotently.

Why it works this way: readers must see the old warehouse or the new one, never a mix, and
a killed publisher must lose nothing. The warehouse path is a link to its current
generation (warehouse.generations); under an exclusive lock (one publisher at a time) a
publish writes the generation before it, caught up to the current one, replaces the days'
partitions in it inside one transaction, checkpoints, fsyncs and renames a new link over the
path. So a night costs the rows of the night (and of the publish before it), not a copy of
the whole file. A publisher killed at any point leaves the current generation untouched.
Publishing day D makes every table's `partition_date = D` rows equal the lake's partition D,
so publishing twice gives the same tables and a range equals its days."""
from __future__ import annotations

import fcntl
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable, Iterator, Sequence

import duckdb
import pyarrow as pa

from journey_defs.model import JourneyMap
from lake import Snapshot, crash, open_snapshot, writer_lock
from lake.files import fsync_path
from lake.load import insert_parquet
from warehouse import alert_state, generations
from warehouse.alert_counts import SUMMARY_TABLES, summarize, unsummarized
from warehouse.alerting import advance, tables
from warehouse.tables import ALL_TABLES, DERIVED, JOURNEY_MAPS, MIRRORED, PARTITION_COLUMN, warehouse_schema
from warehouse.views import create_views

WORK_SUFFIX = ".publishing-"
CAUGHT_UP_WHOLE = ("journey_maps", "alerts", "alert_nights", "alert_slices", alert_state.TABLE)
"""Tables a catch-up copies whole (the rest by partition): small, or rewritten by a publish."""


class WarehouseBusy(TimeoutError):
    """Another publisher held the warehouse for longer than the lock timeout (transient:
    retrying later is the right answer)."""


class NothingToPublish(ValueError):
    """A requested day has no partition at all in the lake (no run committed it)."""


@dataclass
class PublishReport:
    warehouse: str
    days: tuple[date, ...]
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)  # rows published per table, over the days
    alert_seconds: float = 0.0  # of `seconds`, summarizing the nights and continuing (or replaying) the alerts


def publish(lake_root: str, warehouse: str | Path, days: Sequence[date], journeys: Sequence[JourneyMap] = (),
            progress: Callable[[str], None] = print, lock_timeout: float | None = 3600.0) -> PublishReport:
    """Make the warehouse's partitions of `days` equal the lake's committed ones, and record
    the intended maps of `journeys`; all or nothing. Holds the lake's writer lock (so the
    committed state it reads stays whole) and the warehouse's own lock."""
    began = time.perf_counter()
    with writer_lock(lake_root, lock_timeout, progress, "journeys publish"):
        report = _publish(open_snapshot(lake_root), Path(warehouse), tuple(sorted(set(days))), journeys, progress,
                          lock_timeout)
    report.seconds = time.perf_counter() - began
    progress(f"published {len(report.days)} day(s) to {report.warehouse} in {report.seconds:.1f} s")
    return report


def _publish(snapshot: Snapshot, path: Path, days: tuple[date, ...], journeys: Sequence[JourneyMap], progress,
             lock_timeout: float | None) -> PublishReport:
    empty = [d.isoformat() for d in days if not snapshot.state.has_day(d)]
    if empty:
        raise NothingToPublish(f"the lake {snapshot.root} has nothing committed for {', '.join(empty)}: run the "
                               "pipeline for those days first")
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = dict.fromkeys(MIRRORED, 0)
    with _exclusive(path, lock_timeout):
        for stale in path.parent.glob(path.name + WORK_SUFFIX + "*"):
            stale.unlink()  # left by a publisher of an older version that was killed: never visible to readers
        now = generations.current(path)
        work, con, behind = generations.open_writable(path, now, progress)
        written = False
        try:
            try:
                crash.point("publish-copy", str(work))
                con.execute("SET enable_progress_bar = false")
                _create_tables(con)
                if behind:
                    copied = generations.catch_up(con, now, (*MIRRORED, *SUMMARY_TABLES), CAUGHT_UP_WHOLE,
                                                  PARTITION_COLUMN)
                    progress(f"publish: {work.name} caught up with {now.name} ({copied:,} rows)")
                con.execute("BEGIN TRANSACTION")
                publish_id = uuid.uuid4().hex
                for day in days:
                    staged = 0
                    for table, (lake_table, schema) in MIRRORED.items():
                        n = _replace_partition(con, table, day, snapshot, lake_table, schema)
                        staged, rows[table] = staged + n, rows[table] + n
                    con.execute(f"DELETE FROM {generations.PUBLISHED_DAYS} WHERE partition_date = ?", [day])
                    con.execute(f"INSERT INTO {generations.PUBLISHED_DAYS} VALUES (?, ?, now())", [day, publish_id])
                    progress(f"publish {day}: {staged:,} rows staged")
                if journeys:
                    _replace_maps(con, journeys)
                create_views(con)
                alerting = time.perf_counter()
                summarize(con, [*days, *(d for d in unsummarized(con) if d not in days)])
                _replace_alerts(con, days)
                alert_seconds = time.perf_counter() - alerting
                con.execute("COMMIT")
                con.execute("CHECKPOINT")
            finally:
                con.close()
            fsync_path(work)
            crash.point("publish-written", str(work))
            generations.point_at(path, work)
            written = True
            crash.point("publish-renamed", str(path))
        finally:
            if not written and not behind:  # a fresh copy nobody will read
                work.unlink(missing_ok=True)
                Path(str(work) + ".wal").unlink(missing_ok=True)
        generations.remove_stale(path, (work, *((now,) if now is not None and now != path else ())))
    return PublishReport(str(path), days, 0.0, rows, alert_seconds)


def _create_tables(con: duckdb.DuckDBPyConnection) -> None:
    legacy = con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'runs'").fetchall()
    if legacy and legacy[0][0] == "BASE TABLE":  # warehouses published before `runs` became a view
        con.execute("ALTER TABLE runs RENAME TO run_files")
    existing: dict[str, set[str]] = {}
    for table, column in con.execute("SELECT table_name, column_name FROM duckdb_columns() "
                                     "WHERE database_name = current_database() AND NOT internal").fetchall():
        existing.setdefault(table, set()).add(column)
    for table in ALL_TABLES:
        schema, have = warehouse_schema(table), existing.get(table)
        if have is not None and set(schema.names) <= have and (table not in DERIVED or have == set(schema.names)):
            continue  # as this version writes it (the usual case: nothing to run)
        con.register("_empty", schema.empty_table())
        if have is None or table in DERIVED and have - set(schema.names):
            # (derived tables are replayed or summarized again from the mirrored ones: a warehouse
            # of an older version loses their old columns, and the alerts are replayed whole)
            con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _empty")
            if have is not None and alert_state.TABLE in existing:
                con.execute(f"DELETE FROM {alert_state.TABLE}")
        else:
            for name, kind, *_ in con.execute("DESCRIBE SELECT * FROM _empty").fetchall():
                if name not in have:  # a warehouse published by an older version: add the new column
                    con.execute(f'ALTER TABLE {table} ADD COLUMN "{name}" {kind}')
        con.unregister("_empty")
    con.execute(generations.PUBLISHED_DAYS_DDL)


def _replace_partition(con: duckdb.DuckDBPyConnection, table: str, day: date, snapshot: Snapshot, lake_table: str,
                       schema: pa.Schema) -> int:
    """Replace the table's rows of `day` with the lake's committed partition; rows inserted."""
    con.execute(f"DELETE FROM {table} WHERE {PARTITION_COLUMN} = ?", [day])
    return insert_parquet(con, table, snapshot.files(lake_table, day), schema.names,
                          f"$day::DATE AS {PARTITION_COLUMN}", {"day": day})


def _replace_alerts(con: duckdb.DuckDBPyConnection, days: tuple[date, ...]) -> None:
    """Each journey's alerts, continued past its last night or replayed from every published
    night (warehouse.alerting.advance), and where the replay stopped."""
    done = advance(con, days)
    names = ("alerts", "alert_nights", "alert_slices")
    for journey in done:
        for name, rows in zip(names, tables(journey.alerts, journey.nights, journey.slices)):
            if name == "alerts" or not journey.continued:
                con.execute(f"DELETE FROM {name} WHERE journey_id = ?", [journey.journey_id])
            _insert(con, name, rows)
        con.execute(f"DELETE FROM {alert_state.TABLE} WHERE journey_id = ?", [journey.journey_id])
        if journey.state is not None:
            con.execute(f"INSERT INTO {alert_state.TABLE} VALUES (?, ?)",
                        [journey.journey_id, alert_state.dumps(journey.state)])
    kept = [j.journey_id for j in done]
    for name in (*names, alert_state.TABLE):  # journeys no longer mapped
        con.execute(f"DELETE FROM {name} WHERE journey_id NOT IN (SELECT unnest($kept::VARCHAR[]))", {"kept": kept})


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    if rows.num_rows:
        con.register("_rows", rows)
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
        con.unregister("_rows")


def _replace_maps(con: duckdb.DuckDBPyConnection, journeys: Sequence[JourneyMap]) -> None:
    rows = [{"journey_id": j.id, "journey_version": j.version, "stage_index": i, "stage": s.id, "stage_name": s.name,
             "optional": s.optional,
             "max_time_in_stage_s": s.max_time_in_stage.total_seconds() if s.max_time_in_stage else None,
             "alert_recent_days": j.alerts.recent_window.days, "alert_baseline_days": j.alerts.baseline_window.days,
             "alert_min_relative_rise": j.alerts.min_relative_rise, "alert_significance": j.alerts.significance,
             "alert_min_sample": j.alerts.min_sample}
            for j in journeys for i, s in enumerate(j.stages)]
    con.register("_maps", pa.Table.from_pylist(rows, schema=JOURNEY_MAPS))
    con.execute("DELETE FROM journey_maps WHERE journey_id IN (SELECT DISTINCT journey_id FROM _maps)")
    con.execute("INSERT INTO journey_maps BY NAME SELECT * FROM _maps")
    con.unregister("_maps")


@contextmanager
def _exclusive(path: Path, timeout: float | None) -> Iterator[None]:
    """One publisher per warehouse file at a time, whatever lake it publishes from (a lock
    file beside it; released by the kernel if the publisher dies). Waits up to `timeout`
    seconds (None: without limit), then WarehouseBusy."""
    with open(path.with_name(path.name + ".lock"), "a+") as lock:
        deadline = time.monotonic() + (timeout or 0)
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if timeout is not None and time.monotonic() >= deadline:
                    raise WarehouseBusy(f"{path} is being published by another process "
                                        f"(waited {timeout:g} s)") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
