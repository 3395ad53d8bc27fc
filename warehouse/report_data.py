"""What the journey report shows, read from the warehouse's tables and views (read-only)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb

from warehouse.query import QueryError, open_readonly, query_error


@dataclass(frozen=True)
class Station:
    """One stage of the intended map with what real customers did there as of the day."""

    index: int
    stage: str
    name: str
    optional: bool
    reached: int
    reached_next: int | None
    drop_off_rate: float | None
    stalled: int
    dropped: int
    in_stage: int
    p50_hours: float | None
    p90_hours: float | None
    trend: tuple[tuple[date, float | None], ...]  # (day, drop_off_rate) over the trend window


@dataclass(frozen=True)
class ReportData:
    journey_id: str
    journey_version: str
    as_of: date
    stations: tuple[Station, ...]
    customers: int
    statuses: dict[str, int]
    deviations: tuple[tuple[str, str, int], ...]     # (kind, stage, customers), most first
    off_map: tuple[tuple[str, str, int], ...]        # (channel, event_type, events), most first
    alerts: tuple[dict, ...]                         # alerts of the journey open on as_of
    quality_warnings: tuple[tuple[str, str], ...] = ()  # (check, what it saw) of the as-of run's gate
    gate_checks: int | None = None  # checks the day's gate evaluated (run_checks rows): 0 = the gate did not run
    ungated_runs: tuple[str, ...] = ()  # runs of the day (run_files) with no run_checks row: run with --no-gate

    @property
    def gate_ran(self) -> bool:
        """Whether the quality gate ran for the as-of day (unknown, None, counts as ran)."""
        return self.gate_checks != 0

    @property
    def top_drop_off(self) -> Station | None:
        rated = [s for s in self.stations if s.drop_off_rate is not None and s.reached]
        return max(rated, key=lambda s: s.drop_off_rate) if rated else None


def load_report_data(warehouse: str | Path, journey_id: str, as_of: date, trend_days: int = 14) -> ReportData:
    """The report's figures, read through the sealed connection of `journeys query`; a DuckDB
    error (a refused file read, a warehouse of an older layout) is a one-line QueryError."""
    con = open_readonly(warehouse)
    try:
        return _load(con, journey_id, as_of, trend_days)
    except duckdb.Error as exc:
        raise query_error(exc) from None
    finally:
        con.close()


def _load(con, journey_id: str, as_of: date, trend_days: int) -> ReportData:
    stages = con.execute("SELECT stage_index, stage, stage_name, optional, journey_version FROM journey_maps "
                         "WHERE journey_id = ? ORDER BY stage_index", [journey_id]).fetchall()
    if not stages:
        known = [r[0] for r in con.execute("SELECT DISTINCT journey_id FROM journey_maps ORDER BY 1").fetchall()]
        raise QueryError(f"journey '{journey_id}' is not in the warehouse (published: {', '.join(known) or 'none'})")
    if not con.execute("SELECT 1 FROM journeys WHERE journey_id = ? AND as_of_date = ? LIMIT 1",
                       [journey_id, as_of]).fetchone():
        latest = con.execute("SELECT max(as_of_date) FROM journeys WHERE journey_id = ?", [journey_id]).fetchone()[0]
        raise QueryError(f"journey '{journey_id}' has no published run as of {as_of} "
                         f"(latest: {latest or 'none'})")
    funnel = {r[0]: r[1:] for r in con.execute(
        "SELECT stage, reached, reached_next, drop_off_rate, stalled, dropped, in_stage FROM funnel "
        "WHERE journey_id = ? AND date = ?", [journey_id, as_of]).fetchall()}
    times = {r[0]: r[1:] for r in con.execute(
        "SELECT stage, p50_hours, p90_hours FROM time_in_stage WHERE journey_id = ? AND date = ?",
        [journey_id, as_of]).fetchall()}
    first = as_of - timedelta(days=trend_days - 1)
    trend: dict[str, list] = {}
    for stage, day, rate in con.execute(
            "SELECT stage, date, drop_off_rate FROM funnel WHERE journey_id = ? AND date BETWEEN ? AND ? "
            "ORDER BY date", [journey_id, first, as_of]).fetchall():
        trend.setdefault(stage, []).append((day, rate))
    stations = []
    for index, stage, name, optional, _ in stages:
        reached, reached_next, rate, stalled, dropped, in_stage = funnel.get(stage, (0, None, None, 0, 0, 0))
        p50, p90 = times.get(stage, (None, None))
        stations.append(Station(index, stage, name, optional, reached or 0, reached_next, rate, stalled or 0,
                                dropped or 0, in_stage or 0, p50, p90, tuple(trend.get(stage, ()))))
    statuses = dict(con.execute("SELECT status, count(*) FROM journeys WHERE journey_id = ? AND as_of_date = ? "
                                "GROUP BY status ORDER BY status", [journey_id, as_of]).fetchall())
    deviations = tuple(con.execute(
        "SELECT kind, coalesce(stage, '-'), count(DISTINCT customer_id) AS n FROM deviations "
        "WHERE journey_id = ? AND as_of_date = ? GROUP BY ALL ORDER BY n DESC, 1, 2 LIMIT 8",
        [journey_id, as_of]).fetchall())
    off_map = tuple(con.execute(
        "SELECT channel, event_type, n_events FROM off_map WHERE journey_id = ? AND partition_date = ? "
        "ORDER BY n_events DESC, channel, event_type LIMIT 8", [journey_id, as_of]).fetchall())
    alerts = alerts_open_on(con, journey_id, as_of)
    warnings = tuple(con.execute(
        "SELECT suite, observed FROM run_checks WHERE partition_date = ? AND NOT success AND severity = 'warning' "
        "ORDER BY suite, columns", [as_of]).fetchall())
    gate_checks = con.execute("SELECT count(*) FROM run_checks WHERE partition_date = ?", [as_of]).fetchone()[0]
    ungated = tuple(r[0] for r in con.execute(
        "SELECT DISTINCT run_id FROM run_files WHERE partition_date = $d AND run_id NOT IN "
        "(SELECT run_id FROM run_checks WHERE partition_date = $d) ORDER BY 1", {"d": as_of}).fetchall())
    return ReportData(journey_id, stages[0][4], as_of, tuple(stations), sum(statuses.values()), statuses,
                      deviations, off_map, alerts, warnings, gate_checks, ungated)


def alerts_open_on(con: duckdb.DuckDBPyConnection, journey_id: str, as_of: date) -> tuple[dict, ...]:
    """The journey's alerts open on `as_of`, as they stood that night: status, figures and
    breakdown then (from alert_nights and alert_slices), not the latest. Each alert's
    `slices` are its breakdown's rows of that night, most missing movers first."""
    rows = con.execute("SELECT a.alert_id, a.stage, a.opened_by, a.opened_date, n.* "
                       "EXCLUDE (alert_id, journey_id, night) FROM alerts a JOIN alert_nights n USING (alert_id) "
                       "WHERE a.journey_id = $j AND n.night = $d AND n.status <> 'resolved' "
                       "ORDER BY a.opened_date, a.stage", {"j": journey_id, "d": as_of})
    names = [d[0] for d in rows.description]
    alerts = [dict(zip(names, r)) for r in rows.fetchall()]
    slices = con.execute("SELECT * EXCLUDE (journey_id, night) FROM alert_slices WHERE journey_id = $j AND night = $d "
                         "ORDER BY alert_id, expected_moved_on - moved_on DESC, dimension, dimension_value",
                         {"j": journey_id, "d": as_of})
    names = [d[0] for d in slices.description]
    by_alert: dict[str, list[dict]] = {}
    for row in slices.fetchall():
        item = dict(zip(names, row))
        by_alert.setdefault(item.pop("alert_id"), []).append(item)
    return tuple({**a, "slices": tuple(by_alert.get(a["alert_id"], ()))} for a in alerts)
