"""Detection-quality benchmark for rising drop-off alerts, at every stage of the demo map: how
often an incident is caught in time, how fast, against an oracle, and how often a clean sample
stays quiet.

For each seed the generator writes a sample (45 days), the pipeline runs night by night
exactly as the nightly flow does (one run per day, each one a snapshot as of that day), the
nights are published to a DuckDB warehouse and its alerts are replayed as publish does.
Incident samples carry `Incident(stage, onset, factor)`: from that day on, customers entering
the stage drop out `factor` times as often. Per stage, size and factor:

  allowed  = nights after the onset an alert may take: 1 (the second nightly run that sees any
             incident data: "within 2 nights"), plus the stage's p50 time in stage in whole
             days (measured on the clean samples: slow stages cannot show a drop sooner);
  caught   = an alert for the incident stage opened on night onset .. onset + allowed;
  delay    = nights from the onset to that alert (median over the caught and missed samples,
             a miss counting as past the run);
  stray    = an incident sample alerted before the onset or on another stage;
  quiet    = a clean sample raised no alert at all over its 45 nights;
  oracle   = a CUSUM of the same nightly moves told the true hazards before and after the
             onset (pooled from every clean sample and every incident sample of that stage and
             factor before the onset, and from those incident samples after it), watching the
             stage's whole series alone, with the threshold log(1 / significance) that gives
             the stage the same false-alarm rate: the physical limit for that rate.

The lakes are kept under --work, so evaluating again (another significance, another rule)
costs minutes, not the hours of building:

    .venv/bin/python -m benchmarks.detection --work /tmp/detection             # everything, 20 seeds
    .venv/bin/python -m benchmarks.detection --work /tmp/detection --customers 20000 --factors 2 --seeds 5
"""
from __future__ import annotations

import argparse
import math
import resource
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from datetime import timedelta
from multiprocessing import get_context
from pathlib import Path

import duckdb
import numpy as np

from generator.simulate import Incident

STAGES = ("discover", "sign_up", "verify", "first_purchase", "onboarding")  # the demo map's non-final stages
DAYS = 45
AFTER = {"discover": 3, "sign_up": 3, "verify": 3, "first_purchase": 15, "onboarding": 15}
"""Nights incident samples are run past the onset: past each stage's allowed delay, with room
to measure a late alert."""


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


def warehouse_of(sample: Sample, work: Path) -> Path:
    """Every night of a built sample published to a warehouse (once)."""
    from generator.generate import GenerateConfig
    from journey_defs.loader import BUILTIN_JOURNEYS, load_journey
    from warehouse.publish import publish

    root = work / sample.name
    warehouse = root / f"evaluate-{sample.nights}.duckdb"
    if not warehouse.exists():
        start = GenerateConfig().start
        publish(str(root / "lake"), warehouse, [start + timedelta(days=n) for n in range(sample.nights)],
                [load_journey(BUILTIN_JOURNEYS["subscription"])], progress=lambda _: None)
    return warehouse


@dataclass
class Seen:
    """What one sample's warehouse says: its alerts (stage, opened night, rise) and, per
    stage, the whole series' nightly moves (for the oracle) and p50 time in stage."""

    alerts: list[tuple]
    moves: dict[str, tuple]      # stage -> (first, at risk, moved) [entry night, age, slot]
    p50_days: dict[str, float]   # stage -> median time in stage of the movers, at the last night


def observe(sample: Sample, work: Path, significance: float | None) -> Seen:
    from generator.generate import GenerateConfig
    from journey_defs.loader import BUILTIN_JOURNEYS, load_journey
    from warehouse.alert_counts import EPOCH, read_counts
    from warehouse.alert_evidence import steps
    from warehouse.alerting import replay_alerts

    journey = load_journey(BUILTIN_JOURNEYS["subscription"])
    policy = journey.alerts if significance is None else replace(journey.alerts, significance=significance)
    start = GenerateConfig().start
    with duckdb.connect(str(warehouse_of(sample, work)), read_only=True) as con:
        alerts = [(a["stage"], (a["opened_date"] - start).days, a["relative_rise"], a["opened_by"])
                  for a in replay_alerts(con, {journey.id: policy}).to_pylist()]
        counts = read_counts(con, journey.id, journey.stages[-1].id, policy.recent_window.days)
        p50 = dict(con.execute(
            "SELECT stage, p50_time_in_stage_s / 86400 FROM stage_daily WHERE journey_id = ? AND channel = '*' "
            "AND segment = '*' AND date = (SELECT max(date) FROM stage_daily)", [journey.id]).fetchall())
    moves = {}
    for (stage, dimension, _), cells in counts.series.items():
        if dimension == "*":
            moves[stage] = (counts.first - (start - EPOCH).days, *steps(cells, counts.known))
    return Seen(alerts, moves, {k: v for k, v in p50.items() if v is not None})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20, help="incident seeds per stage, size and factor (default 20)")
    parser.add_argument("--clean-seeds", type=int, help="clean seeds per size (default: --seeds)")
    parser.add_argument("--customers", type=int, nargs="+", default=[20_000, 10_000])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--factors", type=float, nargs="+", default=[2.0, 3.0], help="drop-out multipliers")
    parser.add_argument("--onset", type=int, default=30, help="0-based day the incidents start")
    parser.add_argument("--jobs", type=int, default=2, help="samples built in parallel")
    parser.add_argument("--work", type=Path, help="where lakes are kept (default: a temporary folder, removed)")
    parser.add_argument("--only", choices=("build", "evaluate"), help="just build the lakes, or just evaluate them")
    parser.add_argument("--significance", type=float, help="evaluate with this significance instead of the journey file's")
    args = parser.parse_args()
    clean_seeds = args.clean_seeds if args.clean_seeds is not None else args.seeds
    samples = [Sample(seed, size, DAYS, args.onset + AFTER[stage], Incident(stage, args.onset, factor))
               for size in args.customers for seed in range(101, 101 + args.seeds)
               for stage in args.stages for factor in args.factors]
    samples += [Sample(seed, size, DAYS, DAYS, None) for size in args.customers for seed in range(1, 1 + clean_seeds)]
    work = args.work or Path(tempfile.mkdtemp(prefix="journeys-detection-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.only != "evaluate":
            build_all(samples, work, args.jobs)
        if args.only != "build":
            evaluate([s for s in samples if (work / s.name / "built").exists()], work, args)
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


def evaluate(samples: list[Sample], work: Path, args) -> None:
    from journey_defs.loader import BUILTIN_JOURNEYS, load_journey

    began = time.perf_counter()
    significance = args.significance or load_journey(BUILTIN_JOURNEYS["subscription"]).alerts.significance
    seen = {s: observe(s, work, args.significance) for s in samples}
    print(f"evaluated {len(samples)} samples in {time.perf_counter() - began:.0f} s "
          f"(significance {significance:g})", flush=True)
    for size in sorted({s.customers for s in samples}, reverse=True):
        clean = [s for s in samples if s.customers == size and s.incident is None]
        p50 = {stage: statistics.median(seen[s].p50_days[stage] for s in clean if stage in seen[s].p50_days)
               for stage in STAGES if clean}
        allowed = {stage: 1 + math.floor(days) for stage, days in p50.items()}
        noisy = [s for s in clean if seen[s].alerts]
        print(f"\n{size:,} customers over {DAYS} days: clean samples quiet {len(clean) - len(noisy)}/{len(clean)}"
              + "".join(f"; {s.name}: {seen[s].alerts}" for s in noisy))
        print(f"  {'stage':<15}{'factor':>7}{'p50 d':>7}{'allowed':>8}{'caught':>9}{'median':>8}{'stray':>7}"
              f"{'oracle':>9}{'median':>8}{'ratio':>7}  delays (nights after onset; - = not alerted)")
        groups = defaultdict(list)
        for s in samples:
            if s.customers == size and s.incident is not None:
                groups[(s.incident.stage, s.incident.factor)].append(s)
        for (stage, factor), group in sorted(groups.items(), key=lambda g: (STAGES.index(g[0][0]), g[0][1])):
            onset, window = group[0].incident.from_day, allowed.get(stage, 1)
            delays = [_delay(seen[s].alerts, stage, onset) for s in group]
            stray = sum(any(a[0] != stage or a[1] < onset for a in seen[s].alerts) for s in group)
            oracle = _oracle(group, clean, seen, stage, onset, significance)
            caught = sum(d is not None and d <= window for d in delays)
            oracle_caught = sum(d is not None and d <= window for d in oracle)
            ours, best = _median(delays, group), _median(oracle, group)
            print(f"  {stage:<15}{factor:>7g}{p50.get(stage, float('nan')):>7.1f}{window:>8}"
                  f"{caught:>4}/{len(group):<4}{ours:>8}{stray:>7}{oracle_caught:>4}/{len(group):<4}{best:>8}"
                  f"{_ratio(ours, best):>7}  {' '.join('-' if d is None else str(d) for d in delays)}"
                  f" | oracle {' '.join('-' if d is None else str(d) for d in oracle)}", flush=True)
    print(f"\nevaluation {time.perf_counter() - began:.0f} s, peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def _delay(alerts: list[tuple], stage: str, onset: int) -> int | None:
    hits = [a[1] - onset for a in alerts if a[0] == stage and a[1] >= onset]
    return min(hits) if hits else None


def _median(delays: list[int | None], group: list[Sample]) -> str:
    """Median delay, a miss counting as one night past the sample's last."""
    values = [d if d is not None else s.nights - s.incident.from_day for d, s in zip(delays, group)]
    value = statistics.median(values)
    return f"{value:g}" if all(d is not None for d in delays) or value < max(values) else f">{value:g}"


def _ratio(ours: str, best: str) -> str:
    """Our median delay over the oracle's (both 0: 1; the oracle's 0 against ours: "-")."""
    try:
        mine, limit = float(ours), float(best)
    except ValueError:
        return "-"
    if not limit:
        return "1.00" if not mine else "-"
    return f"{mine / limit:.2f}"


def _oracle(group: list[Sample], clean: list[Sample], seen: dict, stage: str, onset: int,
            significance: float) -> list[int | None]:
    """The oracle CUSUM's delay per incident sample (see the module docstring)."""
    from warehouse.alert_counts import AGE_CAP
    from warehouse.alert_evidence import Chart, hazard

    def pooled(samples, cohorts):
        risk = sum(seen[s].moves[stage][1][cohorts(seen[s].moves[stage][0])].sum(axis=0) for s in samples)
        moved = sum(seen[s].moves[stage][2][cohorts(seen[s].moves[stage][0])].sum(axis=0) for s in samples)
        return risk, moved

    # entry night index i is day first + i of the sample (day 0 = the sample's first)
    h0 = hazard(*pooled(clean + group, lambda first: slice(7 - first, onset - first)))  # before any onset
    risk, moved = pooled(group, lambda first: slice(onset - first, None))
    h1 = np.where(risk > 0, (moved + 0.5) / (risk + 1), h0)  # ages not seen after the onset: no change known
    limit = math.log(1 / significance)
    delays = []
    for s in group:
        first, at_risk, moved = seen[s].moves[stage]
        chart = Chart((), first=7 - first)
        delay = None
        for night in range(7, s.nights):
            if chart.add(at_risk, moved, h0, night - first, AGE_CAP, h1=(h1,)) >= limit:
                if night >= onset:
                    delay = night - onset
                    break
                chart.restart(night - first)  # an oracle false alarm: counted by starting over
        delays.append(delay)
    return delays


if __name__ == "__main__":
    main()
