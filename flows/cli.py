"""The `journeys` command line."""
from __future__ import annotations

import argparse
import logging
import sys
from datetime import date, datetime, timezone
from pathlib import Path

from flows.options import DEFAULT_LOCK_TIMEOUT
from journey_defs.config_yaml import ConfigError


def main(argv: list[str] | None = None) -> int:
    # Beam warns at import that Google Cloud clients are missing; they are optional here.
    logging.getLogger().addFilter(lambda record: not str(record.msg).startswith("apitools not found"))
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.debug:  # a worker's failure is reported once, in one line, below (--debug: the whole trace)
        logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)
    try:
        return args.run(args)
    except Exception as exc:
        if args.debug:
            raise
        code, text = describe_failure(exc)
        if code is None:
            raise
        print(f"journeys {args.command}: {text}", file=sys.stderr)
        return code


def describe_failure(exc: BaseException) -> tuple[int | None, str]:
    """(exit code, one line) for a failure a person can act on; (None, "") for a bug, whose
    traceback is worth seeing. Busy locks exit 1 (try again later); bad input, bad
    configuration and file-system failures exit 2, named by path and cause."""
    from flows.prefect_api import ApiServerFailed
    from lake import LakeBusy
    from warehouse.publish import WarehouseBusy

    if isinstance(exc, (LakeBusy, WarehouseBusy, ApiServerFailed)):
        return 1, str(exc)
    if isinstance(exc, (ConfigError, ValueError)):
        return 2, str(exc)
    failure = _os_error(exc)
    if failure is not None:
        where = failure.filename or ""
        return 2, f"{where}: {failure.strerror or failure}" if where else str(failure.strerror or failure)
    return None, ""


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind `exc` (Beam re-raises a worker's error wrapped, with its cause)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and (exc.strerror or exc.filename):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _warehouse_location(command: argparse.ArgumentParser) -> None:
    """--warehouse FILE or --data DIR (its DATA/warehouse.duckdb), one of them required."""
    where = command.add_mutually_exclusive_group(required=True)
    where.add_argument("--warehouse", help="DuckDB file")
    where.add_argument("--data", help="data directory whose DATA/warehouse.duckdb to read")


def _lock_timeout(command: argparse.ArgumentParser) -> None:
    command.add_argument("--lock-timeout", type=_seconds, default=DEFAULT_LOCK_TIMEOUT,
                         help="seconds to wait for another writer of the lake or warehouse (default 3600; "
                              "0 = fail at once; 'none' = wait without limit)")


def _seconds(text: str) -> float | None:
    if text.lower() == "none":
        return None
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more (or 'none')")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="journeys", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of a failure")
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
    when = run.add_mutually_exclusive_group(required=True)
    when.add_argument("--date", type=date.fromisoformat, help="as-of date (YYYY-MM-DD): as of its end")
    when.add_argument("--as-of", dest="as_of", type=_as_of,
                      help="as-of date or instant (2012-06-30 or 2012-06-30T14:00:00Z; no offset = UTC)")
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
    _lock_timeout(run)
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
    _lock_timeout(pub)
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
        _lock_timeout(night)
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
    _lock_timeout(serve)
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
    from flows.night import run_night
    from flows.preflight import check_ready, days_between
    from pipelines.journey_pipeline import RunFailed

    options = _options(args)
    instant = args.as_of if isinstance(args.as_of, datetime) else None
    day = args.date or (instant.astimezone(timezone.utc).date() if instant else args.as_of)
    days = days_between(args.ingest_from or day, day, "--from", "--date")
    check_ready(options, days)
    try:
        night = run_night(options, day, tuple(days), as_of_at=instant)
    except Exception as exc:
        gate = sys.modules.get("expectations.gate")  # loaded by the gate itself, so its time counts there
        if not isinstance(exc, RunFailed) and not (gate and isinstance(exc, gate.GateFailed)):
            raise
        print(f"journeys run: FAILED, nothing published: {exc}", file=sys.stderr)
        return 1
    for table, rows in sorted(night.staged.rows_written.items()):
        print(f"  {table:<15}{rows:>12,} rows")
    if night.gate is not None:
        print(f"quality gate: {night.gate.seconds:.1f} s of the run's {night.seconds:.1f} s")
    print(f"lake commit {night.version} ({night.staged.run_id}): {night.commit_seconds:.3f} s to commit, "
          f"{night.lock_seconds:.3f} s to take the writer lock")
    return 0


def _as_of(text: str) -> date | datetime:
    """`--as-of`: a date (as of its end) or an instant (no offset = UTC)."""
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        instant = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is neither a date (YYYY-MM-DD) nor an ISO timestamp") from None
    return instant if instant.tzinfo else instant.replace(tzinfo=timezone.utc)


def _options(args, **overrides):
    """The night's options from a command's arguments (run, nightly, backfill, serve)."""
    from flows.options import NightOptions

    given = dict(
        data_dir=str(args.data), journeys=tuple(args.journey), lake=args.lake, warehouse=getattr(args, "warehouse", None),
        validation_dir=getattr(args, "validation_dir", None), sources_dirs=tuple(map(str, getattr(args, "sources_dir", []))),
        n_buckets=args.buckets, bad_row_threshold=getattr(args, "bad_row_threshold", 0.05),
        off_map_threshold=getattr(args, "off_map_threshold", 0.10), lock_timeout=args.lock_timeout,
        notify=tuple(getattr(args, "notify", ())), gate=not getattr(args, "no_gate", False),
        publish=not getattr(args, "no_publish", False))
    if getattr(args, "beam_args", None):
        given["runner_flags"] = tuple(args.beam_args)
    return NightOptions(**{**given, **overrides})


def _publish(args) -> int:
    from flows.options import default_lake
    from flows.preflight import days_between
    from journey_defs.loader import load_journey, resolve_journey
    from journey_defs.source_spec import available_sources
    from warehouse.publish import publish

    known = available_sources(args.sources_dir)
    journeys = [load_journey(resolve_journey(name), known_sources=known) for name in args.journey]
    report = publish(args.lake or default_lake(args.data), _warehouse(args),
                     days_between(args.publish_from or args.date, args.date, "--from", "--date"), journeys,
                     lock_timeout=args.lock_timeout)
    for table, rows in sorted(report.rows.items()):
        print(f"  {table:<15}{rows:>12,} rows")
    return 0


def _query(args) -> int:
    from warehouse.query import query, render

    if args.format == "parquet" and args.out is None:
        raise ValueError("--format parquet writes binary: give --out FILE")
    result = render(query(_warehouse(args), args.sql), args.format)
    if args.out:
        args.out.write_bytes(result)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(result)
        sys.stdout.flush()
    return 0


def _warehouse(args) -> str:
    from flows.options import default_warehouse

    return args.warehouse or default_warehouse(args.data)


def _flow(args) -> int:
    """Run the nightly or backfill flow through Prefect (a temporary server of its own unless
    PREFECT_API_URL names one); exit 1 when the flow fails."""
    from flows.preflight import check_ready, days_between

    options = _options(args)
    days = [args.date] if args.command == "nightly" else days_between(args.start, args.end)
    check_ready(options, days)
    from flows.night import command_line
    from flows.nightly import backfill, nightly
    from flows.prefect_api import temporary_api
    from lake import writer_lock

    # The lake's lock first (the flow takes it again, re-entrantly): a second night waits
    # here, before it starts a Prefect server of its own.
    with writer_lock(options.lake_root, options.lock_timeout, print, command_line()), temporary_api():
        state = (nightly(args.date, options, return_state=True) if args.command == "nightly"
                 else backfill(args.start, args.end, options, return_state=True))
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        text = describe_failure(error)[1] if isinstance(error, BaseException) else ""
        print(f"journeys {args.command}: {state.name}: {text or error}", file=sys.stderr)
        return 1
    nights = state.result()
    for night in nights if isinstance(nights, list) else [nights]:
        alerts = night.get("alerts") or {}
        print(f"{night['date']}: {night['records']:,} records → {night['events']:,} events, {night['bad_rows']:,} bad "
              f"rows; lake commit {night['lake_version']}; published in {(night['publish'] or {}).get('seconds')} s; "
              f"{len(night['warnings'])} warning(s); {alerts.get('open', 0)} open alert(s), "
              f"{alerts.get('changes', 0)} changed tonight")
        for warning in night["warnings"]:
            print(f"  warning {warning}")
    return 0


def _serve(args) -> int:
    from flows.prefect_api import temporary_api
    from flows.serve import serve_nightly

    options = _options(args)
    options.journey_maps  # a bad journey fails here, not at 02:00
    with temporary_api():
        serve_nightly(options, cron=args.cron, timezone=args.timezone, name=args.name)
    return 0


def _alerts(args) -> int:
    """Each alert (one per journey, stage and incident) with its breakdown of its latest night under it."""
    from warehouse.query import query
    from warehouse.report import breakdown_line

    where = "" if args.all else "WHERE status <> 'resolved'"
    warehouse = _warehouse(args)
    alerts = query(warehouse, "SELECT alert_id, status, journey_id, stage, opened_by, opened_date, updated_date, "
                              f"resolved_date, message FROM alerts {where} ORDER BY opened_date, journey_id, stage")
    slices = query(warehouse, "SELECT s.* FROM alert_slices s JOIN alerts a ON s.alert_id = a.alert_id "
                              "AND s.night = a.updated_date ORDER BY s.expected_moved_on - s.moved_on DESC")
    breakdown: dict[str, list[dict]] = {}
    for row in slices.to_pylist():
        breakdown.setdefault(row["alert_id"], []).append(row)
    rows = alerts.to_pylist()
    if not rows:
        print("no alerts" if args.all else "no open alerts (--all lists the resolved ones too)")
    for a in rows:
        until = f", resolved {a['resolved_date']}" if a["resolved_date"] else f", updated {a['updated_date']}"
        print(f"{a['status'].upper():<10} {a['journey_id']} / {a['stage']}: opened {a['opened_date']} "
              f"(first seen in: {a['opened_by']}){until}")
        print(f"  {a['message']}")
        for s in breakdown.get(a["alert_id"], []):
            print(f"    {breakdown_line(s)}")
    return 0


def _report(args) -> int:
    from warehouse.report import export_png, render_html, render_text
    from warehouse.report_data import load_report_data

    warehouse = Path(_warehouse(args))
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
    """Load everything a run would load (journeys, their source specs, every spec in each
    --sources-dir), with the run's own rules (DuckDB's RE2 regexes, strptime patterns, zones)."""
    from journey_defs.loader import check_definitions

    for journey in check_definitions(args.journeys, args.sources_dir):
        print(f"ok  {journey.source_file}: journey {journey.id} v{journey.version}, {journey.ordering}, "
              f"stages {' → '.join(journey.stage_ids)}")
    return 0


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "none"


if __name__ == "__main__":
    raise SystemExit(main())
