"""The lake: run folders, the commit record that makes a run's partitions current together,
scopes (a run replaces only its journeys' and sources' partitions), garbage collection and
the one-writer lock, on real files and processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lake import (
    LakeBusy, LakeConflict, LakeError, RunFolder, collect_garbage, commit, open_snapshot, owned_partitions, read_state,
    writer_lock,
)
from lake.files import write_table
from lake.lock import holder
from transforms.manifest import build_manifest, problems

DAY = date(2026, 1, 5)
QUIET = lambda _: None  # noqa: E731


def stage(root: str, run_id: str, rows: dict[tuple[str, str], list[int]]) -> RunFolder:
    """A run folder with one part per (table, scope): column x holds the given values."""
    folder = RunFolder(root, run_id)
    for (table, scope), values in rows.items():
        write_table(folder.part_path(table, DAY, scope, "p"), pa.table({"x": values}))
    return folder


def committed(root: str, table: str, scopes=None) -> list[int]:
    snapshot = open_snapshot(root)
    return sorted(x for f in snapshot.files(table, DAY, scopes) for x in pq.read_table(f)["x"].to_pylist())


def commit_run(folder: RunFolder, journeys, sources) -> None:
    with writer_lock(folder.root, progress=QUIET):
        owned = owned_partitions(folder.run_id, DAY, [DAY], journeys, sources)
        commit(folder, {"as_of": DAY.isoformat()}, owned, read_state(folder.root).version)


def test_a_run_replaces_only_its_own_journeys_and_sources(tmp_path):
    root = str(tmp_path / "lake")
    a = stage(root, "run-a", {("journeys", "alpha"): [1], ("events", "web"): [10], ("events", "phone"): [20]})
    commit_run(a, ["alpha"], ["web", "phone"])
    b = stage(root, "run-b", {("journeys", "beta"): [2], ("events", "web"): [11]})
    commit_run(b, ["beta"], ["web"])
    assert committed(root, "journeys") == [1, 2]  # running beta left alpha alone
    assert committed(root, "events", ["web"]) == [11] and committed(root, "events", ["phone"]) == [20]
    assert not os.path.exists(a.partition_dir("events", DAY, "web"))  # superseded: removed
    assert os.path.exists(a.partition_dir("journeys", DAY, "alpha"))
    state = read_state(root)
    assert state.version == 2 and set(state.runs) == {"run-a", "run-b"}


def test_a_rerun_with_fewer_rows_clears_what_it_owns(tmp_path):
    root = str(tmp_path / "lake")
    commit_run(stage(root, "run-1", {("journeys", "alpha"): [1], ("deviations", "alpha"): [5]}), ["alpha"], [])
    commit_run(stage(root, "run-2", {("journeys", "alpha"): [1]}), ["alpha"], [])
    assert committed(root, "deviations") == []  # owned by run-2, which found none
    assert read_state(root).scopes("deviations", DAY) == {"alpha": "run-2"}
    assert set(read_state(root).runs) == {"run-2"} and not os.path.exists(RunFolder(root, "run-1").path)


def test_a_run_kept_only_by_its_checks_is_dropped_with_them(tmp_path):
    root = str(tmp_path / "lake")
    commit_run(stage(root, "run-1", {("journeys", "alpha"): [1], ("checks", "run-1"): [7]}), ["alpha"], [])
    commit_run(stage(root, "run-2", {("journeys", "alpha"): [2], ("checks", "run-2"): [8]}), ["alpha"], [])
    assert read_state(root).scopes("checks", DAY) == {"run-2": "run-2"}


def test_commit_needs_the_lock_and_refuses_a_lake_that_moved(tmp_path):
    root = str(tmp_path / "lake")
    folder = stage(root, "run-1", {("journeys", "alpha"): [1]})
    owned = owned_partitions("run-1", DAY, [DAY], ["alpha"], [])
    with pytest.raises(RuntimeError, match="without holding its writer lock"):
        commit(folder, {}, owned, 0)
    commit_run(stage(root, "run-0", {("journeys", "alpha"): [0]}), ["alpha"], [])
    with writer_lock(root, progress=QUIET), pytest.raises(LakeConflict, match="changed while run run-1 was staging"):
        commit(folder, {}, owned, 0)  # it read version 0; version 1 came in between
    assert read_state(root).scopes("journeys", DAY) == {"alpha": "run-0"}


def test_garbage_collection_removes_what_no_commit_points_at(tmp_path):
    root = str(tmp_path / "lake")
    commit_run(stage(root, "run-1", {("journeys", "alpha"): [1]}), ["alpha"], [])
    crashed = stage(root, "run-crashed", {("journeys", "alpha"): [9]})
    (tmp_path / "lake" / "_runs" / "run-empty").mkdir()
    (tmp_path / "lake" / "_state.json.tmp-123").write_text("{}")
    assert collect_garbage(root, read_state(root), keep=("run-empty",)) == 2
    assert not os.path.exists(crashed.path) and os.path.exists(tmp_path / "lake" / "_runs" / "run-empty")
    assert not (tmp_path / "lake" / "_state.json.tmp-123").exists()
    assert os.path.exists(RunFolder(root, "run-1").path)


def test_a_lake_of_the_earlier_layout_is_refused_with_one_line(tmp_path):
    (tmp_path / "lake" / "events" / "date=2026-01-05").mkdir(parents=True)
    with pytest.raises(LakeError, match="a lake written by an earlier version.*journeys backfill"):
        open_snapshot(str(tmp_path / "lake"))


HOLD = """
import sys, time
from lake import writer_lock
with writer_lock(sys.argv[1], command="holder-test"):
    print("held", flush=True)
    time.sleep(60)
"""


def hold(root: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, root], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_writer_waits_says_who_holds_the_lake_and_gives_up_at_the_timeout(tmp_path):
    root = str(tmp_path / "lake")
    child = hold(root)
    said = []
    try:
        began = time.monotonic()
        with pytest.raises(LakeBusy, match=f"pid {child.pid} on .*holder-test.*waited 1 s"):
            with writer_lock(root, timeout=1, progress=said.append):
                pass
        assert time.monotonic() - began >= 1
        assert said and f"pid {child.pid}" in said[0] and "waiting up to 1 s" in said[0]
    finally:
        child.kill()
        child.wait()


def test_a_killed_writers_lock_is_taken_over_and_reported(tmp_path):
    root = str(tmp_path / "lake")
    child = hold(root)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert holder(root)["pid"] == child.pid  # the record is left behind, the kernel lock is not
    said = []
    with writer_lock(root, timeout=0, progress=said.append):
        assert holder(root)["pid"] == os.getpid()
    assert any(f"pid {child.pid}" in s and "died without releasing" in s for s in said)
    assert holder(root) is None  # released cleanly: nothing left to report


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    root = str(tmp_path / "lake")
    with writer_lock(root, timeout=0, progress=QUIET):
        with writer_lock(root, timeout=0, progress=QUIET):
            pass
        assert json.loads((tmp_path / "lake" / "_lock").read_text())["pid"] == os.getpid()


def test_manifest_balances_only_when_every_record_is_accounted_for():
    files = [pa.table({"source": ["web"] * 4, "source_file": ["a", "b", "c.txt", "d.csv"],
                       "source_date": pa.array([DAY] * 4), "records": [10, 5, 0, 3], "parsed_events": [9, 5, 0, 0],
                       "bad_rows": [1, 0, 0, 0], "status": ["read", "read", "skipped", "failed"],
                       "reason": [None, None, "matches no source path: expected web/{date}/*.jsonl",
                                  "no column 'call_id' (the phone spec's event_id); the header has caller_number"]})]
    dups = [pa.table({"source_file": ["a"], "n_duplicates": [2]})]
    written = [pa.table({"source_file": ["a", "b"], "n_events": [7, 4]})]
    table = build_manifest("r1", DAY, files, dups, written)
    manifest = table.to_pylist()
    assert [(m["source_file"], m["events"], m["duplicates"], m["balanced"], m["status"]) for m in manifest] == [
        ("a", 7, 2, True, "read"),
        ("b", 4, 0, False, "read"),  # b lost a record somewhere: flagged
        ("c.txt", 0, 0, True, "skipped"),  # listed with its reason, nothing to account for
        ("d.csv", 0, 0, False, "failed"),  # never balanced: the run must stop
    ]
    assert [m["reason"] for m in manifest][2:] == [files[0]["reason"][2].as_py(), files[0]["reason"][3].as_py()]
    assert problems(table) == [
        "d.csv: failed: no column 'call_id' (the phone spec's event_id); the header has caller_number",
        "b: 5 records != 4 events + 0 bad rows + 0 duplicates",
    ]
    assert problems(table.slice(0, 1)) == []
