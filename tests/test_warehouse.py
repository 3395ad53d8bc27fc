"""The DuckDB warehouse on real files and real processes: publish mirrors the lake, is
idempotent and atomic (readers in another process see whole states only; a publisher killed
mid-way leaves the last published state and the next publish succeeds); the analyst views
agree with the generator's ground truth; `journeys query` is read-only."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from tests.warehouse_sample import DAYS, JOURNEY, LAST
from lake import open_snapshot
from warehouse.generations import current, generations
from warehouse.publish import NothingToPublish, publish
from warehouse.tables import ALL_TABLES, MIRRORED, PARTITION_COLUMN
from warehouse.views import VIEWS

REPO = Path(__file__).resolve().parents[1]


def quiet(_):
    pass


def snapshot(path) -> dict[str, list]:
    """Every table's rows, sorted: what 'identical tables' compares."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}").fetchall())) for t in ALL_TABLES}
    finally:
        con.close()


def rows(path, sql):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_publish_mirrors_every_lake_partition(sample, tmp_path):
    data, lake_dir = sample
    warehouse = tmp_path / "w.duckdb"
    for day in DAYS:
        publish(lake_dir, warehouse, [day], [JOURNEY], progress=quiet)
    for table, (lake_table, schema) in MIRRORED.items():
        for day in DAYS:
            expected = open_snapshot(lake_dir).read(lake_table, [day])
            got = rows(warehouse, f"SELECT count(*) FROM {table} WHERE {PARTITION_COLUMN} = '{day}'")[0][0]
            assert got == expected.num_rows, (table, day)
    assert rows(warehouse, "SELECT count(*), count(DISTINCT event_id) FROM events")[0] == (
        sum(open_snapshot(lake_dir).read("events", [d]).num_rows for d in DAYS),) * 2
    assert rows(warehouse, "SELECT stage FROM journey_maps ORDER BY stage_index") == [(s,) for s in JOURNEY.stage_ids]
    assert rows(warehouse, "SELECT count(*) FROM alerts") == [(0,)]
    assert [g.name for g in generations(warehouse)] == ["w.duckdb.gen-000001", "w.duckdb.gen-000002"]


def test_views_agree_with_the_ground_truth(sample, tmp_path):
    data, lake_dir = sample
    warehouse = tmp_path / "w.duckdb"
    publish(lake_dir, warehouse, DAYS, [JOURNEY], progress=quiet)
    customers = pq.read_table(data / "ground_truth" / "customers.parquet").to_pylist()
    reached = {s: sum(c[f"entered_{s}"] is not None for c in customers) for s in JOURNEY.stage_ids}
    funnel = rows(warehouse, f"SELECT stage, reached, reached_next, drop_off_rate FROM funnel WHERE date = '{LAST}'"
                             " ORDER BY stage_index")
    assert {stage: n for stage, n, _, _ in funnel} == reached
    ids = JOURNEY.stage_ids
    for stage, n, reached_next, rate in funnel:  # went on: entered a later stage of the map afterwards
        k = ids.index(stage)
        went_on = sum(c[f"entered_{stage}"] is not None and any(
            c[f"entered_{s}"] is not None and c[f"entered_{s}"] >= c[f"entered_{stage}"] for s in ids[k + 1:])
            for c in customers)
        if k == len(ids) - 1:
            assert reached_next is None and rate is None
        else:
            assert reached_next == went_on and rate == pytest.approx(1 - went_on / n) and 0 <= rate <= 1, stage
    stalled = {r[0] for r in rows(warehouse, "SELECT customer_id FROM stalled_now")}
    assert stalled == {c["customer_key"] for c in customers if c["status"] == "stalled"} and stalled
    # stalls: identified — only customers someone can contact, each with a handle, hours elapsed
    assert not {c for c in stalled if c.startswith("anonymous_id:")}
    checks = rows(warehouse, """
        SELECT bool_and(identified), bool_and(coalesce(user_id, email, phone) IS NOT NULL),
               max(abs(hours_in_stage - epoch(CAST(as_of_date + 1 AS TIMESTAMPTZ) - since) / 3600)),
               bool_or(hours_in_stage <> floor(hours_in_stage))
        FROM stalled_now""")
    assert checks[0][:2] == (True, True) and checks[0][2] < 1e-6 and checks[0][3]
    assert rows(warehouse, "SELECT sum(customers) FROM journey_paths") == [(len(customers),)]
    deviating = {d["customer_key"] for d in pq.read_table(data / "ground_truth" / "deviations.parquet").to_pylist()
                 if d["kind"] in ("backtrack", "skipped_stage", "out_of_order")}
    off_path = rows(warehouse, "SELECT sum(customers) FROM journey_paths WHERE NOT follows_map")[0][0] or 0
    assert off_path == len(deviating) and deviating
    paths = rows(warehouse, "SELECT path FROM journey_paths WHERE NOT follows_map")
    assert all(" > back to " in p or " > skipped " in p or " > late " in p for p, in paths)
    for name in VIEWS:
        assert rows(warehouse, f"SELECT count(*) FROM {name}")[0][0] > 0, name


def test_publishing_a_day_twice_gives_identical_tables(sample, tmp_path):
    _, lake_dir = sample
    warehouse = tmp_path / "w.duckdb"
    publish(lake_dir, warehouse, DAYS[:3], [JOURNEY], progress=quiet)
    once = snapshot(warehouse)
    publish(lake_dir, warehouse, [DAYS[2]], [JOURNEY], progress=quiet)
    assert snapshot(warehouse) == once


def test_a_range_at_once_equals_its_days_one_by_one(sample, tmp_path):
    _, lake_dir = sample
    at_once, by_day = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    publish(lake_dir, at_once, DAYS, [JOURNEY], progress=quiet)
    for day in DAYS:
        publish(lake_dir, by_day, [day], [JOURNEY], progress=quiet)
    assert snapshot(at_once) == snapshot(by_day)


def test_a_day_the_lake_does_not_have_is_an_error(sample, tmp_path):
    _, lake_dir = sample
    with pytest.raises(NothingToPublish, match="has nothing committed for 2030-01-01"):
        publish(lake_dir, tmp_path / "w.duckdb", [DAYS[0], DAYS[0].replace(year=2030, month=1, day=1)], progress=quiet)
    assert not (tmp_path / "w.duckdb").exists()


READER = textwrap.dedent("""
    import json, sys, time, duckdb
    path, stop, out = sys.argv[1:]
    seen = []
    while True:
        done = __import__("os").path.exists(stop)
        try:
            con = duckdb.connect(path, read_only=True)
        except duckdb.Error:
            seen.append(None)  # not published yet
        else:
            seen.append(con.execute(
                "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM journeys), (SELECT count(*) FROM runs),"
                " (SELECT CAST(max(partition_date) AS VARCHAR) FROM events)").fetchone())
            con.close()
        if done:
            break
    json.dump(seen, open(out, "w"))
""")


def test_readers_in_another_process_see_whole_states_only(sample, tmp_path):
    _, lake_dir = sample
    warehouse, stop, out = tmp_path / "w.duckdb", tmp_path / "stop", tmp_path / "seen.json"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(warehouse), str(stop), str(out)])
    states = [None]
    try:
        for day in DAYS:
            publish(lake_dir, warehouse, [day], [JOURNEY], progress=quiet)
            states.append(tuple(rows(warehouse, "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM journeys),"
                                     " (SELECT count(*) FROM runs), (SELECT CAST(max(partition_date) AS VARCHAR)"
                                     " FROM events)")[0]))
            time.sleep(0.2)
    finally:
        stop.touch()
        assert reader.wait(timeout=60) == 0
    seen = [tuple(s) if s else None for s in json.loads(out.read_text())]
    assert len(seen) > len(DAYS) and set(seen) <= set(states)
    assert seen[-1] == states[-1]


KILLED = textwrap.dedent("""
    import sys, time
    from datetime import date
    from warehouse.publish import publish
    lake_dir, warehouse, marker = sys.argv[1:4]
    days = [date.fromisoformat(d) for d in sys.argv[4:]]

    def progress(message):
        if message.startswith("publish"):
            open(marker, "w").close()
            time.sleep(600)  # killed here: inside the transaction, partitions half replaced

    publish(lake_dir, warehouse, days, progress=progress)
""")


def test_a_publisher_killed_mid_way_leaves_the_last_state_and_the_next_one_succeeds(sample, tmp_path):
    _, lake_dir = sample
    warehouse, marker = tmp_path / "w.duckdb", tmp_path / "marker"
    publish(lake_dir, warehouse, DAYS[:2], [JOURNEY], progress=quiet)
    before = snapshot(warehouse)
    child = subprocess.Popen([sys.executable, "-c", KILLED, lake_dir, str(warehouse), str(marker),
                              *(d.isoformat() for d in DAYS[2:])], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the publisher never got going"
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    left = [g for g in generations(warehouse) if g != current(warehouse)]
    assert left, "the killed publisher's generation should be left behind, unseen"
    assert snapshot(warehouse) == before
    publish(lake_dir, warehouse, DAYS[2:], [JOURNEY], progress=quiet)
    assert len(generations(warehouse)) == 2  # the current one and the one before, for the next publish
    fresh = tmp_path / "fresh.duckdb"
    publish(lake_dir, fresh, DAYS, [JOURNEY], progress=quiet)
    assert snapshot(warehouse) == snapshot(fresh)


def test_query_formats_and_read_only(sample, tmp_path, capsysbinary):
    _, lake_dir = sample
    warehouse = tmp_path / "w.duckdb"
    publish(lake_dir, warehouse, DAYS, [JOURNEY], progress=quiet)
    sql = "SELECT stage, reached FROM funnel WHERE date = (SELECT max(date) FROM funnel) ORDER BY stage_index"
    expected = rows(warehouse, sql)
    assert main(["query", sql, "--warehouse", str(warehouse), "--format", "json"]) == 0
    assert [(r["stage"], r["reached"]) for r in json.loads(capsysbinary.readouterr().out)] == expected
    assert main(["query", sql, "--warehouse", str(warehouse), "--format", "csv"]) == 0
    lines = capsysbinary.readouterr().out.decode().splitlines()
    assert lines[0] == '"stage","reached"' and len(lines) == len(expected) + 1
    assert main(["query", sql, "--warehouse", str(warehouse), "--format", "parquet", "--out", str(tmp_path / "r.pq")]) == 0
    assert pq.read_table(tmp_path / "r.pq").to_pylist() == [{"stage": s, "reached": n} for s, n in expected]
    assert main(["query", sql, "--warehouse", str(warehouse)]) == 0
    text = capsysbinary.readouterr().out.decode()
    assert f"({len(expected)} rows)" in text and expected[0][0] in text
    before = snapshot(warehouse)
    assert main(["query", "DELETE FROM events", "--warehouse", str(warehouse)]) == 2
    assert "read-only" in capsysbinary.readouterr().err.decode()
    assert snapshot(warehouse) == before
    assert main(["query", "SELECT 1", "--warehouse", str(tmp_path / "none.duckdb")]) == 2
    assert "no warehouse at" in capsysbinary.readouterr().err.decode()
