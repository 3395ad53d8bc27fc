"""Prefect flows: `nightly(run_date)` — pipeline with its quality gate, then publish — and
`backfill(start, end)`, the same per-day logic in date order.

Retries where a failure can pass (reading raw files from remote storage, a warehouse held
by another publisher); none where it cannot (the input is broken: RunFailed, GateFailed,
a bad journey or source definition), which fail at once with the reason as their state.

No `from __future__ import annotations` here: Prefect validates deployment parameters
against these annotations and needs them as real types."""

import os
import sys
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline machines: no telemetry attempts
os.environ.setdefault("DO_NOT_TRACK", "1")

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.runtime import task_run  # noqa: E402

from expectations.run_context import GateLimits  # noqa: E402
from flows.gated_run import gated_run, publish_run  # noqa: E402
from flows.notify import night_changes, notify_urls, send  # noqa: E402
from journey_defs.config_yaml import ConfigError  # noqa: E402
from journey_defs.loader import load_journey, resolve_journey  # noqa: E402
from journey_defs.source_spec import available_sources  # noqa: E402
from pipelines.journey_pipeline import RunConfig, RunFailed  # noqa: E402
from warehouse.publish import NothingToPublish  # noqa: E402
from warehouse.query import query  # noqa: E402

RETRY_DELAY_SECONDS = 30


def _transient(_task, _task_run, state) -> bool:
    """Retry unless the failure is about the data or the configuration (NotifyFailed and a
    busy warehouse are worth another try)."""
    error = state.result(raise_on_failure=False)
    gate = sys.modules.get("expectations.gate")
    permanent = (RunFailed, ConfigError, NothingToPublish, ValueError) + ((gate.GateFailed,) if gate else ())
    return not isinstance(error, permanent)


@task(name="pipeline-and-gate", retries=2, retry_delay_seconds=RETRY_DELAY_SECONDS, retry_condition_fn=_transient,
      cache_policy=NO_CACHE)
def run_pipeline(config: RunConfig, validation_dir: str | None, limits: GateLimits) -> dict:
    night = gated_run(config, validation_dir, None, limits)
    return {"run_id": night.run.run_id, "records": night.run.records, "events": night.run.events,
            "bad_rows": night.run.bad_rows, "seconds": round(night.run.seconds, 1),
            "warnings": [f"{w['suite']}: {w['observed']}" for w in (night.gate.warnings if night.gate else [])],
            "attempts": task_run.run_count}


@task(name="notify", retries=3, retry_delay_seconds=RETRY_DELAY_SECONDS, retry_condition_fn=_transient,
      cache_policy=NO_CACHE)
def notify_alerts(warehouse: str, night: date, urls: list[str]) -> dict:
    """Send the alerts that opened, escalated or resolved tonight to every Apprise URL."""
    alerts = query(warehouse, "SELECT * FROM alerts").to_pylist()
    changes = night_changes(alerts, night)
    return {"changes": len(changes), "sent_to": send(changes, night, urls),
            "open": sum(a["status"] != "resolved" for a in alerts)}


@task(name="publish", retries=3, retry_delay_seconds=RETRY_DELAY_SECONDS, retry_condition_fn=_transient,
      cache_policy=NO_CACHE)
def publish_day(config: RunConfig, warehouse: str, lock_timeout: float) -> dict:
    report = publish_run(config, warehouse, lock_timeout=lock_timeout)
    return {"rows": report.rows, "seconds": round(report.seconds, 2), "attempts": task_run.run_count}


def _config(run_date: date, data_dir: str, journeys: list[str], lake: str | None, sources_dirs: list[str],
            n_buckets: int, bad_row_threshold: float) -> RunConfig:
    known = available_sources([Path(d) for d in sources_dirs])
    maps = tuple(load_journey(resolve_journey(name), known_sources=known) for name in journeys)
    return RunConfig(data_dir=data_dir, lake=lake or data_dir.rstrip("/") + "/lake", journeys=maps, as_of=run_date,
                     ingest_days=(run_date,), sources_dirs=tuple(sources_dirs), n_buckets=n_buckets,
                     bad_row_threshold=bad_row_threshold)


def _night(run_date: date, data_dir: str, journeys: list[str], lake: str | None, warehouse: str | None,
           validation_dir: str | None, sources_dirs: list[str], n_buckets: int, bad_row_threshold: float,
           off_map_threshold: float, lock_timeout: float, retry_delay_seconds: float, notify: list[str] | None) -> dict:
    config = _config(run_date, data_dir, journeys, lake, sources_dirs, n_buckets, bad_row_threshold)
    limits = GateLimits(bad_row_threshold=bad_row_threshold, off_map_share=off_map_threshold)
    ran = run_pipeline.with_options(retry_delay_seconds=retry_delay_seconds)(
        config, validation_dir or str(Path(data_dir) / "validation"), limits)
    warehouse = warehouse or str(Path(data_dir) / "warehouse.duckdb")
    published = publish_day.with_options(retry_delay_seconds=retry_delay_seconds)(config, warehouse, lock_timeout)
    alerts = notify_alerts.with_options(retry_delay_seconds=retry_delay_seconds)(warehouse, run_date,
                                                                                 notify_urls(notify))
    return {"date": run_date.isoformat(), "run": ran, "publish": published, "alerts": alerts}


def yesterday(timezone: str) -> date:
    """The day a 02:00 run processes: the one before today, in the schedule's time zone."""
    return datetime.now(ZoneInfo(timezone)).date() - timedelta(days=1)


@flow(name="journeys-nightly", log_prints=True)
def nightly(run_date: date | None, data_dir: str, journeys: list[str], lake: str | None = None,
            warehouse: str | None = None,
            validation_dir: str | None = None, sources_dirs: list[str] | None = None, n_buckets: int = 16,
            bad_row_threshold: float = 0.05, off_map_threshold: float = 0.10, lock_timeout: float = 600.0,
            retry_delay_seconds: float = RETRY_DELAY_SECONDS, notify: list[str] | None = None,
            timezone: str = "UTC") -> dict:
    """One night: ingest run_date's raw files (default: yesterday in `timezone`), rebuild
    journeys, gate, publish (alerts are replayed there), notify the alerts that changed."""
    return _night(run_date or yesterday(timezone), data_dir, journeys, lake, warehouse, validation_dir, sources_dirs or [], n_buckets,
                  bad_row_threshold, off_map_threshold, lock_timeout, retry_delay_seconds, notify)


@flow(name="journeys-backfill", log_prints=True)
def backfill(start: date, end: date, data_dir: str, journeys: list[str], lake: str | None = None,
             warehouse: str | None = None, validation_dir: str | None = None, sources_dirs: list[str] | None = None,
             n_buckets: int = 16, bad_row_threshold: float = 0.05, off_map_threshold: float = 0.10,
             lock_timeout: float = 600.0, retry_delay_seconds: float = RETRY_DELAY_SECONDS,
             notify: list[str] | None = None) -> list[dict]:
    """The nightly logic for every day from start to end, in date order; stops at the first
    day that fails (later days would build on a gap)."""
    if start > end:
        raise ValueError(f"backfill start {start} is after its end {end}")
    return [_night(start + timedelta(days=i), data_dir, journeys, lake, warehouse, validation_dir, sources_dirs or [],
                   n_buckets, bad_row_threshold, off_map_threshold, lock_timeout, retry_delay_seconds, notify)
            for i in range((end - start).days + 1)]
