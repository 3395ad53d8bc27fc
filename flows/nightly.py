"""Prefect flows: `nightly(run_date, options)` and `backfill(start, end, options)` — each
night's stage → gate → commit → publish as separate tasks under the lake's writer lock,
then the alerts that changed are notified.

Retries only where a failure can pass (a busy lake or warehouse, a notification target down,
a network or storage hiccup: flows.night.is_transient); a configuration error, broken input
(RunFailed) or a failed gate fails at once with the reason as the flow's state.

No `from __future__ import annotations` here: Prefect validates deployment parameters
against these annotations and needs them as real types."""

import os
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline machines: no telemetry attempts
os.environ.setdefault("DO_NOT_TRACK", "1")

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.runtime import task_run  # noqa: E402

from flows import night  # noqa: E402
from flows.notify import night_changes, notify_urls, send  # noqa: E402
from flows.options import NightOptions  # noqa: E402
from flows.preflight import check_ready, days_between  # noqa: E402
from lake import writer_lock  # noqa: E402
from pipelines.journey_pipeline import RunConfig, StagedRun  # noqa: E402
from warehouse.query import query  # noqa: E402


def _transient(_task, _task_run, state) -> bool:
    return night.is_transient(state.result(raise_on_failure=False))


def _retrying(retries: int):
    return dict(retries=retries, retry_condition_fn=_transient, cache_policy=NO_CACHE)


@task(name="stage", **_retrying(2))
def stage(config: RunConfig) -> StagedRun:
    return night.stage(config)


@task(name="gate", cache_policy=NO_CACHE)
def gate(staged: StagedRun, options: NightOptions):
    return night.gate(staged, options.validation_path, options.gate_limits)


@task(name="commit", **_retrying(2))
def commit(staged: StagedRun, checked) -> int:
    return night.commit(staged, checked)


@task(name="publish", **_retrying(3))
def publish(options: NightOptions, config: RunConfig) -> dict:
    report = night.publish(options, config)
    return {"rows": report.rows, "seconds": round(report.seconds, 2), "attempts": task_run.run_count}


@task(name="notify", **_retrying(3))
def notify_alerts(warehouse: str, day: date, urls: list[str]) -> dict:
    """Send the alerts that opened, escalated or resolved tonight to every Apprise URL."""
    alerts = query(warehouse, "SELECT * FROM alerts").to_pylist()
    changes = night_changes(alerts, day)
    return {"changes": len(changes), "sent_to": send(changes, day, urls),
            "open": sum(a["status"] != "resolved" for a in alerts)}


def _night(day: date, options: NightOptions) -> dict:
    """One night's tasks; the caller holds the lake's writer lock."""
    delay = {"retry_delay_seconds": options.retry_delay_seconds}
    config = options.run_config(day)
    staged = stage.with_options(**delay)(config)
    checked = gate(staged, options)
    version = commit.with_options(**delay)(staged, checked)
    published = publish.with_options(**delay)(options, config) if options.publish else None
    summary = {"date": day.isoformat(), "run_id": staged.run_id, "records": staged.records, "events": staged.events,
               "bad_rows": staged.bad_rows, "seconds": round(staged.seconds, 1), "lake_version": version,
               "warnings": [f"{w['suite']}: {w['observed']}" for w in (checked.warnings if checked else [])],
               "publish": published}
    if options.publish:
        summary["alerts"] = notify_alerts.with_options(**delay)(options.warehouse_path, day,
                                                               notify_urls(list(options.notify)))
    return summary


def yesterday(timezone: str) -> date:
    """The day a 02:00 run processes: the one before today, in the schedule's time zone."""
    return datetime.now(ZoneInfo(timezone)).date() - timedelta(days=1)


@flow(name="journeys-nightly", log_prints=True)
def nightly(run_date: date | None, options: NightOptions, timezone: str = "UTC") -> dict:
    """One night: ingest run_date's raw files (default: yesterday in `timezone`), rebuild
    journeys, gate, commit, publish (alerts are replayed there), notify the alerts that changed."""
    day = run_date or yesterday(timezone)
    check_ready(options, [day])  # a scheduled run fails in one line, as the command does
    with writer_lock(options.lake_root, options.lock_timeout, print, f"journeys nightly {day}"):
        return _night(day, options)


@flow(name="journeys-backfill", log_prints=True)
def backfill(start: date, end: date, options: NightOptions) -> list[dict]:
    """The nightly logic for every day from start to end, in date order, under one hold of
    the lake's lock; stops at the first day that fails (later days would build on a gap)."""
    days = days_between(start, end, "backfill start", "its end")
    check_ready(options, days)
    with writer_lock(options.lake_root, options.lock_timeout, print, f"journeys backfill {start}..{end}"):
        return [_night(day, options) for day in days]
