"""Pipeline benchmark: generate samples of ~1M and ~5M events, run the whole pipeline on each
(raw files → Parquet lake, one run ingesting every day, as of the last day) and print
records/s and peak RSS; then time publishing the lake into DuckDB (separately); run a DuckDB
SQL script doing the same parsing, stitching, matching and sessionization on the same files
and print the ratio.

    .venv/bin/python -m benchmarks.pipeline                      # 1M and 5M
    .venv/bin/python -m benchmarks.pipeline --events 1000000     # one size
    .venv/bin/python -m benchmarks.pipeline -- --runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=2
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

EVENTS_PER_CUSTOMER = 7.5  # what the generator's scenario produces over 30 days
DAYS = 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, action="append", help="approximate events (default: 1M and 5M)")
    parser.add_argument("--work", type=Path, help="working directory (default: a temporary one, removed)")
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument("beam_args", nargs="*")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="journeys-bench-"))
    try:
        for events in args.events or [1_000_000, 5_000_000]:
            bench(work / f"{events}", events, args.buckets, args.beam_args)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def bench(root: Path, events: int, buckets: int, beam_args: list[str]) -> None:
    data = root / "data"
    customers = int(events / EVENTS_PER_CUSTOMER)
    began = time.perf_counter()
    child(["generate", "--customers", str(customers), "--days", str(DAYS), "--seed", "1", "--out", str(data)])
    generated = json.loads((data / "ground_truth" / "summary.json").read_text())
    print(f"\n== {generated['records_written']:,} records ({generated['events']:,} events, {customers:,} customers, "
          f"{DAYS} days); generated in {time.perf_counter() - began:.1f} s")

    start = date.fromisoformat(generated["config"]["start"])
    last = start + timedelta(days=DAYS - 1)
    command = ["run", "--date", last.isoformat(), "--from", start.isoformat(), "--data", str(data),
               "--journey", "subscription", "--lake", str(root / "lake"), "--buckets", str(buckets), "--no-publish"]
    if beam_args:
        command += ["--", *beam_args]
    seconds, peak, output = child(command)
    records = generated["records_written"]
    print(f"pipeline : {seconds:7.1f} s  {records / seconds:>10,.0f} records/s  peak RSS {peak / 1024:,.0f} MB"
          f"  ({' '.join(beam_args) or 'DirectRunner in_memory'}; quality gate included)")
    gate = re.search(r"^gate \S+: (\d+) expectations", output, re.M)
    gate_time = re.search(r"^quality gate: ([\d.]+) s of the run's ([\d.]+) s", output, re.M)
    if gate and gate_time:
        print(f"gate     : {float(gate_time[1]):7.1f} s  ({gate[1]} expectations in Great Expectations checkpoints, "
              f"loading GX included) = {float(gate_time[1]) / float(gate_time[2]):.0%} of the run")
    commit = re.search(r"^lake commit \d+ \(\S+\): ([\d.]+) s to commit, ([\d.]+) s to take the writer lock", output, re.M)
    if commit:
        cost = float(commit[1]) + float(commit[2])
        print(f"commit   : {float(commit[1]):7.3f} s  (commit record + cleanup) + {float(commit[2]):.3f} s writer lock "
              f"= {cost / seconds:.2%} of the run")

    publish_seconds, publish_peak, _ = child(["publish", "--from", start.isoformat(), "--date", last.isoformat(),
                                           "--data", str(data), "--lake", str(root / "lake"),
                                           "--warehouse", str(root / "warehouse.duckdb"), "--journey", "subscription"])
    print(f"publish  : {publish_seconds:7.1f} s  ({DAYS} days into DuckDB, peak RSS {publish_peak / 1024:,.0f} MB; "
          "not part of the pipeline figure)")

    sql_seconds = duckdb_reference(data, root / "reference.parquet")
    print(f"duckdb   : {sql_seconds:7.1f} s  {records / sql_seconds:>10,.0f} records/s  (SQL script, same files)")
    print(f"ratio    : pipeline takes {seconds / sql_seconds:.1f}x the SQL script's time")


def child(journeys_args: list[str]) -> tuple[float, int, str]:
    """Run `journeys ...` in a child process; (wall seconds, peak RSS in KiB of it, or of the
    largest of the workers it waited for, and what it printed). Not RUSAGE_CHILDREN: that
    would also count the generator run before."""
    began = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen([sys.executable, "-m", "flows.cli", *journeys_args], stdout=out)
        _, status, usage = os.wait4(process.pid, 0)
        out.seek(0)
        printed = out.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"journeys {journeys_args[0]} failed")
    return time.perf_counter() - began, usage.ru_maxrss, printed


def duckdb_reference(data: Path, out: Path) -> float:
    """The same work as one SQL script: read the raw files, stitch web anonymous ids to users and
    e-mails/phones through the CRM, match the subscription map's stage touchpoints, sessionize
    (30 min), take each customer's first entry per stage, write Parquet."""
    import duckdb

    began = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"""
    CREATE TABLE ev AS
      SELECT 'web' AS channel, event AS event_type, anonymous_id, user_id, NULL AS email, NULL AS phone,
             TRY_CAST(timestamp AS TIMESTAMPTZ) AS ts, properties.page AS page, NULL AS campaign, NULL AS queue,
             NULL AS topic, NULL AS disposition
      FROM read_json('{data}/web/*/*.jsonl', ignore_errors = true, format = 'newline_delimited')
      UNION ALL
      SELECT 'email', event, NULL, NULL, lower(trim(email)), NULL, to_timestamp(TRY_CAST(timestamp AS DOUBLE)),
             NULL, campaign, NULL, NULL, NULL
      FROM read_json('{data}/email/*/*.jsonl', ignore_errors = true, format = 'newline_delimited',
                     columns = {{event: 'VARCHAR', email: 'VARCHAR', timestamp: 'VARCHAR', campaign: 'VARCHAR'}})
      UNION ALL
      SELECT 'chat', type, visitor_id, NULL, lower(trim(email)), NULL, TRY_CAST(created_at || '+00' AS TIMESTAMPTZ),
             NULL, NULL, NULL, topic, NULL
      FROM read_json('{data}/chat/*/*.jsonl', ignore_errors = true, format = 'newline_delimited',
                     columns = {{type: 'VARCHAR', visitor_id: 'VARCHAR', email: 'VARCHAR', created_at: 'VARCHAR', topic: 'VARCHAR'}})
      UNION ALL
      SELECT 'phone', 'call', NULL, NULL, NULL, '+' || regexp_replace(caller_number, '[^0-9]', '', 'g'),
             TRY_CAST(started_at AS TIMESTAMPTZ), NULL, NULL, queue, NULL, disposition
      FROM read_csv('{data}/phone/*/*.csv', all_varchar = true, ignore_errors = true);
    CREATE TABLE crm AS SELECT customer_id, lower(email) AS email, '+' || regexp_replace(phone, '[^0-9]', '', 'g') AS phone
      FROM read_csv('{data}/crm/customers.csv', all_varchar = true);
    CREATE TABLE links AS SELECT anonymous_id, min(user_id) AS user_id FROM ev
      WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL GROUP BY ALL;
    CREATE TABLE stitched AS
      SELECT ev.*, coalesce(ev.user_id, l.user_id, ce.customer_id, cp.customer_id,
                            'anonymous_id:' || ev.anonymous_id, 'email:' || ev.email, 'phone:' || ev.phone) AS customer_id,
             CASE WHEN channel = 'web' AND event_type = 'page_view' AND page IN ('/', '/pricing', '/features', '/how-it-works') THEN 0
                  WHEN channel = 'email' AND event_type = 'click' AND starts_with(campaign, 'promo_') THEN 0
                  WHEN channel = 'web' AND event_type = 'signup_completed' THEN 1
                  WHEN channel = 'email' AND event_type = 'click' AND campaign = 'verify_email' THEN 2
                  WHEN channel = 'web' AND event_type = 'page_view' AND starts_with(page, '/verify') THEN 2
                  WHEN channel = 'web' AND event_type = 'checkout_completed' THEN 3
                  WHEN channel = 'phone' AND queue = 'sales' AND disposition = 'order_placed' THEN 3
                  WHEN channel = 'email' AND event_type = 'click' AND regexp_matches(campaign, '^onboarding_[0-9]+$') THEN 4
                  WHEN channel = 'chat' AND event_type = 'conversation_started' AND topic = 'onboarding' THEN 4
                  WHEN channel = 'web' AND event_type = 'reorder_completed' THEN 5
                  WHEN channel = 'email' AND event_type = 'click' AND campaign = 'reorder_reminder' THEN 5 END AS stage
      FROM ev LEFT JOIN links l USING (anonymous_id) LEFT JOIN crm ce ON ev.email = ce.email
              LEFT JOIN crm cp ON ev.phone = cp.phone
      WHERE ts IS NOT NULL;
    COPY (
      WITH s AS (
        SELECT *, CASE WHEN ts - lag(ts) OVER w >= INTERVAL 30 MINUTE OR lag(ts) OVER w IS NULL THEN 1 ELSE 0 END AS new_session
        FROM stitched WINDOW w AS (PARTITION BY customer_id ORDER BY ts))
      SELECT customer_id, stage, min(ts) AS entered, sum(new_session) AS sessions
      FROM s GROUP BY ALL) TO '{out}' (FORMAT PARQUET);
    """)
    con.close()
    return time.perf_counter() - began


if __name__ == "__main__":
    main()
