"""One writer per lake: two `journeys nightly` for different days started together on one
data directory do not interleave — the second waits, saying who holds the lake, and the
lake and warehouse come out exactly as the two nights run one after the other; a writer that
cannot wait (--lock-timeout) fails in one line naming the holder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from flows.night import run_night
from flows.options import NightOptions
from tests.reliability.harness import (
    DAYS, JOURNEYS, REPO, copy_tree, generate_sample, journeys, lake_content, uncommitted_leftovers, warehouse_content,
)

HOLD = """
import sys, time
from lake import writer_lock
with writer_lock(sys.argv[1], command="a long backfill"):
    print("held", flush=True)
    time.sleep(120)
"""


def nightly(data, day) -> subprocess.Popen:
    return subprocess.Popen([JOURNEYS, "nightly", "--date", day.isoformat(), "--data", str(data), "--journey",
                             "subscription", "--buckets", "2"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_holder(lake, pid: int, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()[-3000:]
        try:
            if json.loads((lake / "_lock").read_text() or "{}").get("pid") == pid:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError("the first nightly never took the lake's lock")


def test_two_nightlies_started_together_equal_the_serial_runs(tmp_path):
    base = generate_sample(tmp_path / "base")
    together = copy_tree(base, tmp_path / "together" / "data")
    first = nightly(together, DAYS[0])
    wait_for_holder(together / "lake", first.pid, first)
    second = nightly(together, DAYS[1])  # started while the first one writes
    out_first, _ = first.communicate(timeout=600)
    out_second, _ = second.communicate(timeout=600)
    assert first.returncode == 0, out_first[-3000:]
    assert second.returncode == 0, out_second[-3000:]
    assert f"is being written by pid {first.pid}" in out_second and "waiting" in out_second

    serial = copy_tree(base, tmp_path / "serial" / "data")
    for day in DAYS[:2]:
        run_night(NightOptions(data_dir=str(serial), journeys=("subscription",), n_buckets=2), day,
                  progress=lambda _: None)
    assert lake_content(together / "lake") == lake_content(serial / "lake")
    assert warehouse_content(together / "warehouse.duckdb") == warehouse_content(serial / "warehouse.duckdb")
    assert uncommitted_leftovers(together / "lake") == []


def test_a_writer_that_cannot_wait_fails_in_one_line_naming_the_holder(tmp_path):
    data = generate_sample(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(data / "lake")], stdout=subprocess.PIPE, text=True,
                              env={**os.environ})
    try:
        assert holder.stdout.readline().strip() == "held"
        began = time.monotonic()
        done = journeys("run", "--date", DAYS[0].isoformat(), "--data", str(data), "--journey", "subscription",
                        "--lock-timeout", "1")
        assert done.returncode == 1, done.stderr[-3000:]
        lines = [line for line in done.stderr.splitlines() if line.startswith("journeys run:")]
        assert len(lines) == 1 and f"is being written by pid {holder.pid}" in lines[0] and "a long backfill" in lines[0]
        assert "waited 1 s" in lines[0] and time.monotonic() - began < 30
        assert not (data / "lake" / "_state.json").exists()
    finally:
        holder.kill()
        holder.wait()
