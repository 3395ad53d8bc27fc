"""Rising drop-off detection over the published snapshots, and the alerts it keeps.

A stage's drop-off for a cohort day is the share of the customers who entered the stage that
day and had not moved on to a later stage 24 hours after entering (read from the snapshot
published the night after, when every such cohort has matured). Each night the recent
cohorts (the journey's `recent_window`) are compared with the ones before them
(`baseline_window`); an alert needs all three: the relative rise passes the journey's
`min_relative_rise`, a one-sided two-proportion z-test is significant at its
`significance`, and both windows hold `min_sample` customers. One alert per journey, stage
and dimension (the whole stage, an entry channel, a segment): opened once, escalated when
the rise grows half again past where it opened, resolved when the condition no longer holds.

The alerts table is replayed from the whole history at every publish: the same published
days always give the same alerts, whatever order or grouping they were published in."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import pyarrow as pa

from journey_defs.model import AlertPolicy
from warehouse.tables import ALERTS

HORIZON_HOURS = 24
ESCALATE_AT = 1.5  # relative rise this many times the one the alert opened with


@dataclass(frozen=True)
class Comparison:
    recent_n: int
    recent_dropped: int
    baseline_n: int
    baseline_dropped: int

    @property
    def recent_rate(self) -> float:
        return self.recent_dropped / self.recent_n if self.recent_n else 0.0

    @property
    def baseline_rate(self) -> float:
        return self.baseline_dropped / self.baseline_n if self.baseline_n else 0.0

    @property
    def relative_rise(self) -> float:
        return self.recent_rate / self.baseline_rate - 1 if self.baseline_rate else 0.0

    @property
    def p_value(self) -> float:
        """One-sided two-proportion z-test that the recent rate is higher than the baseline."""
        n1, n0 = self.recent_n, self.baseline_n
        if not n1 or not n0:
            return 1.0
        pooled = (self.recent_dropped + self.baseline_dropped) / (n1 + n0)
        spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
        if spread == 0:
            return 1.0
        z = (self.recent_rate - self.baseline_rate) / spread
        return 0.5 * math.erfc(z / math.sqrt(2))

    def alarming(self, policy: AlertPolicy) -> bool:
        return (self.recent_n >= policy.min_sample and self.baseline_n >= policy.min_sample
                and self.relative_rise >= policy.min_relative_rise and self.p_value < policy.significance)


def cohort_counts(con: duckdb.DuckDBPyConnection) -> dict[tuple, dict[date, tuple[int, int]]]:
    """(journey, stage, dimension, value) -> cohort day -> (entered, dropped within the horizon)."""
    rows = con.execute(f"""
        WITH s AS (
            SELECT journey_id, stage, entry_channel, segment, CAST(entered_at AS DATE) AS cohort,
                   left_at IS NULL OR left_at > entered_at + INTERVAL {HORIZON_HOURS} HOUR AS dropped
            FROM journey_stages
            WHERE as_of_date = CAST(entered_at AS DATE) + 1),
        d AS (
            SELECT journey_id, stage, cohort, dropped, '*' AS dimension, '*' AS value FROM s
            UNION ALL SELECT journey_id, stage, cohort, dropped, 'channel', entry_channel FROM s
            UNION ALL SELECT journey_id, stage, cohort, dropped, 'segment', coalesce(segment, '(unknown)') FROM s)
        SELECT journey_id, stage, dimension, value, cohort, count(*), count(*) FILTER (WHERE dropped)
        FROM d GROUP BY ALL""").fetchall()
    out: dict[tuple, dict[date, tuple[int, int]]] = {}
    for journey_id, stage, dimension, value, cohort, n, dropped in rows:
        out.setdefault((journey_id, stage, dimension, value), {})[cohort] = (n, dropped)
    return out


def compare(cohorts: dict[date, tuple[int, int]], night: date, policy: AlertPolicy) -> Comparison:
    """Recent cohorts (matured by `night`) against the baseline cohorts before them."""
    last = night - timedelta(days=1)
    recent = [last - timedelta(days=i) for i in range(policy.recent_window.days)]
    baseline = [recent[-1] - timedelta(days=i) for i in range(1, policy.baseline_window.days + 1)]
    total = lambda days, i: sum(cohorts.get(d, (0, 0))[i] for d in days)  # noqa: E731
    return Comparison(total(recent, 0), total(recent, 1), total(baseline, 0), total(baseline, 1))


def policies(con: duckdb.DuckDBPyConnection) -> dict[str, AlertPolicy]:
    """Each journey's alert policy, as recorded in journey_maps."""
    return {j: AlertPolicy(timedelta(days=recent), timedelta(days=baseline), rise, alpha, sample)
            for j, recent, baseline, rise, alpha, sample in con.execute(
                "SELECT journey_id, any_value(alert_recent_days), any_value(alert_baseline_days), "
                "any_value(alert_min_relative_rise), any_value(alert_significance), any_value(alert_min_sample) "
                "FROM journey_maps WHERE alert_recent_days IS NOT NULL GROUP BY 1").fetchall()}


def replay_alerts(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The alerts table from every published night, in date order."""
    journey_policies = policies(con)
    final = {r[0]: r[1] for r in con.execute(
        "SELECT journey_id, arg_max(stage, stage_index) FROM journey_maps GROUP BY 1").fetchall()}
    nights = [r[0] for r in con.execute("SELECT DISTINCT as_of_date FROM journeys ORDER BY 1").fetchall()]
    open_alerts: dict[tuple, dict] = {}
    rows: list[dict] = []
    for key, cohorts in sorted(cohort_counts(con).items()):
        journey_id, stage, dimension, value = key
        if final.get(journey_id) == stage:
            continue
        policy = journey_policies.get(journey_id, AlertPolicy())
        for night in (n for n in nights if n > min(cohorts)):
            result = compare(cohorts, night, policy)
            alert = open_alerts.get(key)
            if result.alarming(policy):
                if alert is None:
                    alert = open_alerts[key] = _opened(key, night, result)
                    rows.append(alert)
                else:
                    if alert["status"] == "open" and result.relative_rise >= ESCALATE_AT * alert["_opened_rise"]:
                        alert["status"], alert["escalated_date"] = "escalated", night
                    _update(alert, night, result)
            elif alert is not None:
                _update(alert, night, result)
                alert["status"], alert["resolved_date"] = "resolved", night
                del open_alerts[key]
    for row in rows:
        row.pop("_opened_rise")
    return pa.Table.from_pylist(rows, schema=ALERTS)


def _opened(key: tuple, night: date, result: Comparison) -> dict:
    journey_id, stage, dimension, value = key
    alert = {"alert_id": f"{journey_id}:{stage}:{dimension}:{value}:{night.isoformat()}", "journey_id": journey_id,
             "stage": stage, "dimension": dimension, "dimension_value": value, "opened_date": night,
             "escalated_date": None, "resolved_date": None, "status": "open", "_opened_rise": result.relative_rise}
    _update(alert, night, result)
    return alert


def _update(alert: dict, night: date, result: Comparison) -> None:
    where = "" if alert["dimension"] == "*" else f" ({alert['dimension']} {alert['dimension_value']})"
    alert.update(updated_date=night, baseline_drop_rate=result.baseline_rate, recent_drop_rate=result.recent_rate,
                 relative_rise=result.relative_rise, p_value=result.p_value,
                 message=f"{alert['stage']}{where}: drop-off within {HORIZON_HOURS} h of entry "
                         f"{result.recent_rate:.1%} over the last cohorts vs {result.baseline_rate:.1%} before "
                         f"(+{result.relative_rise:.0%}, p={result.p_value:.1e}, n={result.recent_n:,}/"
                         f"{result.baseline_n:,})")
