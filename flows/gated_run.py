"""One night's work without the scheduler: the pipeline, its quality gate before the lake
commit, then the atomic publish. A gate failure leaves the lake and the warehouse as they
were; its record stays under the validation folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from expectations.run_context import GateLimits, RunContext
from journey_defs.source_spec import load_sources
from pipelines.journey_pipeline import RunConfig, RunReport, run
from warehouse.publish import PublishReport, publish

if TYPE_CHECKING:
    from expectations.gate import GateResult


@dataclass
class NightReport:
    run: RunReport
    gate: GateResult | None
    publish: PublishReport | None


def gate_context(config: RunConfig, staging: str, run_id: str) -> RunContext:
    """What the gate checks a run's staged output against."""
    specs = load_sources(sorted({s for j in config.journeys for s in j.sources}), config.sources_dirs)
    return RunContext(run_id=run_id, as_of=config.as_of, days=config.days, staging=staging, lake=config.lake,
                      journeys=config.journeys, specs=specs, allowed_lateness=config.limits.allowed_lateness,
                      max_clock_skew=config.limits.max_clock_skew)


def gated_run(config: RunConfig, validation_dir: str | Path | None, warehouse: str | Path | None,
              limits: GateLimits = GateLimits(), progress=print) -> NightReport:
    """Run, gate (unless validation_dir is None) and publish (unless warehouse is None)."""
    outcome: list = []

    def gate(staging: str, run_id: str):
        from expectations.gate import run_gate  # imported here so the gate's time includes loading GX (~3 s)

        result = run_gate(gate_context(config, staging, run_id), validation_dir, limits, progress)
        outcome.append(result)
        return result.checks

    report = run(config, progress, gate if validation_dir is not None else None)
    published = publish_run(config, warehouse, progress) if warehouse is not None else None
    return NightReport(report, outcome[0] if outcome else None, published)


def publish_run(config: RunConfig, warehouse: str | Path, progress=print, lock_timeout: float = 600.0) -> PublishReport:
    """Publish what a run owns (its ingest days and its as-of day), reporting only the summary line."""
    return publish(config.lake, warehouse, sorted({*config.days, config.as_of}), config.journeys,
                   progress=lambda message: message.startswith("published") and progress(message),
                   lock_timeout=lock_timeout)
