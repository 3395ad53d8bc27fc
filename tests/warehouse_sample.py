"""The small multi-day sample the warehouse and report tests share (fixture in conftest)."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from generator.generate import GenerateConfig, generate
from journey_defs.loader import BUILTIN_JOURNEYS, load_journey
from flows.night import stage_and_commit as run
from pipelines.journey_pipeline import RunConfig

CONFIG = GenerateConfig(customers=700, days=5, seed=11, fault_rate=0.01)
DAYS = [CONFIG.start + timedelta(days=d) for d in range(CONFIG.days)]
LAST = DAYS[-1]
JOURNEY = load_journey(BUILTIN_JOURNEYS["subscription"])


def build(root: Path) -> tuple[Path, str]:
    """Generate the sample under root and run the pipeline once per day into root/lake."""
    data, lake_dir = root / "data", root / "lake"
    generate(data, CONFIG, progress=lambda _: None)
    for day in DAYS:
        run(RunConfig(data_dir=str(data), lake=str(lake_dir), journeys=(JOURNEY,), as_of=day, n_buckets=4),
            progress=lambda _: None)
    return data, str(lake_dir)
