"""The warehouse file as generations, so that a publish writes the night, not a copy of the
whole warehouse.

Why: DuckDB lets one process write a file or many read it, not both, and a file being written
is a mix of old and new pages, so a publish never writes the file readers open. The path
readers open (`warehouse.duckdb`) is a symbolic link to the current generation, a DuckDB file
beside it (`warehouse.duckdb.gen-000042`). A publish writes the generation before it — which
nobody opens once readers have moved on — catching it up to the current one (the partitions
published since it was current, copied from the current file, by `published_days`) and then
applying its own days; then it points the link at it (an atomic rename). Readers see the old
generation or the new one. Only when no earlier generation can be written (none yet, or a
reader still holds it open) is the current file copied whole, as before.

`published_days` records, per partition day, which publish last wrote it: two generations
whose ids agree for a day hold the same rows for it, so the catch-up copies exactly the days
that differ, whatever the generations' history (one publish behind, several, or a publish
killed after it wrote its generation but before the link moved)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import duckdb

from lake.files import fsync_path
from warehouse.tables import existing_tables

GENERATION = ".gen-"
LINK_SUFFIX = ".link-"
PUBLISHED_DAYS = "published_days"
PUBLISHED_DAYS_DDL = (f"CREATE TABLE IF NOT EXISTS {PUBLISHED_DAYS} "
                      "(partition_date DATE, publish_id VARCHAR, published_at TIMESTAMP WITH TIME ZONE)")


def current(path: Path) -> Path | None:
    """The file readers open now: the link's target, or the path itself for a warehouse
    published before generations (a plain file); None before the first publish."""
    if path.is_symlink():
        return path.parent / os.readlink(path)
    return path if path.exists() else None


def generations(path: Path) -> list[Path]:
    """Every generation file beside the path, oldest first."""
    pattern = re.compile(re.escape(path.name + GENERATION) + r"(\d+)$")
    found = [(int(m.group(1)), p) for p in path.parent.glob(path.name + GENERATION + "*")
             if (m := pattern.match(p.name))]
    return [p for _, p in sorted(found)]


def next_generation(path: Path) -> Path:
    existing = generations(path)
    number = int(existing[-1].name.rsplit(GENERATION, 1)[1]) + 1 if existing else 1
    return path.with_name(f"{path.name}{GENERATION}{number:06d}")


def open_writable(path: Path, now: Path | None, progress) -> tuple[Path, duckdb.DuckDBPyConnection, bool]:
    """(the generation to write, a connection to it, whether it must be caught up with `now`).
    The newest earlier generation when it can be opened for writing, else a copy of `now`
    (or a new file before the first publish)."""
    earlier = [g for g in generations(path) if now is None or g.resolve() != now.resolve()]
    if now is not None and now != path and earlier:  # (a plain file of an older version is copied once)
        try:
            return earlier[-1], duckdb.connect(str(earlier[-1])), True
        except duckdb.IOException as exc:  # a reader still holds it: it stays as it is for them
            progress(f"publish: {earlier[-1].name} is still open elsewhere ({str(exc).splitlines()[0]}); "
                     "copying the current warehouse instead")
    work = next_generation(path)
    Path(str(work) + ".wal").unlink(missing_ok=True)
    if now is not None:
        shutil.copyfile(now, work)
    return work, duckdb.connect(str(work)), False


def catch_up(con: duckdb.DuckDBPyConnection, now: Path, tables: tuple[str, ...], whole: tuple[str, ...],
             column: str) -> int:
    """Make the generation `con` writes equal the current one `now`: the partitions of `tables`
    whose `published_days` entry differs, and `whole` tables entirely (a table `now` lacks is
    emptied). Rows copied."""
    con.execute(f"ATTACH '{_quoted(now)}' AS now_gen (READ_ONLY)")
    try:
        there = existing_tables(con, "now_gen")
        if PUBLISHED_DAYS not in there:
            raise ValueError(f"{now} has no {PUBLISHED_DAYS} table")
        con.execute(f"""
            CREATE TEMP TABLE _stale AS
            SELECT coalesce(n.partition_date, o.partition_date) AS day
            FROM now_gen.{PUBLISHED_DAYS} n FULL JOIN {PUBLISHED_DAYS} o USING (partition_date)
            WHERE n.publish_id IS DISTINCT FROM o.publish_id""")
        copied = 0
        for table in tables:
            if table not in there:  # (a table the current generation's version did not have: emptied)
                con.execute(f"DELETE FROM {table}")
                continue
            con.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT day FROM _stale)")
            copied += con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM now_gen.{table} "
                                  f"WHERE {column} IN (SELECT day FROM _stale)").fetchone()[0]
        for table in (*whole, PUBLISHED_DAYS):
            con.execute(f"DELETE FROM {table}")
            if table in there:
                copied += con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM now_gen.{table}").fetchone()[0]
        con.execute("DROP TABLE _stale")
        return copied
    finally:
        con.execute("DETACH now_gen")


def point_at(path: Path, generation: Path) -> None:
    """Make the path name the generation: a new link renamed over the old one (or over a plain
    warehouse file published before generations)."""
    link = path.with_name(f"{path.name}{LINK_SUFFIX}{os.getpid()}")
    link.unlink(missing_ok=True)
    os.symlink(generation.name, link)
    os.replace(link, path)
    fsync_path(path.parent)


def remove_stale(path: Path, keep: tuple[Path, ...]) -> None:
    """Generations other than `keep`, and links a killed publisher left. A reader that still
    has one open keeps reading it (the file goes when it closes)."""
    kept = {k.resolve() for k in keep}
    for generation in generations(path):
        if generation.resolve() not in kept:
            generation.unlink(missing_ok=True)
            Path(str(generation) + ".wal").unlink(missing_ok=True)
    for link in path.parent.glob(path.name + LINK_SUFFIX + "*"):
        link.unlink(missing_ok=True)


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")
