"""What the reliability tests share: a small generated sample, `journeys` run as a real
process (so a crash point really kills it), and the committed content of a lake and a
warehouse read independently of the code under test's own reports."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from generator.generate import GenerateConfig, generate

REPO = Path(__file__).resolve().parents[2]
JOURNEYS = str(Path(sys.executable).with_name("journeys"))
CONFIG = GenerateConfig(customers=250, days=3, seed=5, fault_rate=0.01)
DAYS = [CONFIG.start + timedelta(days=d) for d in range(CONFIG.days)]
RUN_ONLY = ("run_id", "publish_id", "published_at")  # differ from run to run by design


def generate_sample(root: Path) -> Path:
    data = root / "data"
    generate(data, CONFIG, progress=lambda _: None)
    return data


def journeys(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`journeys ARGS` as its own process (with `env` added to this one's environment)."""
    return subprocess.run([JOURNEYS, *args], cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def run_day(data: Path, day, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return journeys("run", "--date", day.isoformat(), "--data", str(data), "--journey", "subscription",
                    "--buckets", "2", *extra, env=env)


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def lake_content(lake: Path) -> dict[str, list]:
    """Every committed row of every lake table, sorted, run ids left out: read through the
    commit record with plain pyarrow (a table whose partitions are not all whole fails here)."""
    import json

    state = json.loads((lake / "_state.json").read_text()) if (lake / "_state.json").exists() else {"partitions": {}}
    out = {}
    for table, days in sorted(state["partitions"].items()):
        rows = []
        for day, scopes in days.items():
            for scope, run in scopes.items():
                folders = list((lake / "_runs" / run / table / f"date={day}").glob(f"*={scope}"))
                for part in sorted(p for f in folders for p in f.glob("*.parquet")):
                    t = pq.read_table(part)
                    t = t.drop([c for c in RUN_ONLY if c in t.column_names])
                    rows += [repr(sorted(r.items())) for r in t.to_pylist()]
        out[table] = sorted(rows)
    return out


def uncommitted_leftovers(lake: Path) -> list[str]:
    """Files of the lake no commit points at (what a crash may leave until the next run)."""
    import json

    state = json.loads((lake / "_state.json").read_text()) if (lake / "_state.json").exists() else {"runs": {}}
    left = [p.name for p in lake.glob("_state.json.tmp-*")]
    runs = lake / "_runs"
    if runs.exists():
        left += [f"_runs/{d.name}" for d in runs.iterdir() if d.name not in state["runs"]]
    return sorted(left)


def warehouse_content(path: Path) -> dict[str, list]:
    """Every table's rows of a warehouse file, sorted, without run ids."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {}
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                                    "ORDER BY 1").fetchall():
            columns = [c for (c,) in con.execute("SELECT column_name FROM information_schema.columns WHERE "
                                                 "table_name = ? ORDER BY ordinal_position", [table]).fetchall()
                       if c not in RUN_ONLY]
            out[table] = sorted(map(repr, con.execute(f'SELECT {", ".join(columns)} FROM "{table}"').fetchall()))
        return out
    finally:
        con.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"
