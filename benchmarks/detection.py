"""Detection-quality benchmark for rising drop-off alerts: how often a real incident is caught
in time, and how often a clean sample stays quiet.

For each seed the generator writes a sample (default 20,000 customers over 45 days), the
pipeline runs night by night exactly as the nightly flow does (one run per day, each one a
snapshot as of that day), the nights are published to a DuckDB warehouse and its `alerts`
table is read back. Incident seeds carry `Incident(stage, from_day, factor)`: from that day on,
customers entering the stage drop out `factor` times as often (default: verify, day 30, x2).

  caught   = an alert for the incident stage (whole stage) opened on night onset .. onset+1
             (incident samples are run up to night onset+1),
             i.e. by the second nightly run that sees any incident data;
  quiet    = a clean 45-day sample raised no alert at all (any stage, channel or segment);
  stray    = an incident sample alerted before the onset or on another stage (false alarms);
  reopened = alerts opened again for a stage / dimension / value that had one before (each one
             a second notification for the same trouble); run incident samples past the onset
             with --incident-nights 45 to see how alerts behave while the incident lasts.

The lakes are kept under --work, so evaluating the alert rules again costs seconds:

    .venv/bin/python -m benchmarks.detection --work /tmp/detection            # 20 + 20 seeds
    .venv/bin/python -m benchmarks.detection --work /tmp/detection --seeds 3 --customers 3000
"""
from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from datetime import timedelta
from multiprocessing import get_context
from pathlib import Path

import duckdb

from generator.simulate import Incident


@dataclass(frozen=True)
class Sample:
    """One generated sample and the nights it is run for."""

    seed: int
    customers: int
    days: int
    nights: int
    incident: Incident | None

    @property
    def name(self) -> str:
        kind = f"{self.incident.stage}-x{self.incident.factor:g}-d{self.incident.from_day}" if self.incident else "clean"
        longer = self.incident and self.nights != self.incident.from_day + 2
        return f"{kind}-c{self.customers}-s{self.seed}" + (f"-n{self.nights}" if longer else "")


def build(sample: Sample, work: Path) -> tuple[str, float]:
    """Generate the sample and run the pipeline for each of its nights (skipped when done before)."""
    from generator.generate import GenerateConfig, generate
    from journey_defs.loader import BUILTIN_JOURNEYS, load_journey
    from flows.night import stage_and_commit as run
    from pipelines.journey_pipeline import RunConfig

    root = work / sample.name
    if (root / "built").exists():
        return sample.name, 0.0
    shutil.rmtree(root, ignore_errors=True)
    began = time.perf_counter()
    config = GenerateConfig(customers=sample.customers, days=sample.days, seed=sample.seed, incident=sample.incident)
    generate(root / "data", config, progress=lambda _: None)
    journey = load_journey(BUILTIN_JOURNEYS["subscription"])
    for night in range(sample.nights):
        run(RunConfig(data_dir=str(root / "data"), lake=str(root / "lake"), journeys=(journey,),
                      as_of=config.start + timedelta(days=night), n_buckets=2), progress=lambda _: None)
    (root / "built").write_text(f"{time.perf_counter() - began:.1f}\n")
    return sample.name, time.perf_counter() - began


def alerts_of(sample: Sample, work: Path, significance: float | None = None) -> list[tuple]:
    """Publish every night of a built sample to a warehouse (once); its alerts (stage, dimension,
    value, opened night, relative rise, p-value), replayed as publish does, under the journey
    file's policy or with `significance` replacing its own."""
    from generator.generate import GenerateConfig
    from journey_defs.loader import BUILTIN_JOURNEYS, load_journey
    from warehouse.alerting import replay_alerts
    from warehouse.publish import publish

    root = work / sample.name
    start = GenerateConfig().start
    warehouse = root / f"evaluate-{sample.nights}.duckdb"
    journey = load_journey(BUILTIN_JOURNEYS["subscription"])
    if not warehouse.exists():
        publish(str(root / "lake"), warehouse, [start + timedelta(days=n) for n in range(sample.nights)], [journey],
                progress=lambda _: None)
    policy = journey.alerts if significance is None else replace(journey.alerts, significance=significance)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        alerts = replay_alerts(con, {journey.id: policy})
    return [(a["stage"], a["dimension"], a["dimension_value"], (a["opened_date"] - start).days, a["relative_rise"],
             a["p_value"]) for a in alerts.to_pylist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20, help="incident seeds and clean seeds, each (default 20)")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--stage", default="verify")
    parser.add_argument("--factor", type=float, default=2.0, help="drop-out multiplier of the incident")
    parser.add_argument("--onset", type=int, default=30, help="0-based day the incident starts")
    parser.add_argument("--incident-nights", type=int,
                        help="nights incident samples are run for (default: up to onset+1, the last that counts)")
    parser.add_argument("--jobs", type=int, default=2, help="samples built in parallel")
    parser.add_argument("--work", type=Path, help="where lakes are kept (default: a temporary folder, removed)")
    parser.add_argument("--only", choices=("build", "evaluate"), help="just build the lakes, or just evaluate them")
    parser.add_argument("--significance", type=float, action="append",
                        help="evaluate with this significance instead of the journey file's (repeatable)")
    args = parser.parse_args()
    days = 45
    incident = Incident(args.stage, args.onset, args.factor)
    incident_nights = args.incident_nights or args.onset + 2
    samples = ([Sample(seed, args.customers, days, incident_nights, incident) for seed in range(101, 101 + args.seeds)]
               + [Sample(seed, args.customers, days, days, None) for seed in range(1, 1 + args.seeds)])
    work = args.work or Path(tempfile.mkdtemp(prefix="journeys-detection-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.only != "evaluate":
            build_all(samples, work, args.jobs)
        if args.only != "build":
            for significance in args.significance or [None]:
                evaluate(samples, work, incident, significance)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def build_all(samples: list[Sample], work: Path, jobs: int) -> None:
    began = time.perf_counter()
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(build, sample, work) for sample in samples]
        for done, future in enumerate(as_completed(futures), 1):
            name, seconds = future.result()
            print(f"  built {done}/{len(samples)} {name} ({seconds:.0f} s; {time.perf_counter() - began:.0f} s so far)",
                  flush=True)


def evaluate(samples: list[Sample], work: Path, incident: Incident, significance: float | None) -> None:
    began = time.perf_counter()
    caught, quiet, noisy, delays = 0, 0, 0, []
    opened, reopened = {"incident": 0, "clean": 0}, {"incident": 0, "clean": 0}
    incident_samples = [s for s in samples if s.incident]
    clean_samples = [s for s in samples if not s.incident]
    for sample in samples:
        alerts = alerts_of(sample, work, significance)
        kind = "incident" if sample.incident else "clean"
        opened[kind] += len(alerts)
        reopened[kind] += len(alerts) - len({a[:3] for a in alerts})
        if sample.incident:
            hits = [a for a in alerts if a[0] == incident.stage and a[1] == "*" and a[3] >= incident.from_day]
            stray = [a for a in alerts if a[0] != incident.stage or a[3] < incident.from_day]
            delay = hits[0][3] - incident.from_day if hits else None
            caught += delay is not None and delay <= 1
            noisy += bool(stray)
            delays.append(delay)
            print(f"  {sample.name}: {'alert on night onset+%d' % delay if hits else 'NOT alerted'}"
                  f"{'; false alarms (before the onset or another stage): ' + repr(stray) if stray else ''}",
                  flush=True)
        else:
            quiet += not alerts
            print(f"  {sample.name}: {'quiet' if not alerts else 'ALERTS ' + repr(alerts)}", flush=True)
    n_incident, n_clean = len(incident_samples), len(clean_samples)
    print(f"incident {incident.stage} x{incident.factor:g} from day {incident.from_day}, "
          f"{samples[0].customers:,} customers over {samples[0].days} days, significance "
          f"{significance if significance is not None else 'of the journey file'}:")
    print(f"  caught within 2 nights: {caught}/{n_incident} ({caught / max(n_incident, 1):.0%}); "
          f"alert delays (nights after onset): {sorted(d for d in delays if d is not None)}; "
          f"samples with false alarms (before the onset or another stage): {noisy}/{n_incident}")
    print(f"  clean samples quiet: {quiet}/{n_clean} ({quiet / max(n_clean, 1):.0%})")
    print(f"  alerts opened: {opened['incident']} in incident samples (run {incident_samples[0].nights} nights), "
          f"{reopened['incident']} of them reopened; {opened['clean']} in clean samples, "
          f"{reopened['clean']} of them reopened" if incident_samples else "")
    print(f"  evaluation {time.perf_counter() - began:.0f} s, peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
