"""The steps of a night, in the order the flow runs them: stage → gate → commit → publish.

Why the steps live here and not in the pipeline: each one has its own failure and retry
rules (a config error never passes, a busy warehouse does), so the Prefect flow runs each
as a task of its own, and `journeys run` calls the same functions in the same order without
Prefect. Whoever runs them holds the lake's writer lock around the whole sequence."""
from __future__ import annotations

import errno
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

from expectations.run_context import GateLimits, RunContext
from flows.options import NightOptions
from lake import LakeBusy, LakeConflict, commit as commit_run, crash, discard, writer_lock
from lake.files import write_table
from pipelines.journey_pipeline import RunConfig, StagedRun, run as run_pipeline
from warehouse.publish import PublishReport, WarehouseBusy, publish as publish_days

if TYPE_CHECKING:
    from expectations.gate import GateResult

TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED,
                    errno.ECONNABORTED, errno.ENETUNREACH, errno.EHOSTUNREACH}


@dataclass
class NightReport:
    staged: StagedRun
    gate: GateResult | None
    version: int                      # the lake's commit record after this run
    publish: PublishReport | None
    seconds: float = 0.0              # the whole sequence, lock wait included
    lock_seconds: float = 0.0         # waiting for and taking the lake's writer lock
    commit_seconds: float = 0.0       # writing the commit record and removing what it superseded


def stage(config: RunConfig, progress=print) -> StagedRun:
    """The pipeline into the run's own lake folder; nothing committed yet."""
    return run_pipeline(config, progress)


def gate(staged: StagedRun, validation_dir: str | None, limits: GateLimits = GateLimits(),
         progress=print) -> GateResult | None:
    """The quality gate over the staged output (none when validation_dir is None); a failure
    discards the run's folder."""
    if validation_dir is None:
        return None
    from expectations.gate import run_gate  # here so the gate's time includes loading GX (~3 s)

    try:
        result = run_gate(gate_context(staged), validation_dir, limits, progress)
    except BaseException:
        discard(staged.folder)
        raise
    crash.point("gate", staged.folder.path)
    return result


def commit(staged: StagedRun, checked: GateResult | None = None) -> int:
    """Make the run's partitions (and its gate's checks) the lake's current ones, together."""
    try:
        if checked is not None:
            write_table(staged.folder.part_path("checks", staged.config.as_of, staged.run_id, "gate"), checked.checks)
        return commit_run(staged.folder, staged.info(), staged.owned(), staged.based_on).version
    except LakeConflict:
        discard(staged.folder)
        raise


def publish(options: NightOptions, config: RunConfig, progress=print) -> PublishReport | None:
    """Publish what the run owns (its ingest days and its as-of day) into the warehouse."""
    if options.warehouse_path is None:
        return None
    return publish_days(config.lake, options.warehouse_path, sorted({*config.days, config.as_of}), config.journeys,
                        progress=lambda message: message.startswith("published") and progress(message),
                        lock_timeout=options.lock_timeout)


def run_night(options: NightOptions, as_of: date, ingest_days: tuple[date, ...] = (), progress=print,
              as_of_at: datetime | None = None) -> NightReport:
    """`journeys run`: the whole sequence under the lake's writer lock, without Prefect;
    `as_of_at` = an as-of instant within `as_of` (default: its end, README *Semantics*)."""
    config = options.run_config(as_of, ingest_days, as_of_at)
    began = time.perf_counter()
    with writer_lock(options.lake_root, options.lock_timeout, progress, command_line()):
        locked = time.perf_counter()
        staged = stage(config, progress)
        checked = gate(staged, options.validation_path, options.gate_limits, progress)
        committing = time.perf_counter()
        version = commit(staged, checked)
        committed = time.perf_counter()
        published = publish(options, config, progress)
    return NightReport(staged, checked, version, published, time.perf_counter() - began, locked - began,
                       committed - committing)


def gate_context(staged: StagedRun) -> RunContext:
    """What the gate checks a run's staged output against."""
    from journey_defs.source_spec import load_sources
    from lake import open_snapshot

    config = staged.config
    specs = load_sources(sorted({s for j in config.journeys for s in j.sources}), config.sources_dirs)
    return RunContext(run_id=staged.run_id, as_of=config.as_of, days=config.days, staged=staged.folder,
                      lake=open_snapshot(config.lake), journeys=config.journeys, specs=specs,
                      allowed_lateness=config.limits.allowed_lateness, max_clock_skew=config.limits.max_clock_skew)


def is_transient(error: BaseException | None) -> bool:
    """Worth retrying: a busy lock, a failed delivery, a network or storage hiccup. Never a
    configuration error, broken input or a failed gate."""
    from flows.notify import NotifyFailed

    if isinstance(error, (LakeBusy, WarehouseBusy, NotifyFailed, ConnectionError)):
        return True
    return isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS


def command_line() -> str:
    """This process's command, for the lock's holder record."""
    return " ".join(["journeys", *sys.argv[1:]])[:200] if sys.argv else "journeys"


def stage_and_commit(config: RunConfig, progress=print, lock_timeout: float | None = None) -> StagedRun:
    """Stage and commit without a gate or a publish, under the lake's lock: how tests and
    benchmarks build a lake."""
    with writer_lock(config.lake, lock_timeout, progress, command_line()):
        staged = stage(config, progress)
        commit(staged)
    return staged
