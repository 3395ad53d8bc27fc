"""Rising drop-off detection: the comparison, the nightly moves and the CUSUM against
hand-computed values, and the alert lifecycle (one alert per stage with its breakdown; open
once, escalate, resolve; no daily repeats) replayed from nightly snapshots built by hand in a
real DuckDB database, for a fast stage and for a slow one."""
from __future__ import annotations

import dataclasses
import math
from datetime import date, datetime, timedelta, timezone

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from journey_defs.model import AlertPolicy
from journey_defs.outputs import JOURNEY_STAGES
from warehouse.alert_counts import WHOLE, horizon
from warehouse.alert_evidence import (Chart, Comparison, Design, alternative, compare, late_start, log_likelihood_ratio,
                                      steps, threshold, trust)
from warehouse.alerting import night_results, replay, replay_alerts
from warehouse.report_data import alerts_open_on
from warehouse.tables import JOURNEY_MAPS

POLICY = AlertPolicy(timedelta(days=7), timedelta(days=28), 0.25, 0.01, 100)
START = date(2026, 1, 1)


def test_the_comparison_its_floor_and_its_holding_bars():
    behind = Comparison(days=2, recent_n=200, moved_on=20, expected=60.0, variance=40.0, baseline_n=2000,
                        baseline_rate=0.4)
    # a third of the expected movers: heading for 1 - 1/3 * 0.6 = 80% drop-off, twice the baseline's
    assert behind.recent_rate == pytest.approx(0.8) and behind.relative_rise == pytest.approx(1.0)
    assert behind.p_value == pytest.approx(0.5 * math.erfc((60 - 20 - 0.5) / math.sqrt(40) / math.sqrt(2)))
    assert behind.large_enough(POLICY) and behind.holding(POLICY)
    on_pace = Comparison(2, 200, 60, 60.0, 40.0, 2000, 0.4)
    assert on_pace.relative_rise == pytest.approx(0) and on_pace.p_value > 0.5 and not on_pace.large_enough(POLICY)
    assert not Comparison(2, 99, 10, 30.0, 20.0, 2000, 0.4).large_enough(POLICY)     # recent sample too small
    assert not Comparison(2, 200, 20, 60.0, 40.0, 99, 0.4).large_enough(POLICY)      # baseline too small
    small_rise = Comparison(2, 5000, 1400, 1500.0, 1000.0, 20000, 0.4)               # p = 0.001 but only +10%
    assert small_rise.relative_rise == pytest.approx(0.1) and small_rise.p_value < 0.01
    assert not small_rise.large_enough(POLICY) and not small_rise.holding(POLICY)
    # an open alert holds on half the rise at an uncorrected 5%: +16% (p = 0.04) holds, +8% does not
    lingering = Comparison(7, 1000, 265, 300.0, 300.0, 2000, 0.4)
    assert 0.125 < lingering.relative_rise < 0.25 and 0.01 < lingering.p_value < 0.05
    assert lingering.holding(POLICY) and not lingering.large_enough(POLICY)
    fading = Comparison(7, 1000, 280, 300.0, 200.0, 2000, 0.4)
    assert fading.relative_rise < 0.125 and fading.p_value < 0.1 and not fading.holding(POLICY)
    # a segment whose week of entrants dips below min_sample is not recovered: 14 of 98 moved, 41 expected
    thinned = Comparison(7, 98, 14, 41.0, 25.0, 262, 0.44)
    assert thinned.p_value < 1e-6 and not thinned.large_enough(POLICY) and thinned.holding(POLICY)


def test_the_nights_moves_and_the_cusum_over_entry_nights():
    """steps: of those not moved on as known the night before, who moved on tonight; a cell
    whose snapshot (or the one before) is missing is empty. Chart: the largest summed evidence
    over the possible onset nights, so normal cohorts before an onset do not dilute it."""
    counts = np.zeros((3, 3, 1, 2))
    counts[0, :, 0] = [(10, 2), (11, 5), (11, 9)]   # one entrant learned a night late; 2, 3, 4 moved per night
    counts[1, :, 0] = counts[2, :, 0] = [(5, 1), (5, 2), (5, 3)]
    known = np.array([[True, True, True], [True, True, False], [True, False, False]])
    at_risk, moved = steps(counts, known)
    assert at_risk[0, :, 0].tolist() == [10, 9, 6] and moved[0, :, 0].tolist() == [2, 3, 4]
    assert not at_risk[1, 2].any() and not at_risk[2, 1:].any()  # not published: nothing to count
    # hazards 0.5 at both ages; the alternative "drop-off rose by 50%" keeps movers' timing:
    # drop 0.25 -> 0.375, rho = 0.625 / 0.75; age 0: 0.5 rho; age 1: 0.5 rho 0.5 / (1 - rho 0.5)
    h0 = np.array([[0.5], [0.5]])
    rho = 0.625 / 0.75
    h1 = alternative(h0, 0.5)
    assert h1[:, 0] == pytest.approx([0.5 * rho, 0.25 * rho / (1 - 0.5 * rho)])
    assert 1 - (1 - h1[0, 0]) * (1 - h1[1, 0]) == pytest.approx(1 - 0.375)  # share moving on by the end
    cell = log_likelihood_ratio(np.array([[100.0]]), np.array([[30.0]]), np.array([[0.5]]), np.array([[0.4]]))
    assert cell[0, 0] == pytest.approx(30 * math.log(0.4 / 0.5) + 70 * math.log(0.6 / 0.5))
    # a change sparing the fast movers: from the age half the movers have moved by, the
    # hazard scaled; the hazards before it are the baseline's
    slow = np.array([[0.4], [0.0], [0.2], [0.2]])
    assert late_start(slow) == 1  # 40% of 61.6% move at age 0
    assert Design(late_ratio=0.5).hazards(slow)[:, 0].tolist() == [0.4, 0.0, 0.1, 0.1]
    # tonight's evidence is believed as far as the baseline's sampling error leaves it
    assert trust(Comparison(1, 100, 50, 60.0, 40.0, 500, 0.4, baseline_variance=10.0)) == pytest.approx(0.75)
    # five normal cohorts, then three where only 20 of 100 move at age 0 (half expected)
    risk, movers = np.zeros((8, 1, 1)), np.zeros((8, 1, 1))
    risk[:] = 100
    movers[:5], movers[5:] = 50, 20
    h0 = np.array([[0.5]])
    good, bad = (log_likelihood_ratio(np.array([[100.0]]), np.array([[m]]), h0, alternative(h0, 0.25))[0, 0]
                 for m in (50, 20))
    assert good < 0 < bad
    chart = Chart((Design(0.25),))
    values = [chart.add(risk, movers, h0, night, 1) for night in range(8)]
    assert values[:5] == [0.0] * 5 and values[-1] == pytest.approx(3 * bad)  # from the onset on, not diluted
    # two designs: the log of the average likelihood ratio, never more than the best one
    both = Chart((Design(0.25), Design(1.0)))
    mixed = [both.add(risk, movers, h0, night, 1) for night in range(8)][-1]
    strong = log_likelihood_ratio(np.array([[100.0]]), np.array([[20.0]]), h0, alternative(h0, 1.0))[0, 0]
    assert mixed == pytest.approx(np.logaddexp(3 * bad, 3 * strong) - math.log(2))
    chart.restart(7)
    assert chart.add(risk, movers, h0, 7, 1) == 0.0  # after a restart only later entrants count
    assert threshold(POLICY, 12, 0.75) == pytest.approx(math.log(12 / (0.75 * 0.01)))
    # the horizon: the p90 time in stage or the SLA, in nights of age, at least recent_window
    assert horizon(7, 3 * 86400.0, None) == 7 and horizon(7, 255 * 3600.0, 5 * 86400.0) == 12
    assert horizon(7, None, 9 * 86400.0) == 10 and horizon(7, 40 * 86400.0, None) == 21


def test_compare_expects_movers_at_the_baselines_hazard_of_each_age_and_time_of_day():
    """Two recent cohorts (tonight's at age 0, last night's at ages 0 and 1) and two times of
    day, against baseline hazards 0.5 / 0.2 (age 0) and 0.2 / 0.5 (age 1): expected movers are
    those at risk times the hazard (log-rank), the drop-off they are heading for a life table
    of their own hazards, the baseline's (at their pace so far) at ages not reached yet."""
    h0 = np.array([[0.5, 0.2], [0.2, 0.5]])
    base_risk = np.array([[100.0, 300.0], [50.0, 240.0]])
    at_risk = np.array([[[10, 20], [0, 0]], [[10, 10], [6, 8]]], dtype=float)
    movers = np.array([[[2, 2], [0, 0]], [[4, 2], [1, 4]]], dtype=float)
    one, two = compare(at_risk, movers, np.array([30, 20]), h0, base_risk)
    assert (one.days, one.recent_n, one.moved_on, one.baseline_n) == (1, 30, 4, 400)
    assert one.expected == pytest.approx(10 * 0.5 + 20 * 0.2)
    assert one.variance == pytest.approx(10 * 0.25 + 20 * 0.16 + 100 * 0.25 / 100 + 400 * 0.16 / 300)
    # times of day weighed as the baseline's entrants (1 : 3); both slots lose 40% by age 1
    assert one.baseline_rate == pytest.approx(0.4)
    # age 1 not reached yet: the baseline's hazards at the pace so far (4 movers of 9 expected)
    assert one.recent_rate == pytest.approx(0.25 * 0.8 * (1 - 0.2 * 4 / 9) + 0.75 * 0.9 * (1 - 0.5 * 4 / 9))
    assert (two.recent_n, two.moved_on) == (50, 15) and two.expected == pytest.approx(21.2)
    assert two.recent_rate == pytest.approx(0.25 * 0.7 * 5 / 6 + 0.75 * (26 / 30) * 0.5)
    assert two.relative_rise == pytest.approx(two.recent_rate / 0.4 - 1)
    assert compare(at_risk, movers, np.array([30, 20]), h0, base_risk, (alternative(h0, 0.25),))[0].evidence > 0


def build(daily_drop: dict[int, float], days: int, per_day: int = 200, known_after: int = 0) -> duckdb.DuckDBPyConnection:
    """Nightly journey_stages snapshots (night N holds every entrant of the 35 days up to N)
    where `per_day` customers enter 'verify' at noon each day and the given share (by day
    index, default 30%) never moves on; the others move on 3 hours after entering, which
    the snapshots know from `known_after` nights after the entry night on."""
    con = duckdb.connect()
    con.register("drops", pa.table({"day": list(range(days)), "drop": [daily_drop.get(d, 0.3) for d in range(days)]}))
    con.register("empty", JOURNEY_STAGES.empty_table())
    con.execute("CREATE TABLE journey_stages AS SELECT * FROM empty")
    start = int(datetime(START.year, START.month, START.day, tzinfo=timezone.utc).timestamp())
    con.execute(f"""
        INSERT INTO journey_stages BY NAME
        SELECT 'j' AS journey_id, DATE '{START}' + CAST(night AS INTEGER) AS as_of_date, 'c' || day || '-' || i AS customer_id,
               's' AS segment, 'verify' AS stage, 1 AS stage_index,
               to_timestamp({start} + day * 86400 + 12 * 3600) AS entered_at, 'web' AS entry_channel,
               CASE WHEN i >= drop * {per_day} AND night - day >= {known_after} THEN to_timestamp({start} + day * 86400 + 15 * 3600) END AS left_at
        FROM range({days}) n(night), drops, range({per_day}) c(i)
        WHERE day <= night AND day > night - 35""")
    maps = [{"journey_id": "j", "journey_version": "1", "stage_index": k, "stage": name, "stage_name": name,
             "optional": False, "max_time_in_stage_s": None, "alert_recent_days": 7, "alert_baseline_days": 28,
             "alert_min_relative_rise": 0.25, "alert_significance": 0.01, "alert_min_sample": 100}
            for k, name in enumerate(("sign_up", "verify", "done"))]
    con.register("m", pa.Table.from_pylist(maps, schema=JOURNEY_MAPS))
    con.execute("CREATE TABLE journey_maps AS SELECT * FROM m")
    return con


INCIDENT = {35: 0.45, 36: 0.45, 37: 0.9, 38: 0.9}
"""30% drop-off, then 45% on days 35-36 and 90% on days 37-38, then 30% again."""


def test_an_incident_opens_one_alert_escalates_and_resolves_when_it_recovers():
    """Night 35 sees the first 45% day: 110 of its 200 entrants moved on where 140 were
    expected (+50%); the 90% days escalate it; once the incident days have left every scan
    length it resolves. One alert for the stage: the channel and segment that carry the rise
    are its breakdown, not alerts of their own."""
    alerts = replay_alerts(build(INCIDENT, days=70)).to_pylist()
    assert len(alerts) == 1, alerts  # one alert, not one per night or per slice
    alert = alerts[0]
    assert (alert["stage"], alert["status"], alert["opened_date"]) == ("verify", "resolved", START + timedelta(days=35))
    assert alert["opened_by"] == "stage" and alert["escalated_date"] == START + timedelta(days=37)
    assert START + timedelta(days=39) < alert["resolved_date"] <= START + timedelta(days=46)
    [opened] = replay_alerts(build(INCIDENT, days=38)).to_pylist()
    assert (opened["status"], opened["baseline_drop_rate"]) == ("escalated", pytest.approx(0.3))
    assert opened["recent_drop_rate"] == pytest.approx(0.9) and opened["relative_rise"] == pytest.approx(2.0)
    assert opened["message"].startswith("verify: heading for 90.0% drop-off vs 30.0% before (+200%, evidence ")
    assert "20 of the 200 customers who entered in the last 1 day(s) moved on, 140.0 expected" in opened["message"]
    assert opened["evidence"] > opened["threshold"] == pytest.approx(math.log(1 / (0.75 * 0.01)))  # the stage's own bar
    assert opened["breakdown"] == "channel web +200%, segment s +200%"


def test_a_slow_stage_is_judged_at_every_age_up_to_its_horizon():
    """Like first_purchase: 45% of entrants move on the next day (unchanged by the incident),
    27.5% only 9 days after entering, the rest never. From day 40 the late movers stop. No
    age below 9 differs, so comparing only the first `recent_window` (7) nights of each cohort
    never sees it; the horizon (p90 time in stage: 10 nights) does, once the first incident
    cohorts reach age 9, and not before."""
    con = build_paths(days=70, incident_from=40)
    alerts = replay_alerts(con).to_pylist()
    assert [a["stage"] for a in alerts] == ["verify"], alerts
    assert START + timedelta(days=49) <= alerts[0]["opened_date"] <= START + timedelta(days=51)
    # the incident never ends: the alert stays open, judged by the baseline (and horizon) of the
    # night it opened, not by the incident's own entrants once they are 28 nights old
    assert alerts[0]["status"] == "open" and alerts[0]["baseline_drop_rate"] == pytest.approx(0.275)
    assert alerts[0]["recent_drop_rate"] == pytest.approx(0.55)
    assert replay_alerts(build_paths(days=70, incident_from=None)).num_rows == 0


def build_paths(days: int, incident_from: int | None, per_day: int = 200) -> duckdb.DuckDBPyConnection:
    """Nightly snapshots of a slow stage (see the test above): `per_day` customers enter
    'verify' at noon each day; the first 45% move on 1 day later, the next 27.5% 9 days later
    (none from `incident_from` on), the others never."""
    con = build({}, days=days, per_day=per_day)
    con.execute("DELETE FROM journey_stages")
    start = int(datetime(START.year, START.month, START.day, tzinfo=timezone.utc).timestamp())
    late = "TRUE" if incident_from is None else f"day < {incident_from}"
    con.execute(f"""
        INSERT INTO journey_stages BY NAME
        SELECT 'j' AS journey_id, DATE '{START}' + CAST(night AS INTEGER) AS as_of_date, 'c' || day || '-' || i AS customer_id,
               's' AS segment, 'verify' AS stage, 1 AS stage_index,
               to_timestamp({start} + day * 86400 + 12 * 3600) AS entered_at, 'web' AS entry_channel,
               CASE WHEN i < 0.45 * {per_day} AND night >= day + 1 THEN to_timestamp({start} + (day + 1) * 86400 + 12 * 3600)
                    WHEN i >= 0.45 * {per_day} AND i < 0.725 * {per_day} AND {late} AND night >= day + 9
                    THEN to_timestamp({start} + (day + 9) * 86400 + 12 * 3600) END AS left_at
        FROM range({days}) n(night), range({days}) d(day), range({per_day}) c(i)
        WHERE day <= night AND day > night - 35""")
    return con


def test_a_steady_stage_raises_nothing_and_replay_is_deterministic():
    con = build({}, days=60)
    assert replay_alerts(con).num_rows == 0
    noisy = build({d: 0.3 + (0.02 if d % 2 else -0.02) for d in range(60)}, days=60)
    assert replay_alerts(noisy).num_rows == 0
    incident = build({d: 0.5 for d in range(40, 60)}, days=60)
    assert replay_alerts(incident).equals(replay_alerts(incident))


def test_moves_learned_a_night_late_raise_nothing():
    """Tonight's entrants look stuck (their moves arrive tomorrow), but so did every baseline
    entrant on its own entry night: compared at the same age, nothing is wrong. Against the
    baseline's pace as known today they would all look dropped."""
    late = build({}, days=60, known_after=1)
    assert replay_alerts(late).num_rows == 0
    assert replay_alerts(build({d: 0.9 for d in range(45, 60)}, days=60, known_after=1)).num_rows > 0


def test_bad_days_a_few_nights_apart_are_one_alert_held_until_the_rise_is_gone():
    """Days 40, 43 and 46 lose half their entrants. Two nights after each, no scan length
    passes the opening floor (the 3-night scan is heading for +22%), so an alert that resolved
    on that would reopen at each bad day: three notifications for one trouble. The open alert
    holds while the rise still shows at the lower bars, and resolves once it is gone. Bad
    days 8 nights apart are two incidents, two alerts."""
    bursts = {40: 0.5, 43: 0.5, 46: 0.5}
    con = build(bursts, days=65)
    night_42 = dict(night_results(con, "j", "done", POLICY))[START + timedelta(days=42)]
    between = night_42["verify"][WHOLE]
    assert between.holds and not any(c.large_enough(POLICY) for c in [between.comparison])
    assert between.comparison.days == 3 and 0.125 < between.comparison.relative_rise < 0.25
    [alert] = replay_alerts(con).to_pylist()
    assert (alert["opened_date"], alert["status"]) == (START + timedelta(days=40), "resolved")
    assert START + timedelta(days=47) < alert["resolved_date"] <= START + timedelta(days=53)
    apart = replay_alerts(build({40: 0.5, 48: 0.5}, days=65)).to_pylist()
    assert [a["opened_date"] for a in apart] == [START + timedelta(days=40), START + timedelta(days=48)]
    assert apart[0]["resolved_date"] < apart[1]["opened_date"]


def test_each_night_of_an_alert_is_kept_with_its_figures_and_breakdown_then():
    """alert_nights holds one row per published night from opening to resolution, with that
    night's status and figures, and alert_slices the slices that carried the rise that night,
    so a report of an older day shows what was known that day."""
    con = build(INCIDENT, days=70)
    alerts, nights, slices = replay(con)
    [alert] = alerts.to_pylist()
    rows = [n for n in nights.to_pylist() if n["alert_id"] == alert["alert_id"]]
    opened, escalated, resolved = alert["opened_date"], alert["escalated_date"], alert["resolved_date"]
    assert [n["night"] for n in rows] == [opened + timedelta(days=k) for k in range((resolved - opened).days + 1)]
    assert [n["status"] for n in rows] == (["open"] * (escalated - opened).days
                                           + ["escalated"] * (resolved - escalated).days + ["resolved"])
    first, worst, last = rows[0], rows[(escalated - opened).days], rows[-1]
    # night 35: the first 45% day alone; night 37: the first 90% day alone (hand-computed above)
    assert (first["scan_days"], first["recent_entrants"], first["moved_on"]) == (1, 200, 110)
    assert first["expected_moved_on"] == pytest.approx(140) and first["relative_rise"] == pytest.approx(0.5)
    assert (worst["moved_on"], worst["relative_rise"]) == (20, pytest.approx(2.0))
    assert (last["relative_rise"], last["message"]) == (alert["relative_rise"], alert["message"])
    assert first["message"] != last["message"]
    first_slices = [s for s in slices.to_pylist() if s["night"] == opened]
    assert [(s["dimension"], s["dimension_value"], s["moved_on"]) for s in first_slices] == [
        ("channel", "web", 110), ("segment", "s", 110)]

    with_alert_tables(con, (alerts, nights, slices))
    [then] = alerts_open_on(con, "j", opened)
    assert (then["status"], then["message"]) == ("open", first["message"])
    assert [(s["dimension"], s["relative_rise"]) for s in then["slices"]] == [
        ("channel", pytest.approx(0.5)), ("segment", pytest.approx(0.5))]
    assert alerts_open_on(con, "j", opened - timedelta(days=1)) == ()
    assert alerts_open_on(con, "j", escalated)[0]["status"] == "escalated"
    assert alerts_open_on(con, "j", resolved) == ()  # resolved that night


def test_the_report_shows_each_alert_once_with_its_breakdown_under_it():
    """The report used to print "verify: " before a message that starts with the stage."""
    from warehouse.report import _alerts

    con = build(INCIDENT, days=36)
    with_alert_tables(con, replay(con))
    page = _alerts(alerts_open_on(con, "j", START + timedelta(days=35)))
    assert page.count("<li><b>open</b>") == 1 and "verify: verify" not in page
    assert page.count("verify: heading for") == 1
    assert "channel web: heading for 45.0% drop-off vs 30.0% (+50%)" in page and "segment s: heading for" in page


def with_alert_tables(con: duckdb.DuckDBPyConnection, replayed: tuple[pa.Table, pa.Table, pa.Table]) -> None:
    """The replayed tables stored as publish stores them, for the report's readers."""
    for name, table in zip(("alerts", "alert_nights", "alert_slices"), replayed):
        con.register("_t", table)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM _t")
        con.unregister("_t")
