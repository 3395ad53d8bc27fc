"""Warehouse benchmark: generate a sample (default 10,000 customers over 90 days), run the
pipeline night by night and publish each night to DuckDB as production does, then time the
analyst views on the published file. Prints publish seconds per day (mean, max), the file
size and each view's wall time (fresh read-only connection, every row fetched).

    .venv/bin/python -m benchmarks.warehouse
    .venv/bin/python -m benchmarks.warehouse --customers 2000 --days 20
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import duckdb

from generator.generate import GenerateConfig, generate
from journey_defs.loader import BUILTIN_JOURNEYS, load_journey
from flows.night import stage_and_commit as run
from pipelines.journey_pipeline import RunConfig
from warehouse.publish import publish
from warehouse.views import VIEWS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--work", type=Path, help="working directory (default: a temporary one, removed)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="journeys-warehouse-"))
    try:
        bench(work, args.customers, args.days)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def bench(work: Path, customers: int, days: int) -> None:
    data, lake_dir, warehouse = work / "data", str(work / "lake"), work / "warehouse.duckdb"
    config = GenerateConfig(customers=customers, days=days, seed=3)
    summary = generate(data, config, progress=lambda _: None)
    print(f"sample: {customers:,} customers, {days} days, {summary['records_written']:,} records")
    journey = load_journey(BUILTIN_JOURNEYS["subscription"])
    run_seconds, publish_seconds = [], []
    for d in range(days):
        day = config.start + timedelta(days=d)
        report = run(RunConfig(data_dir=str(data), lake=lake_dir, journeys=(journey,), as_of=day, n_buckets=4),
                     progress=lambda _: None)
        run_seconds.append(report.seconds)
        began = time.perf_counter()
        publish(lake_dir, warehouse, [day], [journey], progress=lambda _: None)
        publish_seconds.append(time.perf_counter() - began)
        if (d + 1) % 10 == 0 or d + 1 == days:
            print(f"  night {d + 1}/{days}: run {report.seconds:.1f} s, publish {publish_seconds[-1]:.2f} s", flush=True)
    print(f"publish per day: mean {statistics.mean(publish_seconds):.2f} s, max {max(publish_seconds):.2f} s "
          f"(pipeline per night: mean {statistics.mean(run_seconds):.1f} s); "
          f"file {warehouse.stat().st_size / 2**20:,.0f} MiB")
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("events", "journeys", "journey_stages")}
        print("rows: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
        for name in VIEWS:
            began = time.perf_counter()
            n = len(con.execute(f"SELECT * FROM {name}").fetchall())
            print(f"  view {name:<22}{time.perf_counter() - began:7.3f} s  {n:>8,} rows")
    finally:
        con.close()


if __name__ == "__main__":
    main()
