"""Warehouse benchmark: generate a sample (default 10,000 customers over 90 days), run the
pipeline night by night and publish each night to DuckDB as production does, then time the
analyst views on the published file. Prints publish seconds per day (at nights 10 and 90,
their ratio, mean, max; and the alerts' share), the file size and each view's wall time (fresh
read-only connection, every row fetched).

    .venv/bin/python -m benchmarks.warehouse
    .venv/bin/python -m benchmarks.warehouse --customers 2000 --days 20
    .venv/bin/python -m benchmarks.warehouse --work /tmp/wh --republish   # the lake of an earlier --work run, published again
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
from warehouse.alerting import replay
from warehouse.publish import publish
from warehouse.views import VIEWS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--work", type=Path, help="working directory (default: a temporary one, removed)")
    parser.add_argument("--republish", action="store_true",
                        help="reuse the lake an earlier run left in --work: publish its nights into a new warehouse")
    args = parser.parse_args()
    if args.republish and args.work is None:
        parser.error("--republish needs --work")
    work = args.work or Path(tempfile.mkdtemp(prefix="journeys-warehouse-"))
    try:
        bench(work, args.customers, args.days, args.republish)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def bench(work: Path, customers: int, days: int, republish: bool = False) -> None:
    data, lake_dir, warehouse = work / "data", str(work / "lake"), work / "warehouse.duckdb"
    config = GenerateConfig(customers=customers, days=days, seed=3)
    if republish:
        for old in work.glob("warehouse.duckdb*"):
            old.unlink()
        print(f"sample: the lake in {lake_dir}, {days} nights published again")
    else:
        summary = generate(data, config, progress=lambda _: None)
        print(f"sample: {customers:,} customers, {days} days, {summary['records_written']:,} records")
    journey = load_journey(BUILTIN_JOURNEYS["subscription"])
    run_seconds, publish_seconds, alert_seconds = [], [], []
    for d in range(days):
        day = config.start + timedelta(days=d)
        if not republish:
            report = run(RunConfig(data_dir=str(data), lake=lake_dir, journeys=(journey,), as_of=day, n_buckets=4),
                         progress=lambda _: None)
            run_seconds.append(report.seconds)
        began = time.perf_counter()
        published = publish(lake_dir, warehouse, [day], [journey], progress=lambda _: None)
        publish_seconds.append(time.perf_counter() - began)
        alert_seconds.append(published.alert_seconds)
        if (d + 1) % 10 == 0 or d + 1 == days:
            ran = f"run {run_seconds[-1]:.1f} s, " if run_seconds else ""
            print(f"  night {d + 1}/{days}: {ran}publish {publish_seconds[-1]:.2f} s "
                  f"(alerts {alert_seconds[-1]:.2f} s)", flush=True)
    if days >= 10:
        print(f"publish at night {days} / night 10: {publish_seconds[-1]:.2f} / {publish_seconds[9]:.2f} s = "
              f"{publish_seconds[-1] / publish_seconds[9]:.2f}x")
    ran = f" (pipeline per night: mean {statistics.mean(run_seconds):.1f} s)" if run_seconds else ""
    size = sum(f.stat().st_size for f in work.glob("warehouse.duckdb.gen-*")) or warehouse.stat().st_size
    print(f"publish per day: mean {statistics.mean(publish_seconds):.2f} s, max {max(publish_seconds):.2f} s{ran}; "
          f"files {size / 2**20:,.0f} MiB")
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        began = time.perf_counter()
        replay(con)
        print(f"alerts replayed from all {days} nights' summaries instead (a backfill's or a republish's cost): "
              f"{time.perf_counter() - began:.2f} s; the last publish continued from night {days - 1}'s state in "
              f"{alert_seconds[-1]:.2f} s")
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
