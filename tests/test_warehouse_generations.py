"""Publishing the night, not the warehouse (warehouse.generations): a publish writes the
generation before the current one, caught up by the days that differ, instead of copying the
whole file — and still equals a fresh publish of the same days, whatever happened between:
republished days, a reader holding the older generation open, a publisher killed after it
wrote its generation but before the link moved, a warehouse of the previous version (a
plain file)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb

from lake.crash import CRASH_ENV
from tests.test_warehouse import REPO, quiet, rows, snapshot
from tests.warehouse_sample import DAYS, JOURNEY
from warehouse.generations import current, generations
from warehouse.publish import publish


def publish_logged(lake_dir, warehouse, days) -> list[str]:
    messages: list[str] = []
    publish(lake_dir, warehouse, days, [JOURNEY], progress=messages.append)
    return messages


def fresh(lake_dir, tmp_path, days) -> dict:
    warehouse = tmp_path / "fresh" / "w.duckdb"
    publish(lake_dir, warehouse, days, [JOURNEY], progress=quiet)
    return snapshot(warehouse)


def caught_up_rows(messages: list[str]) -> int | None:
    found = [int(m.group(1).replace(",", "")) for m in map(re.compile(r"caught up .*\(([\d,]+) rows\)").search, messages)
             if m]
    return found[0] if found else None


def day_rows(warehouse, day) -> int:
    """Rows of one partition day over every mirrored table and the alerts' summaries of it, plus
    the tables copied whole (the maps, the alerts and where their replay stopped) and the
    publish log."""
    from warehouse.alert_counts import SUMMARY_TABLES
    from warehouse.publish import CAUGHT_UP_WHOLE
    from warehouse.tables import MIRRORED

    count = sum(rows(warehouse, f"SELECT count(*) FROM {t} WHERE partition_date = '{day}'")[0][0]
                for t in (*MIRRORED, *SUMMARY_TABLES))
    return count + sum(rows(warehouse, f"SELECT count(*) FROM {t}")[0][0] for t in (*CAUGHT_UP_WHOLE, "published_days"))


def test_a_night_writes_the_generation_before_with_only_the_rows_published_since(sample, tmp_path):
    _, lake_dir = sample
    warehouse = tmp_path / "w.duckdb"
    first = publish_logged(lake_dir, warehouse, DAYS[:1])
    assert warehouse.is_symlink() and caught_up_rows(first) is None  # the first generation: a new file
    second = publish_logged(lake_dir, warehouse, DAYS[1:2])
    assert caught_up_rows(second) is None  # nothing before the first generation: a copy, once
    assert [g.name for g in generations(warehouse)] == ["w.duckdb.gen-000001", "w.duckdb.gen-000002"]
    for n, day in enumerate(DAYS[2:], start=2):
        before = current(warehouse)
        expected = day_rows(warehouse, DAYS[n - 1])  # what the generation before lacks: the last night
        messages = publish_logged(lake_dir, warehouse, [day])
        assert caught_up_rows(messages) == expected, messages
        assert current(warehouse) != before and len(generations(warehouse)) == 2  # the older one, reused
    assert snapshot(warehouse) == fresh(lake_dir, tmp_path, DAYS)


def test_republished_days_and_ranges_catch_up_exactly(sample, tmp_path):
    _, lake_dir = sample
    warehouse = tmp_path / "w.duckdb"
    for days in ([DAYS[0]], [DAYS[1]], [DAYS[0], DAYS[2]], [DAYS[1]], DAYS[3:], [DAYS[0]]):
        publish(lake_dir, warehouse, days, [JOURNEY], progress=quiet)
    assert snapshot(warehouse) == fresh(lake_dir, tmp_path, DAYS)


HOLD = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1], read_only=True)
    n = con.execute("SELECT count(*) FROM events").fetchone()[0]
    print(n, flush=True)
    while True:
        time.sleep(0.1)
""")


def test_a_reader_holding_the_older_generation_keeps_it_and_the_publish_copies(sample, tmp_path):
    _, lake_dir = sample
    warehouse = tmp_path / "w.duckdb"
    for day in DAYS[:3]:
        publish(lake_dir, warehouse, [day], [JOURNEY], progress=quiet)
    older = next(g for g in generations(warehouse) if g != current(warehouse))
    reader = subprocess.Popen([sys.executable, "-c", HOLD, str(older)], stdout=subprocess.PIPE, text=True)
    try:
        seen = int(reader.stdout.readline())
        messages = publish_logged(lake_dir, warehouse, [DAYS[3]])
        assert any("still open elsewhere" in m for m in messages) and caught_up_rows(messages) is None
        assert reader.poll() is None  # the reader was never disturbed
        assert current(warehouse).name == "w.duckdb.gen-000003"  # a copy of the current one
        assert older.exists() is False  # unlinked: the reader's open file goes when it closes
    finally:
        reader.kill()
        reader.wait()
    assert seen == rows(warehouse, f"SELECT count(*) FROM events WHERE partition_date < '{DAYS[2]}'")[0][0]
    publish(lake_dir, warehouse, DAYS[4:], [JOURNEY], progress=quiet)
    assert snapshot(warehouse) == fresh(lake_dir, tmp_path, DAYS)


KILLED_AFTER_WRITE = textwrap.dedent("""
    import sys
    from datetime import date
    from warehouse.publish import publish
    from tests.warehouse_sample import JOURNEY
    publish(sys.argv[1], sys.argv[2], [date.fromisoformat(d) for d in sys.argv[3:]], [JOURNEY], progress=lambda _: None)
""")


def test_a_publisher_killed_after_writing_its_generation_changes_nothing_readers_see(sample, tmp_path):
    _, lake_dir = sample
    warehouse = tmp_path / "w.duckdb"
    for day in DAYS[:3]:
        publish(lake_dir, warehouse, [day], [JOURNEY], progress=quiet)
    before, shown = snapshot(warehouse), current(warehouse)
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_WRITE, lake_dir, str(warehouse), DAYS[3].isoformat()],
                            cwd=REPO, env={**os.environ, CRASH_ENV: "publish-written"}, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert current(warehouse) == shown and snapshot(warehouse) == before
    # the generation it wrote is ahead of the current one: the next publish of another day undoes it
    publish(lake_dir, warehouse, [DAYS[4]], [JOURNEY], progress=quiet)
    assert rows(warehouse, f"SELECT count(*) FROM events WHERE partition_date = '{DAYS[3]}'") == [(0,)]
    publish(lake_dir, warehouse, [DAYS[3]], [JOURNEY], progress=quiet)
    assert snapshot(warehouse) == fresh(lake_dir, tmp_path, DAYS)


def test_a_plain_warehouse_file_of_the_previous_version_becomes_generations(sample, tmp_path):
    _, lake_dir = sample
    plain = tmp_path / "old" / "w.duckdb"
    publish(lake_dir, plain, DAYS[:2], [JOURNEY], progress=quiet)
    warehouse = tmp_path / "w.duckdb"
    shutil.copyfile(current(plain), warehouse)  # what the previous version left: one plain file
    with duckdb.connect(str(warehouse)) as con:
        con.execute("DROP TABLE published_days")
    assert not warehouse.is_symlink()
    for day in DAYS[2:]:
        publish(lake_dir, warehouse, [day], [JOURNEY], progress=quiet)
        assert warehouse.is_symlink()
    assert snapshot(warehouse) == fresh(lake_dir, tmp_path, DAYS)
