"""The `journeys` command line."""
from __future__ import annotations

import argparse
import logging
import sys
from datetime import date
from pathlib import Path

from journey_defs.config_yaml import ConfigError


def main(argv: list[str] | None = None) -> int:
    # Beam warns at import that Google Cloud clients are missing; they are optional here.
    logging.getLogger().addFilter(lambda record: not str(record.msg).startswith("apitools not found"))
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"journeys {args.command}: {exc}", file=sys.stderr)
        return 2


def default_lake(data_dir: str) -> str:
    """DATA/lake; a plain string join, as pathlib would fold gs:// into gs:/."""
    return data_dir.rstrip("/") + "/lake"


def default_warehouse(data_dir: str) -> str:
    """DATA/warehouse.duckdb (DuckDB writes local files only)."""
    return _local(data_dir, "warehouse.duckdb")


def _local(data_dir: str, name: str) -> str:
    """DATA/name for outputs that must be local files; a remote DATA needs an explicit path."""
    if "://" in data_dir:
        raise ValueError(f"--data {data_dir} is not local: give the path for {name} explicitly")
    return str(Path(data_dir) / name)


def _warehouse_location(command: argparse.ArgumentParser) -> None:
    """--warehouse FILE or --data DIR (its DATA/warehouse.duckdb), one of them required."""
    where = command.add_mutually_exclusive_group(required=True)
    where.add_argument("--warehouse", help="DuckDB file")
    where.add_argument("--data", help="data directory whose DATA/warehouse.duckdb to read")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="journeys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="write a realistic multi-channel sample with ground truth")
    gen.add_argument("--customers", type=int, default=10_000)
    gen.add_argument("--days", type=int, default=30)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--start", type=date.fromisoformat, default=date(2026, 1, 5), help="first day (YYYY-MM-DD)")
    gen.add_argument("--fault-rate", type=float, default=0.005, help="share of records that get a fault (default 0.005)")
    gen.add_argument("--incident", help="raise one stage's drop-off: stage=X,from=DAY,factor=F")
    gen.add_argument("--out", required=True, type=Path)
    gen.set_defaults(run=_generate)

    summary = commands.add_parser("summary", help="read a data directory through the source specs and summarise it")
    summary.add_argument("--data", required=True, type=Path)
    summary.add_argument("--journey", default="subscription", help="built-in journey name or YAML file")
    summary.add_argument("--sources-dir", action="append", default=[], type=Path, help="extra source spec folder")
    summary.set_defaults(run=_summary)

    run = commands.add_parser("run", help="run the journey pipeline for a date and publish Parquet to the lake",
                              epilog="Arguments after -- go to Beam, e.g. -- --runner=FlinkRunner --flink_master=host:8081")
    run.add_argument("--date", required=True, type=date.fromisoformat, help="as-of date (YYYY-MM-DD)")
    run.add_argument("--from", dest="ingest_from", type=date.fromisoformat,
                     help="also ingest the raw files of the days from this date (default: only --date)")
    run.add_argument("--data", required=True, help="raw data directory (local, gs://, s3://)")
    run.add_argument("--journey", action="append", required=True, help="built-in journey name or YAML file")
    run.add_argument("--lake", help="Parquet lake (default: DATA/lake); gs:// and s3:// work too")
    run.add_argument("--sources-dir", action="append", default=[], type=Path)
    run.add_argument("--buckets", type=int, default=16, help="customer-hash buckets for grouping (default 16)")
    run.add_argument("--bad-row-threshold", type=float, default=0.05,
                     help="fail without publishing above this bad-row share (default 0.05)")
    run.add_argument("--warehouse", help="DuckDB file to publish to (default: DATA/warehouse.duckdb)")
    run.add_argument("--no-publish", action="store_true", help="write the lake only, do not publish to DuckDB")
    run.add_argument("--validation-dir", help="Great Expectations project, results and data docs "
                                              "(default: DATA/validation)")
    run.add_argument("--no-gate", action="store_true", help="skip the quality gate (not for production)")
    run.add_argument("--off-map-threshold", type=float, default=0.10,
                     help="warn when this share of a journey's events match no touchpoint (default 0.10)")
    run.add_argument("beam_args", nargs="*", help=argparse.SUPPRESS)
    run.set_defaults(run=_run)

    pub = commands.add_parser("publish", help="publish days of the lake into the DuckDB warehouse (atomic)")
    pub.add_argument("--date", required=True, type=date.fromisoformat, help="last day to publish (YYYY-MM-DD)")
    pub.add_argument("--from", dest="publish_from", type=date.fromisoformat, help="first day (default: --date)")
    pub.add_argument("--data", required=True, help="data directory (locates the default lake and warehouse)")
    pub.add_argument("--lake", help="Parquet lake (default: DATA/lake)")
    pub.add_argument("--warehouse", help="DuckDB file (default: DATA/warehouse.duckdb)")
    pub.add_argument("--journey", action="append", default=[], help="also record this journey map (name or YAML)")
    pub.add_argument("--sources-dir", action="append", default=[], type=Path)
    pub.set_defaults(run=_publish)

    ask = commands.add_parser("query", help="run read-only SQL on the warehouse")
    ask.add_argument("sql")
    _warehouse_location(ask)
    ask.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table")
    ask.add_argument("--out", type=Path, help="write the result to this file (required for parquet)")
    ask.set_defaults(run=_query)

    for name, helptext in (("nightly", "run the Prefect nightly flow for one day (pipeline, gate, publish)"),
                           ("backfill", "run the nightly logic for every day of a range, in date order (Prefect)")):
        night = commands.add_parser(name, help=helptext)
        if name == "nightly":
            night.add_argument("--date", required=True, type=date.fromisoformat, help="the day to run (YYYY-MM-DD)")
        else:
            night.add_argument("--from", dest="start", required=True, type=date.fromisoformat, help="first day")
            night.add_argument("--to", dest="end", required=True, type=date.fromisoformat, help="last day")
        night.add_argument("--data", required=True, help="raw data directory")
        night.add_argument("--journey", action="append", required=True, help="built-in journey name or YAML file")
        night.add_argument("--lake", help="Parquet lake (default: DATA/lake)")
        night.add_argument("--warehouse", help="DuckDB file (default: DATA/warehouse.duckdb)")
        night.add_argument("--validation-dir", help="quality-gate results (default: DATA/validation)")
        night.add_argument("--sources-dir", action="append", default=[])
        night.add_argument("--buckets", type=int, default=16)
        night.add_argument("--bad-row-threshold", type=float, default=0.05)
        night.add_argument("--off-map-threshold", type=float, default=0.10)
        night.add_argument("--notify", action="append", default=[],
                           help="Apprise URL for alert notifications (repeatable; also $JOURNEYS_NOTIFY)")
        night.set_defaults(run=_flow)

    serve = commands.add_parser("serve", help="serve the nightly flow on a cron schedule (Prefect deployment)")
    serve.add_argument("--data", required=True, help="raw data directory")
    serve.add_argument("--journey", action="append", required=True, help="built-in journey name or YAML file")
    serve.add_argument("--cron", default="0 2 * * *", help="schedule (default 02:00 every day)")
    serve.add_argument("--timezone", default="UTC", help="time zone of the schedule (default UTC)")
    serve.add_argument("--name", default="journeys-nightly", help="deployment name")
    serve.add_argument("--lake")
    serve.add_argument("--warehouse")
    serve.add_argument("--validation-dir")
    serve.add_argument("--buckets", type=int, default=16)
    serve.add_argument("--notify", action="append", default=[], help="Apprise URL (repeatable; also $JOURNEYS_NOTIFY)")
    serve.set_defaults(run=_serve)

    alerts = commands.add_parser("alerts", help="list rising drop-off alerts from the warehouse")
    _warehouse_location(alerts)
    alerts.add_argument("--all", action="store_true", help="resolved ones too (default: open and escalated)")
    alerts.set_defaults(run=_alerts)

    rep = commands.add_parser("report", help="terminal summary and a self-contained HTML report of a journey")
    rep.add_argument("--journey", required=True, help="journey id")
    rep.add_argument("--date", required=True, type=date.fromisoformat, help="as-of date (YYYY-MM-DD)")
    _warehouse_location(rep)
    rep.add_argument("--out", type=Path, help="HTML file (default: reports/JOURNEY-DATE.html beside the warehouse)")
    rep.add_argument("--png", type=Path, help="also write a PNG screenshot (needs Chromium)")
    rep.add_argument("--days", type=int, default=14, help="days of drop-off trend (default 14)")
    rep.set_defaults(run=_report)

    check = commands.add_parser("check", help="validate journey map files")
    check.add_argument("journeys", nargs="+")
    check.add_argument("--sources-dir", action="append", default=[], type=Path)
    check.set_defaults(run=_check)
    return parser


def _generate(args) -> int:
    from generator.generate import GenerateConfig, generate
    from generator.simulate import Incident

    config = GenerateConfig(customers=args.customers, days=args.days, seed=args.seed, start=args.start,
                            fault_rate=args.fault_rate,
                            incident=Incident.parse(args.incident) if args.incident else None)
    summary = generate(args.out, config, progress=lambda message: print(f"  {message}", flush=True))
    print(f"generated {summary['events']:,} events ({summary['records_written']:,} records in "
          f"{summary['files']} files) in {summary['seconds']:.1f} s = {summary['events_per_second']:,} events/s")
    print(f"faults injected: {_counts(summary['faults_by_kind'])}")
    print(f"ground truth: {args.out / 'ground_truth'}")
    return 0


def _summary(args) -> int:
    from flows.sample_summary import print_summary

    print_summary(args.data, args.journey, args.sources_dir)
    return 0


def _run(args) -> int:
    from journey_defs.loader import load_journey, resolve_journey
    from journey_defs.source_spec import available_sources
    from expectations.run_context import GateLimits
    from flows.gated_run import gated_run
    from pipelines.journey_pipeline import DEFAULT_RUNNER_FLAGS, RunConfig, RunFailed

    known = available_sources(args.sources_dir)
    journeys = tuple(load_journey(resolve_journey(name), known_sources=known) for name in args.journey)
    days = tuple(_days(args.ingest_from, args.date))
    config = RunConfig(data_dir=args.data, lake=args.lake or default_lake(args.data), journeys=journeys,
                       as_of=args.date, ingest_days=days, sources_dirs=tuple(map(str, args.sources_dir)),
                       n_buckets=args.buckets, bad_row_threshold=args.bad_row_threshold,
                       runner_flags=tuple(args.beam_args) or DEFAULT_RUNNER_FLAGS)
    limits = GateLimits(bad_row_threshold=args.bad_row_threshold, off_map_share=args.off_map_threshold)
    try:
        night = gated_run(config, None if args.no_gate else (args.validation_dir or _local(args.data, "validation")),
                          None if args.no_publish else (args.warehouse or default_warehouse(args.data)), limits)
    except Exception as exc:
        gate = sys.modules.get("expectations.gate")  # loaded by the gate itself, so its time counts there
        if not isinstance(exc, RunFailed) and not (gate and isinstance(exc, gate.GateFailed)):
            raise
        print(f"journeys run: FAILED, nothing published: {exc}", file=sys.stderr)
        return 1
    for table, rows in sorted(night.run.rows_written.items()):
        print(f"  {table:<15}{rows:>12,} rows")
    if night.run.gate_seconds is not None:
        print(f"quality gate: {night.run.gate_seconds:.1f} s of the run's {night.run.seconds:.1f} s "
              f"({night.run.gate_seconds / night.run.seconds:.0%})")
    return 0


def _days(first: date | None, last: date) -> list[date]:
    from datetime import timedelta

    first = first or last
    if first > last:
        raise ValueError("--from must not be after --date")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _publish(args) -> int:
    from journey_defs.loader import load_journey, resolve_journey
    from journey_defs.source_spec import available_sources
    from warehouse.publish import publish

    known = available_sources(args.sources_dir)
    journeys = [load_journey(resolve_journey(name), known_sources=known) for name in args.journey]
    report = publish(args.lake or default_lake(args.data), args.warehouse or default_warehouse(args.data),
                     _days(args.publish_from, args.date), journeys)
    for table, rows in sorted(report.rows.items()):
        print(f"  {table:<15}{rows:>12,} rows")
    return 0


def _query(args) -> int:
    from warehouse.query import query, render

    if args.format == "parquet" and args.out is None:
        raise ValueError("--format parquet writes binary: give --out FILE")
    result = render(query(args.warehouse or default_warehouse(args.data), args.sql), args.format)
    if args.out:
        args.out.write_bytes(result)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(result)
        sys.stdout.flush()
    return 0


def _flow(args) -> int:
    """Run the nightly or backfill flow through Prefect (its temporary local server unless
    PREFECT_API_URL names one); exit 1 when the flow fails."""
    from flows.nightly import backfill, nightly

    options = dict(data_dir=args.data, journeys=args.journey, lake=args.lake, warehouse=args.warehouse,
                   validation_dir=args.validation_dir, sources_dirs=args.sources_dir, n_buckets=args.buckets,
                   bad_row_threshold=args.bad_row_threshold, off_map_threshold=args.off_map_threshold,
                   notify=args.notify)
    state = (nightly(args.date, return_state=True, **options) if args.command == "nightly"
             else backfill(args.start, args.end, return_state=True, **options))
    if not state.is_completed():
        print(f"journeys {args.command}: {state.name}: {state.result(raise_on_failure=False)}", file=sys.stderr)
        return 1
    nights = state.result()
    for night in nights if isinstance(nights, list) else [nights]:
        run = night["run"]
        print(f"{night['date']}: {run['records']:,} records → {run['events']:,} events, {run['bad_rows']:,} bad rows; "
              f"published in {night['publish']['seconds']} s; {len(run['warnings'])} warning(s); "
              f"{night['alerts']['open']} open alert(s), {night['alerts']['changes']} changed tonight")
        for warning in run["warnings"]:
            print(f"  warning {warning}")
    return 0


def _serve(args) -> int:
    from flows.serve import serve_nightly

    serve_nightly({"data_dir": args.data, "journeys": args.journey, "lake": args.lake, "warehouse": args.warehouse,
                   "validation_dir": args.validation_dir, "n_buckets": args.buckets, "notify": args.notify},
                  cron=args.cron, timezone=args.timezone, name=args.name)
    return 0


def _alerts(args) -> int:
    from warehouse.query import query, text_table

    where = "" if args.all else "WHERE status <> 'resolved'"
    table = query(args.warehouse or default_warehouse(args.data),
                  "SELECT status, journey_id, stage, dimension, dimension_value, opened_date, updated_date, "
                  f"resolved_date, message FROM alerts {where} ORDER BY opened_date, journey_id, stage, dimension, "
                  "dimension_value")
    print(text_table(table, max_width=200), end="")
    return 0


def _report(args) -> int:
    from warehouse.report import export_png, render_html, render_text
    from warehouse.report_data import load_report_data

    warehouse = Path(args.warehouse or default_warehouse(args.data))
    data = load_report_data(warehouse, args.journey, args.date, args.days)
    out = args.out or warehouse.parent / "reports" / f"{args.journey}-{args.date}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(data), encoding="utf-8")
    sys.stdout.write(render_text(data))
    print(f"report: {out}")
    if args.png:
        print(f"png: {export_png(out, args.png)}")
    return 0


def _check(args) -> int:
    from journey_defs.loader import load_journey, resolve_journey
    from journey_defs.source_spec import available_sources

    known = available_sources(args.sources_dir)
    for name in args.journeys:
        journey = load_journey(resolve_journey(name), known_sources=known)
        print(f"ok  {journey.source_file}: journey {journey.id} v{journey.version}, {journey.ordering}, "
              f"stages {' → '.join(journey.stage_ids)}")
    return 0


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "none"


if __name__ == "__main__":
    raise SystemExit(main())
