"""Atomic means a crash at any instant leaves the last committed state: `journeys run` is
killed (SIGKILL, from inside, at a named point: lake/crash.py) at every phase boundary —
parse, staging writes, the end of staging, the gate, each step of the lake commit, cleanup,
the warehouse generation opened, written and linked — and then

* the lake's committed content and the warehouse equal the last committed state: the state
  before the run for a crash before the commit record's rename, the run's own after it (the
  warehouse is the old generation, byte for byte, until its link is renamed);
* a day whose commit never happened cannot be published;
* a rerun leaves nothing behind and equals a clean run, table by table, lake and warehouse.

The scenario re-ingests the last committed day with the new one (`--from`), so the commit
supersedes partitions and the cleanup step has something to remove."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from flows.night import run_night
from flows.options import NightOptions
from lake.crash import CRASH_ENV, POINTS
from warehouse.generations import generations
from tests.reliability.harness import (
    DAYS, copy_tree, digest, generate_sample, journeys, lake_content, run_day, uncommitted_leftovers, warehouse_content,
)

BEFORE_COMMIT = ("parse", "staging", "staged", "gate", "commit-record")
"""Points before the commit record's rename: the lake must still be the previous state."""
BEFORE_PUBLISH = BEFORE_COMMIT + ("commit-renamed", "cleanup", "publish-copy", "publish-written")
"""Points before the warehouse's link is renamed: it must show the previous generation, byte for byte."""
NEW_DAY, FROM_DAY = DAYS[2], DAYS[1]


def tonight(data, env=None):
    return run_day(data, NEW_DAY, "--from", FROM_DAY.isoformat(), env=env)


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    """(the sample with days 1-2 committed and published, and a copy with day 3 run cleanly)."""
    root = tmp_path_factory.mktemp("crash")
    data = generate_sample(root / "base")
    for day in DAYS[:2]:  # in this process: the same sequence as `journeys run`, without its start-up
        run_night(options(data), day, progress=lambda _: None)
    clean = copy_tree(data, root / "clean" / "data")
    run_night(options(clean), NEW_DAY, (FROM_DAY, NEW_DAY), progress=lambda _: None)
    return data, clean


def options(data) -> NightOptions:
    return NightOptions(data_dir=str(data), journeys=("subscription",), n_buckets=2)


@pytest.fixture(scope="module")
def crashed(committed, tmp_path_factory):
    """Every crash point run on its own copy (two at a time: the machine has two cores), each
    followed by what a person would do next: try to publish it, then run the night again."""
    data, _ = committed
    root = tmp_path_factory.mktemp("crashed")

    def scenario(point: str) -> dict:
        copy = copy_tree(data, root / point / "data")
        crash = tonight(copy, {CRASH_ENV: point})
        after = {"lake": lake_content(copy / "lake"), "warehouse_digest": digest(copy / "warehouse.duckdb"),
                 "warehouse": warehouse_content(copy / "warehouse.duckdb")}
        publish = journeys("publish", "--date", NEW_DAY.isoformat(), "--data", str(copy), "--journey", "subscription")
        rerun = tonight(copy)
        return {"crash": crash, "after": after, "publish": publish, "rerun": rerun, "data": copy}

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(POINTS, pool.map(scenario, POINTS)))


@pytest.mark.parametrize("point", list(POINTS))
def test_a_crash_leaves_the_last_committed_state_and_a_rerun_equals_a_clean_run(committed, crashed, point):
    data, clean = committed
    outcome = crashed[point]
    assert outcome["crash"].returncode == -9, f"{point} was not reached: {outcome['crash'].stderr[-2000:]}"
    after = outcome["after"]
    if point in BEFORE_COMMIT:
        assert after["lake"] == lake_content(data / "lake")
        assert outcome["publish"].returncode == 2 and "has nothing committed for" in outcome["publish"].stderr
    else:
        assert after["lake"] == lake_content(clean / "lake")
    if point in BEFORE_PUBLISH:
        assert after["warehouse_digest"] == digest(data / "warehouse.duckdb")
    else:
        assert after["warehouse"] == warehouse_content(clean / "warehouse.duckdb")
    rerun = outcome["rerun"]
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    copy = outcome["data"]
    assert uncommitted_leftovers(copy / "lake") == []
    assert len(generations(copy / "warehouse.duckdb")) == 2  # the current one and the one before, no leftover
    assert lake_content(copy / "lake") == lake_content(clean / "lake")
    assert warehouse_content(copy / "warehouse.duckdb") == warehouse_content(clean / "warehouse.duckdb")
