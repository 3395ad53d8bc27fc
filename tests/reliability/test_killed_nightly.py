"""A `journeys nightly` killed mid-flow (SIGKILL at the end of staging) leaves no Prefect
server behind — its temporary server is its child and dies with it — commits nothing, and
the next nightly cleans up and succeeds."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from lake.crash import CRASH_ENV
from tests.reliability.harness import DAYS, JOURNEYS, REPO, generate_sample, journeys, uncommitted_leftovers


def servers_of(parent: int) -> list[int]:
    """Pids of running `python -m flows.prefect_api --parent PARENT` processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"flows.prefect_api" in argv and str(parent).encode() in argv and state != "Z":
            found.append(int(entry.name))
    return found


def test_a_killed_nightly_leaves_no_prefect_server_and_the_next_one_succeeds(tmp_path):
    data = generate_sample(tmp_path)
    args = ["nightly", "--date", DAYS[0].isoformat(), "--data", str(data), "--journey", "subscription",
            "--buckets", "2"]
    night = subprocess.Popen([JOURNEYS, *args], cwd=REPO, env={**os.environ, CRASH_ENV: "staged"},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    while night.poll() is None:  # note the server while it runs
        seen = seen or servers_of(night.pid)
        time.sleep(0.2)
    output = night.stdout.read()
    assert night.returncode == -9, output[-3000:]
    assert seen, "the nightly never started its temporary Prefect server"
    deadline = time.monotonic() + 15
    while servers_of(night.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert servers_of(night.pid) == [], "the temporary Prefect server outlived its killed parent"
    assert not (data / "lake" / "_state.json").exists()  # nothing committed
    done = journeys(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert uncommitted_leftovers(data / "lake") == []
    assert "lake commit 1" in done.stdout
