"""The `journeys` command line."""
from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from journey_defs.config_yaml import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"journeys {args.command}: {exc}", file=sys.stderr)
        return 2


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
