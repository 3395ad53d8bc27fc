"""Rising drop-off detection over the published snapshots, and the alerts it keeps.

Whether a stage's drop-off is rising is judged each night from the customers who entered it
recently, without waiting for them to finish, against what was known about the baseline's
entrants at the same age. A customer's age is the number of nights since the night they
entered the stage (0 = tonight's). For each age and entry time of day, the baseline (the
`baseline_window` of entry nights before the `recent_window`) gives the share who had moved
on to a later stage as known then: read from the snapshot published that many nights after
their entry, so events that arrive late and identities stitched later weigh the same on both
sides. Each recent entrant of that age is expected to have moved on with that share; fewer
movers than expected means more customers are dropping out. Slow stages need no fixed
horizon, and an incident shows from its first nights, not once a whole window of cohorts has
matured.

The recent entrants are scanned from tonight's back to the whole `recent_window` (the last
1, 2, ... nights' entrants), so a fresh incident is not diluted by the normal days before
it. An alert needs all three, for some scan length: the drop-off the recent entrants are
heading for rises past the baseline's by the journey's `min_relative_rise`; a one-sided
test (observed against expected movers, normal approximation with continuity correction,
the baseline's own sampling error included) is significant at the journey's `significance`
divided by the number of tests made (scan lengths x values of the dimension); both groups
hold `min_sample` customers. The first `recent_window` nights of the journey's history are
never baseline: the first entrants of a stage are the fastest movers of a log that has just
begun. One alert per journey, stage and dimension (the whole stage, an entry channel, a
segment): opened once, escalated when the rise grows half again past where it opened,
resolved when the rise is gone, not merely below the bar to open one: an open alert holds
while some scan length still shows a rise of half the journey's `min_relative_rise` at the
uncorrected `HOLD_SIGNIFICANCE`, whatever the sample sizes, so a rise hovering around the
opening bar, a segment whose week of entrants dips below `min_sample`, or bad days a few
nights apart are one alert rather than one per crossing.

The alerts table (and alert_nights, each alert's figures night by night) is replayed from
the whole history at every publish: the same published days always give the same alerts,
whatever order or grouping they were published in."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import numpy as np
import pyarrow as pa

from journey_defs.model import AlertPolicy
from warehouse.tables import ALERT_NIGHTS, ALERTS

DAY_US = 86_400 * 10**6
ESCALATE_AT = 1.5  # relative rise this many times the one the alert opened with
HOLD_SIGNIFICANCE = 0.05  # an open alert holds while some scan length shows a rise at this level,
HOLD_RISE = 0.5  # of at least this share of the journey's min_relative_rise
SLOTS = 6  # entry times of day compared apart (4 hours each): tonight's 23:00 entrant has had 1 hour
EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class Comparison:
    """The entrants of a stage's last `days` nights against the baseline's pace of moving on."""

    days: int
    recent_n: int
    moved_on: int          # recent entrants who have reached a later stage by tonight
    expected: float        # how many would have at the baseline's pace, given how long each has been in
    variance: float        # of moved_on under that pace, plus the baseline's own sampling error
    baseline_n: int
    baseline_rate: float   # baseline entrants not moved on as known `recent_window - 1` nights after entry

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
        """Opens an alert: the rise is significant at the journey's level, corrected for `tests`."""
        return (self.recent_n >= policy.min_sample and self.baseline_n >= policy.min_sample
                and self.shows_rise(policy.significance / tests, policy.min_relative_rise))

    def holding(self, policy: AlertPolicy) -> bool:
        """Keeps an open alert: the rise still shows, at the lower bars of HOLD_*. Whatever the
        sample sizes: `min_sample` is for opening; a week of entrants dipping below it is not a
        recovery (the p-value already weighs how few they are)."""
        return self.shows_rise(HOLD_SIGNIFICANCE, HOLD_RISE * policy.min_relative_rise)

    def shows_rise(self, alpha: float, min_rise: float) -> bool:
        return self.relative_rise >= min_rise and self.p_value < alpha


@dataclass(frozen=True)
class Verdict:
    """One series on one night: whether it opens an alert, whether it keeps one open, and the
    comparison to report."""

    alarming: bool
    rising: bool
    comparison: Comparison


def compare(recent: np.ndarray, baseline: np.ndarray) -> list[Comparison]:
    """One comparison per scan length (1 .. recent_window nights) from counts [age, entry time
    of day, (entrants, moved on)]: `recent` as of tonight, `baseline` as known at each age.
    Cells without a baseline are left out; the baseline's sampling error is bounded across
    ages (the same customers) and added up across times of day (different customers)."""
    n_base, moved_base = baseline[..., 0], baseline[..., 1]
    known = n_base > 0
    share = np.divide(moved_base, n_base, out=np.zeros(n_base.shape), where=known)
    entrants, movers = np.where(known, recent[..., 0], 0), np.where(known, recent[..., 1], 0)
    spread = np.sqrt(share * (1 - share))
    own = np.cumsum((entrants * spread ** 2).sum(axis=1))
    error = np.divide(entrants * spread, np.sqrt(n_base), out=np.zeros(n_base.shape), where=known)
    sampling = (np.cumsum(error, axis=0) ** 2).sum(axis=1)
    expected = np.cumsum((entrants * share).sum(axis=1))
    n, moved = np.cumsum(entrants.sum(axis=1)), np.cumsum(movers.sum(axis=1))
    n_oldest, moved_oldest = baseline[-1].sum(axis=0)
    baseline_rate = float(1 - moved_oldest / n_oldest) if n_oldest else 0.0
    return [Comparison(k + 1, int(n[k]), int(moved[k]), float(expected[k]), float(own[k] + sampling[k]),
                       int(n_oldest), baseline_rate) for k in range(len(n))]


def judge(comparisons: list[Comparison], policy: AlertPolicy, values: int) -> Verdict:
    """Whether any scan length alarms (Bonferroni over scan lengths and the dimension's values),
    whether any holds an open alert, and the comparison to report: the most significant of
    those, else the whole window."""
    tests = len(comparisons) * values
    opens = [c.alarming(policy, tests) for c in comparisons]
    rising = [c for c, alarming in zip(comparisons, opens) if alarming or c.holding(policy)]
    if rising:
        return Verdict(any(opens), True, min(rising, key=lambda c: (c.p_value, c.days)))
    return Verdict(False, False, comparisons[-1])


def policies(con: duckdb.DuckDBPyConnection) -> dict[str, AlertPolicy]:
    """Each journey's alert policy, as recorded in journey_maps."""
    return {j: AlertPolicy(timedelta(days=recent), timedelta(days=baseline), rise, alpha, sample)
            for j, recent, baseline, rise, alpha, sample in con.execute(
                "SELECT journey_id, any_value(alert_recent_days), any_value(alert_baseline_days), "
                "any_value(alert_min_relative_rise), any_value(alert_significance), any_value(alert_min_sample) "
                "FROM journey_maps WHERE alert_recent_days IS NOT NULL GROUP BY 1").fetchall()}


def counts_by_entry_night(con: duckdb.DuckDBPyConnection, journey_id: str, final_stage: str, ages: int,
                          first: int, last: int) -> dict[tuple, np.ndarray]:
    """(stage, dimension, value) -> array [entry night - first, age, entry time of day (SLOTS),
    (entrants, moved on)]: each night's entrants as known `age` nights later (the snapshot of
    entry night + age), for ages 0 .. ages-1 (nights as days since 1970)."""
    rows = con.execute("""
        WITH s AS (
            SELECT as_of_date - DATE '1970-01-01' AS night, stage,
                   coalesce(entry_channel, '(unknown)') AS channel, coalesce(segment, '(unknown)') AS segment,
                   (as_of_date - DATE '1970-01-01') - epoch_us(entered_at) // $day AS age,
                   epoch_us(entered_at) % $day // $slot AS slot, left_at
            FROM journey_stages WHERE journey_id = $journey AND stage <> $final),
        r AS (SELECT night - age AS entry_night, * FROM s WHERE age >= 0 AND age < $ages)
        SELECT entry_night, stage, '*', '*', age, slot, count(*), count(left_at) FROM r GROUP BY ALL
        UNION ALL SELECT entry_night, stage, 'channel', channel, age, slot, count(*), count(left_at) FROM r GROUP BY ALL
        UNION ALL SELECT entry_night, stage, 'segment', segment, age, slot, count(*), count(left_at) FROM r GROUP BY ALL""",
                       {"journey": journey_id, "final": final_stage, "ages": ages, "day": DAY_US,
                        "slot": DAY_US // SLOTS}).fetchall()
    out: dict[tuple, np.ndarray] = {}
    for entry_night, stage, dimension, value, age, slot, n, moved in rows:
        if first <= entry_night <= last:
            counts = out.setdefault((stage, dimension, value), np.zeros((last - first + 1, ages, SLOTS, 2)))
            counts[entry_night - first, age, slot] = (n, moved)
    return out


def night_results(con: duckdb.DuckDBPyConnection, journey_id: str, final_stage: str, policy: AlertPolicy):
    """Yield (night, {(stage, dimension, value): Verdict}) for every published snapshot of the
    journey, in date order."""
    ages, span = policy.recent_window.days, policy.baseline_window.days
    nights = [r[0] for r in con.execute(
        "SELECT DISTINCT as_of_date - DATE '1970-01-01' FROM journey_stages WHERE journey_id = ? ORDER BY 1",
        [journey_id]).fetchall()]
    if not nights:
        return
    [(first_entry,)] = con.execute("SELECT min(epoch_us(entered_at)) // ? FROM journey_stages WHERE journey_id = ?",
                                   [DAY_US, journey_id]).fetchall()
    first = min(first_entry, nights[0] - ages)
    series = counts_by_entry_night(con, journey_id, final_stage, ages, first, nights[-1])
    values: dict[tuple, int] = {}
    for stage, dimension, _ in series:
        values[(stage, dimension)] = values.get((stage, dimension), 0) + 1
    totals = {key: np.concatenate([np.zeros((1, *counts.shape[1:])), np.cumsum(counts, axis=0)])
              for key, counts in series.items()}
    age = np.arange(ages)
    for night in nights:
        # baseline entry nights: the baseline window, never the journey's first `ages` nights
        low = max(night - ages - span + 1, first_entry + ages) - first
        high = night - ages - first + 1
        results = {}
        for key, counts in series.items():
            recent = counts[night - first - age, age]  # first <= every night - ages: in range
            if high <= low or not recent[..., 0].any():
                continue
            comparisons = compare(recent, totals[key][high] - totals[key][low])
            if not comparisons[-1].baseline_n:
                continue
            results[key] = judge(comparisons, policy, values[key[:2]])  # the whole stage: one value
        yield EPOCH + timedelta(days=night), results


def replay_alerts(con: duckdb.DuckDBPyConnection, journey_policies: dict[str, AlertPolicy] | None = None) -> pa.Table:
    """The alerts table from every published night (see `replay`)."""
    return replay(con, journey_policies)[0]


def replay(con: duckdb.DuckDBPyConnection,
           journey_policies: dict[str, AlertPolicy] | None = None) -> tuple[pa.Table, pa.Table]:
    """The alerts and alert_nights tables from every published night, in date order (under
    each journey's recorded policy, or the ones given: how a benchmark tries another
    significance)."""
    journey_policies = journey_policies or policies(con)
    final = {r[0]: r[1] for r in con.execute(
        "SELECT journey_id, arg_max(stage, stage_index) FROM journey_maps GROUP BY 1").fetchall()}
    rows: list[dict] = []
    nights: list[dict] = []
    for journey_id in sorted(final):
        policy = journey_policies.get(journey_id, AlertPolicy())
        open_alerts: dict[tuple, dict] = {}
        for night, results in night_results(con, journey_id, final[journey_id], policy):
            for key in sorted(set(results) | set(open_alerts)):
                verdict, alert = results.get(key), open_alerts.get(key)
                if alert is None:
                    if verdict is not None and verdict.alarming:
                        open_alerts[key] = _opened(journey_id, key, night, verdict.comparison)
                        rows.append(open_alerts[key])
                        nights.append(_night(open_alerts[key], night, verdict.comparison))
                    continue
                if verdict is not None:
                    result = verdict.comparison
                    if (verdict.alarming and alert["status"] == "open"
                            and result.relative_rise >= ESCALATE_AT * alert["_opened_rise"]):
                        alert["status"], alert["escalated_date"] = "escalated", night
                    _update(alert, night, result)
                if verdict is None or not verdict.rising:  # no recent entrants, or the rise is gone
                    alert["status"], alert["resolved_date"], alert["updated_date"] = "resolved", night, night
                    del open_alerts[key]
                nights.append(_night(alert, night, verdict.comparison if verdict is not None else None))
    for row in rows:
        row.pop("_opened_rise")
    rows.sort(key=lambda r: (r["opened_date"], r["journey_id"], r["stage"], r["dimension"], r["dimension_value"]))
    nights.sort(key=lambda r: (r["night"], r["alert_id"]))
    return pa.Table.from_pylist(rows, schema=ALERTS), pa.Table.from_pylist(nights, schema=ALERT_NIGHTS)


def _opened(journey_id: str, key: tuple, night: date, result: Comparison) -> dict:
    stage, dimension, value = key
    alert = {"alert_id": f"{journey_id}:{stage}:{dimension}:{value}:{night.isoformat()}", "journey_id": journey_id,
             "stage": stage, "dimension": dimension, "dimension_value": value, "opened_date": night,
             "escalated_date": None, "resolved_date": None, "status": "open", "_opened_rise": result.relative_rise}
    _update(alert, night, result)
    return alert


FIGURES = ("baseline_drop_rate", "recent_drop_rate", "relative_rise", "p_value", "message")
"""What `_update` sets from a night's comparison: the alert's latest, and that night's alert_nights row."""


def _update(alert: dict, night: date, result: Comparison) -> None:
    where = "" if alert["dimension"] == "*" else f" ({alert['dimension']} {alert['dimension_value']})"
    alert.update(updated_date=night, baseline_drop_rate=result.baseline_rate, recent_drop_rate=result.recent_rate,
                 relative_rise=result.relative_rise, p_value=result.p_value,
                 message=f"{alert['stage']}{where}: heading for {result.recent_rate:.1%} drop-off vs "
                         f"{result.baseline_rate:.1%} before (+{result.relative_rise:.0%}, p={result.p_value:.1e}): "
                         f"{result.moved_on:,} of the {result.recent_n:,} customers who entered in the last "
                         f"{result.days} day(s) moved on, {result.expected:,.1f} expected at the pace of the "
                         f"{result.baseline_n:,} before them")


def _night(alert: dict, night: date, result: Comparison | None) -> dict:
    """The alert_nights row: the alert's status and tonight's figures, as `_update` has just
    set them from `result` (none without recent entrants)."""
    row = {"alert_id": alert["alert_id"], "journey_id": alert["journey_id"], "night": night, "status": alert["status"]}
    if result is None:
        return {**row, "message": f"{alert['stage']}: no recent entrants to judge"}
    return {**row, "scan_days": result.days, "recent_entrants": result.recent_n, "moved_on": result.moved_on,
            "expected_moved_on": result.expected, "baseline_entrants": result.baseline_n,
            **{name: alert[name] for name in FIGURES}}
