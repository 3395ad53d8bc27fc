"""Rising drop-off detection over the published snapshots, and the alerts it keeps.

Whether a stage's drop-off is rising is judged on the night's snapshot from the customers
who entered it recently, without waiting for them to finish: the baseline's entrants (the
`baseline_window` before the `recent_window`) give the stage's pace, the share who have moved
on to a later stage t hours after entering. Each recent entrant, in the stage for t hours so
far, is expected to have moved on with that probability; fewer moving on than expected means
more are dropping out. Slow stages need no fixed horizon, and an incident shows from its
first day, not once a whole window of cohorts has matured.

The recent entrants are scanned from the last day back to the whole `recent_window` (the last
1, 2, ... days), so a fresh incident is not diluted by the normal days before it. An alert
needs all three, for some scan length: the drop-off the recent entrants are heading for rises
past the baseline's by the journey's `min_relative_rise`; a one-sided test (observed against
expected movers, normal approximation with continuity correction, baseline uncertainty
included) is significant at the journey's `significance` divided by the number of tests made
(scan lengths x values of the dimension); both groups hold `min_sample` customers. One alert
per journey, stage and dimension (the whole stage, an entry channel, a segment): opened once,
escalated when the rise grows half again past where it opened, resolved when no scan alarms.

The alerts table is replayed from the whole history at every publish: the same published
days always give the same alerts, whatever order or grouping they were published in."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import numpy as np
import pyarrow as pa

from journey_defs.model import AlertPolicy
from warehouse.tables import ALERTS

DAY_US = 86_400 * 10**6
ESCALATE_AT = 1.5  # relative rise this many times the one the alert opened with
DIMENSIONS = ("*", "channel", "segment")
EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class Comparison:
    """The entrants of a stage's last `days` days against the baseline's pace of moving on."""

    days: int
    recent_n: int
    moved_on: int          # recent entrants who have reached a later stage by tonight
    expected: float        # how many would have at the baseline's pace, given how long each has been in
    variance: float        # of moved_on under that pace, plus the baseline's own sampling error
    baseline_n: int
    baseline_rate: float   # baseline entrants who had not moved on within the recent window's length

    @property
    def recent_rate(self) -> float:
        """The drop-off the recent entrants are heading for: the baseline's share moving on,
        scaled by how far behind (or ahead of) the baseline's pace they are."""
        ratio = self.moved_on / self.expected if self.expected else 1.0
        return min(1.0, max(0.0, 1 - ratio * (1 - self.baseline_rate)))

    @property
    def relative_rise(self) -> float:
        if self.baseline_rate:
            return self.recent_rate / self.baseline_rate - 1
        return math.inf if self.recent_rate else 0.0

    @property
    def p_value(self) -> float:
        """One-sided: the chance of this few movers (or fewer) if the stage kept the baseline's pace."""
        if self.variance <= 0:
            return 1.0
        z = (self.expected - self.moved_on - 0.5) / math.sqrt(self.variance)
        return 0.5 * math.erfc(z / math.sqrt(2))

    def alarming(self, policy: AlertPolicy, tests: int = 1) -> bool:
        return (self.recent_n >= policy.min_sample and self.baseline_n >= policy.min_sample
                and self.relative_rise >= policy.min_relative_rise and self.p_value < policy.significance / tests)


def scan(entered: np.ndarray, waits: np.ndarray, now: int, policy: AlertPolicy) -> list[Comparison]:
    """One comparison per scan length (1 .. recent_window days) for one stage (or one channel or
    segment of it) on the snapshot as of `now`: `entered` are entry times, `waits` the µs until
    a later stage was reached (inf if not yet), both of the entrants of the last
    recent_window + baseline_window days."""
    recent_days = policy.recent_window.days
    horizon = recent_days * DAY_US
    baseline = entered < now - horizon
    pace = np.sort(waits[baseline])
    baseline_n = len(pace)
    if not baseline_n:
        return []
    baseline_rate = 1 - np.searchsorted(pace, horizon, side="right") / baseline_n
    in_stage = now - entered[~baseline]
    share = np.searchsorted(pace, in_stage, side="right") / baseline_n  # baseline share moved on by then
    day = np.clip(in_stage // DAY_US, 0, recent_days - 1)               # 0 = entered tonight's day
    per_day = lambda weights: np.cumsum(np.bincount(day, weights, minlength=recent_days))  # noqa: E731
    n, moved, expected = per_day(None), per_day(waits[~baseline] <= in_stage), per_day(share)
    spread = np.sqrt(share * (1 - share))
    variance = per_day(spread ** 2) + per_day(spread) ** 2 / baseline_n
    return [Comparison(k + 1, int(n[k]), int(moved[k]), float(expected[k]), float(variance[k]), baseline_n,
                       float(baseline_rate)) for k in range(recent_days)]


def judge(comparisons: list[Comparison], policy: AlertPolicy, values: int) -> tuple[bool, Comparison | None]:
    """Whether any scan length alarms (Bonferroni over scan lengths and the dimension's values),
    and the comparison to report: the most significant alarming one, else the whole window."""
    tests = len(comparisons) * values
    alarming = [c for c in comparisons if c.alarming(policy, tests)]
    if alarming:
        return True, min(alarming, key=lambda c: (c.p_value, c.days))
    return False, comparisons[-1] if comparisons else None


def policies(con: duckdb.DuckDBPyConnection) -> dict[str, AlertPolicy]:
    """Each journey's alert policy, as recorded in journey_maps."""
    return {j: AlertPolicy(timedelta(days=recent), timedelta(days=baseline), rise, alpha, sample)
            for j, recent, baseline, rise, alpha, sample in con.execute(
                "SELECT journey_id, any_value(alert_recent_days), any_value(alert_baseline_days), "
                "any_value(alert_min_relative_rise), any_value(alert_significance), any_value(alert_min_sample) "
                "FROM journey_maps WHERE alert_recent_days IS NOT NULL GROUP BY 1").fetchall()}


def night_results(con: duckdb.DuckDBPyConnection, journey_id: str, final_stage: str, policy: AlertPolicy):
    """Yield (night, {(stage, dimension, value): (alarming, comparison)}) for every published
    snapshot of the journey, from its stage entries inside the recent + baseline windows."""
    table = con.sql("""
        SELECT as_of_date - DATE '1970-01-01' AS night, stage, coalesce(entry_channel, '(unknown)') AS channel,
               coalesce(segment, '(unknown)') AS segment, epoch_us(entered_at) AS entered,
               coalesce(CAST(epoch_us(left_at) - epoch_us(entered_at) AS DOUBLE), 'inf'::DOUBLE) AS wait
        FROM journey_stages
        WHERE journey_id = $journey AND stage <> $final
          AND epoch_us(entered_at) >= ((as_of_date - DATE '1970-01-01') + 1 - $days) * 86400000000
        ORDER BY night, stage""", params={"journey": journey_id, "final": final_stage,
                                          "days": policy.recent_window.days + policy.baseline_window.days}
    ).to_arrow_table()
    nights = table.column("night").to_numpy()
    entered, waits = table.column("entered").to_numpy(), table.column("wait").to_numpy()
    labels = {name: table.column(name).combine_chunks().dictionary_encode() for name in ("stage", "channel", "segment")}
    codes = {name: column.indices.to_numpy(zero_copy_only=False) for name, column in labels.items()}
    names = {name: column.dictionary.to_pylist() for name, column in labels.items()}
    bounds = np.flatnonzero(np.diff(nights)) + 1
    for chunk in np.split(np.arange(len(nights)), bounds):
        if not len(chunk):
            continue
        night = EPOCH + timedelta(days=int(nights[chunk[0]]))
        now = (int(nights[chunk[0]]) + 1) * DAY_US
        results = {}
        for stage_code in np.unique(codes["stage"][chunk]):
            rows = chunk[codes["stage"][chunk] == stage_code]
            stage = names["stage"][stage_code]
            results[(stage, "*", "*")] = judge(scan(entered[rows], waits[rows], now, policy), policy, 1)
            for dimension in DIMENSIONS[1:]:
                values = codes[dimension][rows]
                distinct = np.unique(values)
                for value in distinct:
                    mine = rows[values == value]
                    results[(stage, dimension, names[dimension][value])] = judge(
                        scan(entered[mine], waits[mine], now, policy), policy, len(distinct))
        yield night, results


def replay_alerts(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The alerts table from every published night, in date order."""
    journey_policies = policies(con)
    final = {r[0]: r[1] for r in con.execute(
        "SELECT journey_id, arg_max(stage, stage_index) FROM journey_maps GROUP BY 1").fetchall()}
    rows: list[dict] = []
    for journey_id in sorted(final):
        policy = journey_policies.get(journey_id, AlertPolicy())
        open_alerts: dict[tuple, dict] = {}
        for night, results in night_results(con, journey_id, final[journey_id], policy):
            for key in sorted(set(results) | set(open_alerts)):
                alarming, result = results.get(key, (False, None))
                alert = open_alerts.get(key)
                if alarming:
                    if alert is None:
                        alert = open_alerts[key] = _opened(journey_id, key, night, result)
                        rows.append(alert)
                    else:
                        if alert["status"] == "open" and result.relative_rise >= ESCALATE_AT * alert["_opened_rise"]:
                            alert["status"], alert["escalated_date"] = "escalated", night
                        _update(alert, night, result)
                elif alert is not None:
                    if result is not None:
                        _update(alert, night, result)
                    alert["status"], alert["resolved_date"], alert["updated_date"] = "resolved", night, night
                    del open_alerts[key]
    for row in rows:
        row.pop("_opened_rise")
    rows.sort(key=lambda r: (r["opened_date"], r["journey_id"], r["stage"], r["dimension"], r["dimension_value"]))
    return pa.Table.from_pylist(rows, schema=ALERTS)


def _opened(journey_id: str, key: tuple, night: date, result: Comparison) -> dict:
    stage, dimension, value = key
    alert = {"alert_id": f"{journey_id}:{stage}:{dimension}:{value}:{night.isoformat()}", "journey_id": journey_id,
             "stage": stage, "dimension": dimension, "dimension_value": value, "opened_date": night,
             "escalated_date": None, "resolved_date": None, "status": "open", "_opened_rise": result.relative_rise}
    _update(alert, night, result)
    return alert


def _update(alert: dict, night: date, result: Comparison) -> None:
    where = "" if alert["dimension"] == "*" else f" ({alert['dimension']} {alert['dimension_value']})"
    alert.update(updated_date=night, baseline_drop_rate=result.baseline_rate, recent_drop_rate=result.recent_rate,
                 relative_rise=result.relative_rise, p_value=result.p_value,
                 message=f"{alert['stage']}{where}: heading for {result.recent_rate:.1%} drop-off vs "
                         f"{result.baseline_rate:.1%} before (+{result.relative_rise:.0%}, p={result.p_value:.1e}): "
                         f"{result.moved_on:,} of the {result.recent_n:,} customers who entered in the last "
                         f"{result.days} day(s) moved on, {result.expected:,.1f} expected at the pace of the "
                         f"{result.baseline_n:,} before them")
