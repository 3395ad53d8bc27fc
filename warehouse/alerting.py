"""Rising drop-off alerts over the published snapshots: one alert per journey and stage, with
the slices (entry channels, segments) that carry the rise as its breakdown.

Each night, for each stage and each of its series (the whole stage, each entry channel, each
segment), the customers who entered it within its horizon (`alert_counts.horizon`: up to its
p90 time in stage or SLA, at least `recent_window` nights) are compared with the baseline's
entrants at the same ages (warehouse.alert_evidence):

* their moves at each age are scored against the baseline's hazard at that age, for eight
  designs of a rise in drop-off, and accumulated in a CUSUM over entry nights of the mixture
  likelihood ratio, weighed by how well the baseline predicts them;
* an alert opens for the stage when some series' chart passes its bar — the stage's own
  series gets STAGE_SHARE of the `significance`, its slices the rest, so a quiet stage alerts
  on a night with chance at most `significance` — and the rise the series'
  recent entrants are heading for passes `min_relative_rise` on `min_sample` customers on
  both sides, for some scan of the last 1, 2, ... nights' entrants;
* while an alert is open, the stage's baseline and horizon stay the ones of the night it
  opened: the incident's own entrants never become the normal it is judged by;
* an open alert is escalated when its rise grows half again past where it opened, and holds
  while the stage or the series that opened it still shows a rise of half the
  `min_relative_rise` at an uncorrected HOLD_SIGNIFICANCE, whatever the sample sizes; then it
  is resolved and the stage's charts count only the cohorts entering after it;
* each night of an open alert keeps the slices that show the rise (at the holding bars) with
  their figures: its breakdown.

The baseline: the `baseline_window` of entry nights before the horizon's, never the
journey's first `recent_window` nights (the first entrants of a log that has just begun are
its fastest movers). The alerts, alert_nights and alert_slices tables are replayed from the
whole history at every publish: the same published days always give the same alerts,
whatever order or grouping they were published in."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import numpy as np
import pyarrow as pa

from journey_defs.model import AlertPolicy
from warehouse import alert_state
from warehouse.alert_counts import EPOCH, WHOLE, Counts, label, read_counts
from warehouse.alert_evidence import (STAGE_SHARE, Chart, Comparison, compare, designs, hazard, steps, threshold,
                                      trust)
from warehouse.tables import ALERT_NIGHTS, ALERT_SLICES, ALERTS

ESCALATE_AT = 1.5  # relative rise this many times the one the alert opened with


@dataclass(frozen=True)
class SeriesNight:
    """One series of a stage on one night."""

    dimension: str
    value: str
    comparison: Comparison  # the scan reported: the most significant of those showing a rise, else the whole horizon
    evidence: float         # its CUSUM tonight (see alert_evidence.Chart)
    threshold: float        # the bar it must pass (the stage's own, or its slices')
    opens: bool             # evidence past the threshold, and a rise past the floor on enough customers
    holds: bool             # some scan still shows a rise at the holding bars

    @property
    def label(self) -> str:
        return "stage" if (self.dimension, self.value) == WHOLE else f"{self.dimension} {self.value}"


class Monitor:
    """A journey's charts, night after night (see the module docstring)."""

    def __init__(self, counts: Counts, policy: AlertPolicy):
        self.counts, self.policy = counts, policy
        slices = {stage: sum(k[0] == stage and k[1:] != WHOLE for k in counts.series) for stage, *_ in counts.series}
        self.thresholds = {stage: (threshold(policy, 1, STAGE_SHARE), threshold(policy, n, 1 - STAGE_SHARE))
                           for stage, n in slices.items()}
        """Per stage, the bars of its own series and of its slices (see `threshold`)."""
        self.designs = designs(policy)
        self.charts: dict[tuple, Chart] = {key: Chart(self.designs) for key in counts.series}
        self.at_risk, self.moved, self.started = {}, {}, set()
        self.held: dict[str, int] = {}  # stage -> the night its open alert opened: its baseline stays as then
        for key, cells in counts.series.items():
            zero = np.zeros((1, *cells.shape[1:3]))
            at_risk, moved = steps(cells, counts.known)
            self.at_risk[key] = at_risk, np.concatenate([zero, np.cumsum(at_risk, axis=0)])
            self.moved[key] = moved, np.concatenate([zero, np.cumsum(moved, axis=0)])

    def night(self, night: int) -> dict[str, dict[tuple, SeriesNight]]:
        """Stage -> (dimension, value) -> tonight's SeriesNight, for the series with recent
        entrants and a baseline."""
        counts, policy, out = self.counts, self.policy, {}
        for key, cells in counts.series.items():
            stage = key[0]
            judged_as_of = self.held.get(stage, night)  # the night the baseline and horizon are taken for
            span = counts.horizons[(judged_as_of, stage)]
            t, then = night - counts.first, judged_as_of - counts.first
            ages = np.arange(span)
            # baseline entry nights: the baseline window before the horizon's, never the first nights
            low = max(then - span - policy.baseline_window.days + 1,
                      counts.first_entry + policy.recent_window.days - counts.first)
            high = then - span + 1
            entrants = cells[t - ages, ages, :, 0].sum(axis=1)  # each recent cohort as known tonight
            if high <= low or not entrants.any():
                continue
            (risk, risk_sum), (moved, moved_sum) = self.at_risk[key], self.moved[key]
            base_risk = risk_sum[high, :span] - risk_sum[low, :span]
            if base_risk[0].sum() < policy.min_sample:  # too few to say what normal is
                continue
            base_moved = moved_sum[high, :span] - moved_sum[low, :span]
            h0 = hazard(base_risk, base_moved)
            seen = (ages[None, :] <= ages[:, None])[..., None]  # cohort of age k has reached ages 0 .. k
            h1 = tuple(d.hazards(h0) for d in self.designs)
            comparisons = compare(risk[t - ages, :span] * seen, moved[t - ages, :span] * seen, entrants, h0, base_risk, h1)
            chart = self.charts[key]
            if key not in self.started:  # cohorts already in the baseline are not judged against it
                self.started.add(key)
                chart.first = max(chart.first, high)
            weights = np.array([trust(c) for c in comparisons])  # per scan: how well the baseline predicts it
            evidence = chart.add(risk, moved, h0, t, span, weights=weights, h1=h1)
            bar = self.thresholds[stage][key[1:] != WHOLE]
            rising = [c for c in comparisons if c.large_enough(policy) or c.holding(policy)]
            shown = min(rising, key=lambda c: (c.p_value, c.days)) if rising else comparisons[-1]
            out.setdefault(stage, {})[key[1:]] = SeriesNight(
                key[1], key[2], shown, evidence, bar,
                evidence >= bar and any(c.large_enough(policy) for c in comparisons),
                any(c.holding(policy) for c in comparisons))
        return out

    def state(self) -> dict:
        """Where the charts stand, nights absolute (see warehouse.alert_state)."""
        return {"charts": {label(key): [chart.first + self.counts.first, [f.tolist() for f in chart.frozen]]
                           for key, chart in self.charts.items()},
                "started": sorted(label(key) for key in self.started), "held": dict(sorted(self.held.items()))}

    def resume(self, state: dict) -> None:
        """Take up the charts where `state` left them (counts read from a later first night)."""
        keys = {label(key): key for key in self.charts}
        for text, (first, frozen) in state["charts"].items():
            chart = self.charts[keys[text]]
            chart.first, chart.frozen = first - self.counts.first, [np.array(f) for f in frozen]
        self.started = {keys[text] for text in state["started"]}
        self.held = dict(state["held"])

    def hold(self, stage: str, night: int) -> None:
        """An alert of the stage opened tonight: until it resolves, its baseline and horizon
        stay the ones of tonight, so the incident's own entrants never become the normal it
        is judged by (nor shorten the horizon, when the movers it stops were the slow ones)."""
        self.held[stage] = night

    def restart(self, stage: str, night: int) -> None:
        """An alert of the stage resolved tonight: its baseline moves on again and its charts
        count only later cohorts."""
        self.held.pop(stage, None)
        for key, chart in self.charts.items():
            if key[0] == stage:
                chart.restart(night - self.counts.first)


def policies(con: duckdb.DuckDBPyConnection) -> dict[str, AlertPolicy]:
    """Each journey's alert policy, as recorded in journey_maps."""
    return {j: AlertPolicy(timedelta(days=recent), timedelta(days=baseline), rise, alpha, sample)
            for j, recent, baseline, rise, alpha, sample in con.execute(
                "SELECT journey_id, any_value(alert_recent_days), any_value(alert_baseline_days), "
                "any_value(alert_min_relative_rise), any_value(alert_significance), any_value(alert_min_sample) "
                "FROM journey_maps WHERE alert_recent_days IS NOT NULL GROUP BY 1").fetchall()}


def night_results(con: duckdb.DuckDBPyConnection, journey_id: str, final_stage: str, policy: AlertPolicy):
    """Yield (night, {stage: {(dimension, value): SeriesNight}}) for every published snapshot of
    the journey, in date order, with no alert lifecycle (charts never reset)."""
    counts = read_counts(con, journey_id, final_stage, policy.recent_window.days)
    if counts is None:
        return
    monitor = Monitor(counts, policy)
    for night in counts.nights:
        yield _day(night), monitor.night(night)


@dataclass
class Alert:
    """An open alert: its alerts row, the series that opened it and the rise it opened with."""

    row: dict
    lead: tuple             # (dimension, value) of the series that opened it
    opened_rise: float


def replay_alerts(con: duckdb.DuckDBPyConnection, journey_policies: dict[str, AlertPolicy] | None = None) -> pa.Table:
    """The alerts table from every published night (see `replay`)."""
    return replay(con, journey_policies)[0]


@dataclass
class JourneyAlerts:
    """One journey's alert tables after a publish."""

    journey_id: str
    alerts: list[dict]        # every alert of the journey
    nights: list[dict]        # alert_nights rows: every night's when replayed, only the new nights' when continued
    slices: list[dict]        # alert_slices rows, likewise
    state: dict | None        # where the replay stopped (warehouse.alert_state); None before any publish
    continued: bool = False


def replay(con: duckdb.DuckDBPyConnection,
           journey_policies: dict[str, AlertPolicy] | None = None) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The alerts, alert_nights and alert_slices tables from every published night, in date
    order (under each journey's recorded policy, or the ones given: how a benchmark tries
    another significance)."""
    journey_policies = journey_policies or policies(con)
    done = [replay_journey(con, journey_id, final, journey_policies.get(journey_id, AlertPolicy()))
            for journey_id, final in final_stages(con).items()]
    return tables([row for j in done for row in j.alerts], [row for j in done for row in j.nights],
                  [row for j in done for row in j.slices])


def advance(con: duckdb.DuckDBPyConnection, days: tuple[date, ...]) -> list[JourneyAlerts]:
    """Each journey's alerts after publishing `days`: continued from its saved state when every
    day is later than the state's last night and nothing it was made from has changed
    (warehouse.alert_state), else replayed from the whole history. Either way the same
    tables as `replay`."""
    journey_policies, out = policies(con), []
    for journey_id, final in final_stages(con).items():
        policy = journey_policies.get(journey_id, AlertPolicy())
        fingerprint = alert_state.fingerprint(con, journey_id, final, policy)
        state = alert_state.load(con, journey_id)
        done = None
        if state is not None and state["fingerprint"] == fingerprint and days and min(days) > _day(state["last"]):
            done = _continue(con, journey_id, final, policy, state, (min(days) - EPOCH).days)
        done = done or replay_journey(con, journey_id, final, policy)
        if done.state is not None:
            done.state["fingerprint"] = fingerprint
        out.append(done)
    return out


def final_stages(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Journey -> its final stage, from journey_maps, in journey order."""
    return dict(sorted(con.execute(
        "SELECT journey_id, arg_max(stage, stage_index) FROM journey_maps GROUP BY 1").fetchall()))


def replay_journey(con: duckdb.DuckDBPyConnection, journey_id: str, final_stage: str,
                   policy: AlertPolicy) -> JourneyAlerts:
    """One journey's alerts from every published night."""
    counts = read_counts(con, journey_id, final_stage, policy.recent_window.days)
    if counts is None:
        return JourneyAlerts(journey_id, [], [], [], None)
    monitor, open_alerts, rows, nights, slices = Monitor(counts, policy), {}, [], [], []
    _lifecycle(journey_id, monitor, counts.nights, open_alerts, rows, nights, slices)
    return JourneyAlerts(journey_id, rows, nights, slices,
                         alert_state.state(counts, monitor.state(), open_alerts, counts.first))


def _continue(con: duckdb.DuckDBPyConnection, journey_id: str, final_stage: str, policy: AlertPolicy, state: dict,
              after: int) -> JourneyAlerts | None:
    """The nights after the state's last, from it and the counts of the entry nights they
    need; None when the warehouse no longer matches the state (replay the whole history)."""
    since = alert_state.window_start(state, after, policy)
    counts = read_counts(con, journey_id, final_stage, policy.recent_window.days, since=since,
                         keys=alert_state.keys(state))
    if counts is None or not alert_state.matches(state, counts):
        return None
    monitor = Monitor(counts, policy)
    monitor.resume(state)
    found = con.execute(f"SELECT {', '.join(ALERTS.names)} FROM alerts WHERE journey_id = ?", [journey_id]).fetchall()
    by_id = {row[0]: dict(zip(ALERTS.names, row)) for row in found}
    if any(o["alert_id"] not in by_id for o in state["open"].values()):
        return None
    open_alerts = {stage: Alert(by_id[o["alert_id"]], tuple(o["lead"]), o["opened_rise"])
                   for stage, o in state["open"].items()}
    rows, nights, slices = list(by_id.values()), [], []
    _lifecycle(journey_id, monitor, tuple(n for n in counts.nights if n > state["last"]), open_alerts, rows, nights,
               slices)
    return JourneyAlerts(journey_id, rows, nights, slices,
                         alert_state.state(counts, monitor.state(), open_alerts, state["origin"]), True)


def _lifecycle(journey_id: str, monitor: Monitor, numbers: tuple[int, ...], open_alerts: dict[str, Alert],
               rows: list[dict], nights: list[dict], slices: list[dict]) -> None:
    """Open, escalate, hold and resolve the journey's alerts over the nights `numbers`."""
    for number in numbers:
        night, tonight = _day(number), monitor.night(number)
        for stage in sorted(set(tonight) | set(open_alerts)):
            series, alert = tonight.get(stage, {}), open_alerts.get(stage)
            if alert is None:
                openers = [s for s in series.values() if s.opens]
                if openers:
                    lead = series.get(WHOLE) if series.get(WHOLE) in openers else max(
                        openers, key=lambda s: (s.evidence, s.label))
                    alert = open_alerts[stage] = _opened(journey_id, stage, night, lead)
                    monitor.hold(stage, number)
                    rows.append(alert.row)
                    _record(alert, night, lead, series, nights, slices)
                continue
            lead = series.get(alert.lead)
            whole = series.get(WHOLE)
            if lead is not None:
                if (lead.opens and alert.row["status"] == "open"
                        and lead.comparison.relative_rise >= ESCALATE_AT * alert.opened_rise):
                    alert.row["status"], alert.row["escalated_date"] = "escalated", night
            if lead is None or not (lead.holds or (whole is not None and whole.holds)):
                row = alert.row
                row["status"], row["resolved_date"], row["updated_date"] = "resolved", night, night
                del open_alerts[stage]
                monitor.restart(stage, number)
            _record(alert, night, lead, series, nights, slices)


def tables(rows: list[dict], nights: list[dict], slices: list[dict]) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The alerts, alert_nights and alert_slices tables of these rows, in their order."""
    rows = sorted(rows, key=lambda r: (r["opened_date"], r["journey_id"], r["stage"]))
    nights = sorted(nights, key=lambda r: (r["night"], r["alert_id"]))
    slices = sorted(slices, key=lambda r: (r["night"], r["alert_id"], r["dimension"], r["dimension_value"]))
    return (pa.Table.from_pylist(rows, schema=ALERTS), pa.Table.from_pylist(nights, schema=ALERT_NIGHTS),
            pa.Table.from_pylist(slices, schema=ALERT_SLICES))


def _day(number: int) -> date:
    return EPOCH + timedelta(days=number)


def _opened(journey_id: str, stage: str, night: date, lead: SeriesNight) -> Alert:
    row = {"alert_id": f"{journey_id}:{stage}:{night.isoformat()}", "journey_id": journey_id, "stage": stage,
           "opened_by": lead.label, "opened_date": night, "escalated_date": None, "resolved_date": None,
           "status": "open", "threshold": lead.threshold}
    return Alert(row, (lead.dimension, lead.value), lead.comparison.relative_rise)


def _record(alert: Alert, night: date, lead: SeriesNight | None, series: dict[tuple, SeriesNight],
            nights: list[dict], slices: list[dict]) -> None:
    """Tonight's figures: the alert's latest, its alert_nights row and its breakdown's
    alert_slices rows (the slices showing the rise, those with most missing movers first)."""
    row = alert.row
    base = {"alert_id": row["alert_id"], "journey_id": row["journey_id"], "night": night}
    if lead is None:
        row["updated_date"] = night
        nights.append({**base, "status": row["status"], "threshold": row["threshold"],
                       "message": f"{row['stage']}: no recent entrants to judge"})
        return
    carrying = sorted((s for key, s in series.items() if key != WHOLE and s.holds),
                      key=lambda s: (-(s.comparison.expected - s.comparison.moved_on), s.label))
    breakdown = ", ".join(f"{s.label} {s.comparison.relative_rise:+.0%}" for s in carrying)
    c = lead.comparison
    where = "" if alert.lead == WHOLE else f" ({lead.label})"
    row.update(updated_date=night, baseline_drop_rate=c.baseline_rate, recent_drop_rate=c.recent_rate,
               relative_rise=c.relative_rise, p_value=c.p_value, evidence=lead.evidence, breakdown=breakdown or None,
               message=f"{row['stage']}{where}: heading for {c.recent_rate:.1%} drop-off vs {c.baseline_rate:.1%} "
                       f"before ({c.relative_rise:+.0%}, evidence {lead.evidence:.1f} vs {lead.threshold:.1f} to alert): "
                       f"{c.moved_on:,} of the {c.recent_n:,} customers who entered in the last {c.days} day(s) "
                       f"moved on, {c.expected:,.1f} expected at the pace of the {c.baseline_n:,} before them")
    nights.append({**base, "status": row["status"], **_figures(c), "evidence": lead.evidence, "threshold": lead.threshold,
                   **{name: row[name] for name in ("baseline_drop_rate", "recent_drop_rate", "relative_rise",
                                                   "p_value", "breakdown", "message")}})
    slices.extend({**base, "dimension": s.dimension, "dimension_value": s.value, **_figures(s.comparison),
                   "baseline_drop_rate": s.comparison.baseline_rate, "recent_drop_rate": s.comparison.recent_rate,
                   "relative_rise": s.comparison.relative_rise, "p_value": s.comparison.p_value,
                   "evidence": s.evidence} for s in carrying)


def _figures(c: Comparison) -> dict:
    return {"scan_days": c.days, "recent_entrants": c.recent_n, "moved_on": c.moved_on,
            "expected_moved_on": c.expected, "baseline_entrants": c.baseline_n}
