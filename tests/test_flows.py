"""The Prefect flows run through Prefect (its test harness: a real temporary API server):
a backfill equals the nightly runs of the same days; a publish blocked by another publisher
fails transiently and succeeds on retry; broken input fails at once, without retries, and
publishes nothing."""
from __future__ import annotations

import fcntl
import shutil
import threading
import time
from pathlib import Path

import duckdb
import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.nightly import backfill, nightly
from flows.options import NightOptions
from tests.warehouse_sample import DAYS
from warehouse.tables import ALL_TABLES


def options(data: str, **overrides) -> NightOptions:
    return NightOptions(data_dir=data, journeys=("subscription",), n_buckets=4, retry_delay_seconds=0.5, **overrides)


@pytest.fixture(scope="module", autouse=True)
def prefect():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def content(path) -> dict[str, list]:
    """Every table's rows, sorted, without run ids (each run draws a new one)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {}
        for table in ALL_TABLES:
            columns = [c for c, in con.execute(f"SELECT column_name FROM information_schema.columns "
                                               f"WHERE table_name = '{table}' ORDER BY ordinal_position").fetchall()
                       if c != "run_id"]
            out[table] = sorted(map(repr, con.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()))
        return out
    finally:
        con.close()


def fresh_data(sample, tmp_path, name):
    """The sample's raw files in a folder of their own (its lake, warehouse and validation
    results go beside them)."""
    data, _ = sample
    target = tmp_path / name
    shutil.copytree(data, target, ignore=shutil.ignore_patterns("lake", "validation", "warehouse.duckdb*"))
    return str(target)


def test_a_backfill_equals_the_nightly_runs_of_the_same_days(sample, tmp_path):
    days = DAYS[:3]
    by_night = fresh_data(sample, tmp_path, "nightly")
    for day in days:
        result = nightly(day, options(by_night))
        assert result["publish"]["attempts"] == 1
    at_once = fresh_data(sample, tmp_path, "backfill")
    results = backfill(days[0], days[-1], options(at_once))
    assert [r["date"] for r in results] == [d.isoformat() for d in days]
    assert content(f"{at_once}/warehouse.duckdb") == content(f"{by_night}/warehouse.duckdb")


def test_a_busy_warehouse_is_retried_until_the_publish_succeeds(sample, tmp_path):
    data = fresh_data(sample, tmp_path, "busy")
    lock_path = f"{data}/warehouse.duckdb.lock"
    held, release = threading.Event(), threading.Event()

    def other_publisher():
        with open(lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            held.set()
            release.wait(60)
            fcntl.flock(lock, fcntl.LOCK_UN)

    def finish_after_the_commit():  # the other publisher lets go ~2.5 s after our publish starts waiting
        committed = Path(data) / "lake" / "_state.json"
        deadline = time.monotonic() + 300
        while not committed.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.5)
        release.set()

    holder = threading.Thread(target=other_publisher)
    holder.start()
    held.wait(10)
    threading.Thread(target=finish_after_the_commit, daemon=True).start()
    try:
        result = nightly(DAYS[0], options(data, lock_timeout=0.5))
    finally:
        release.set()
        holder.join()
    assert result["publish"]["attempts"] >= 2
    con = duckdb.connect(f"{data}/warehouse.duckdb", read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM runs").fetchall() == [(1,)]
    finally:
        con.close()


def test_broken_input_fails_at_once_and_publishes_nothing(sample, tmp_path):
    data = fresh_data(sample, tmp_path, "broken")
    began = time.monotonic()
    state = nightly(DAYS[0], options(data, bad_row_threshold=0.0), return_state=True)
    assert state.is_failed()
    assert "bad-row share" in str(state.result(raise_on_failure=False))
    assert not (tmp_path / "broken" / "warehouse.duckdb").exists()
    assert time.monotonic() - began < 60


def test_only_transient_failures_are_retried():
    import errno

    from expectations.gate import GateFailed
    from flows.night import is_transient
    from flows.notify import NotifyFailed
    from journey_defs.config_yaml import ConfigError
    from lake import LakeBusy, LakeConflict
    from pipelines.journey_pipeline import RunFailed
    from warehouse.publish import NothingToPublish, WarehouseBusy

    never = [ConfigError("j.yaml", 3, "stages", "bad"), RunFailed("unbalanced"), GateFailed("failed", None),
             NothingToPublish("nothing"), ValueError("bad date"), LakeConflict("moved"), RuntimeError("a bug"),
             PermissionError(errno.EACCES, "Permission denied", "/lake"),
             OSError(errno.ENOSPC, "No space left on device", "/lake"), FileNotFoundError(errno.ENOENT, "gone", "/x")]
    again = [LakeBusy("busy"), WarehouseBusy("busy"), NotifyFailed("down"), ConnectionResetError("reset"),
             OSError(errno.ETIMEDOUT, "Connection timed out", "gs://bucket/raw")]
    assert [is_transient(e) for e in never] == [False] * len(never)
    assert [is_transient(e) for e in again] == [True] * len(again)
