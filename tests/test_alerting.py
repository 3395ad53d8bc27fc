"""Rising drop-off detection: the two-proportion test against hand-computed values, and the
alert lifecycle (open once, escalate, resolve; no daily repeats) replayed from cohort rows
built by hand in a real DuckDB database."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import duckdb
import pyarrow as pa
import pytest

from journey_defs.model import AlertPolicy
from journey_defs.outputs import JOURNEY_STAGES, JOURNEYS
from warehouse.alerting import Comparison, compare, replay_alerts
from warehouse.tables import JOURNEY_MAPS

POLICY = AlertPolicy(timedelta(days=7), timedelta(days=28), 0.25, 0.01, 100)
START = date(2026, 1, 1)


def test_the_z_test_and_the_three_conditions():
    same = Comparison(700, 210, 2800, 840)
    assert same.relative_rise == 0 and same.p_value == pytest.approx(0.5)
    risen = Comparison(700, 350, 2800, 840)  # 50% vs 30%
    # z = 0.2 / sqrt(p(1-p)(1/700 + 1/2800)), p = 1190/3500
    assert risen.p_value == pytest.approx(0.5 * __import__("math").erfc(9.9926 / 2 ** 0.5), rel=1e-3)
    assert risen.relative_rise == pytest.approx(2 / 3) and risen.alarming(POLICY)
    assert not Comparison(70, 35, 2800, 840).alarming(POLICY)          # recent sample too small
    assert not Comparison(700, 245, 2800, 840).alarming(POLICY)        # +17%: under the 25% rise
    assert not Comparison(120, 45, 140, 37).alarming(POLICY)           # +42% but not significant at 1%


def test_compare_sums_the_recent_and_baseline_cohorts():
    cohorts = {START + timedelta(days=i): (100, 30 if i < 28 else 60) for i in range(35)}
    night = START + timedelta(days=35)  # cohorts up to the day before have matured
    result = compare(cohorts, night, POLICY)
    assert (result.recent_n, result.recent_dropped, result.baseline_n, result.baseline_dropped) == (700, 420, 2800, 840)


def build(daily_drop: dict[int, float], days: int, per_day: int = 200) -> duckdb.DuckDBPyConnection:
    """journey_stages snapshots where `per_day` customers enter 'verify' each day and the
    given share (by day index, default 30%) has not moved on 24 h later; one journeys row
    per night so every night is a published night."""
    con = duckdb.connect()
    stages, journeys = [], []
    for d in range(days):
        cohort = START + timedelta(days=d)
        drop = daily_drop.get(d, 0.3)
        for i in range(per_day):
            entered = datetime(cohort.year, cohort.month, cohort.day, 12, tzinfo=timezone.utc)
            left = None if i < drop * per_day else entered + timedelta(hours=3)
            stages.append({"journey_id": "j", "as_of_date": cohort + timedelta(days=1), "customer_id": f"c{d}-{i}",
                           "segment": "s", "stage": "verify", "stage_index": 1, "entered_at": entered,
                           "entry_channel": "web", "left_at": left, "time_in_stage_s": 1.0, "is_current": left is None,
                           "stalled": False})
        journeys.append({"journey_id": "j", "as_of_date": cohort + timedelta(days=1), "customer_id": "x",
                         "status": "in_progress"})
    con.register("s", pa.Table.from_pylist(stages, schema=JOURNEY_STAGES))
    con.execute("CREATE TABLE journey_stages AS SELECT * FROM s")
    con.register("j", pa.Table.from_pylist(journeys, schema=pa.schema([JOURNEYS.field(n) for n in
                                                                       ("journey_id", "as_of_date", "customer_id",
                                                                        "status")])))
    con.execute("CREATE TABLE journeys AS SELECT * FROM j")
    maps = [{"journey_id": "j", "journey_version": "1", "stage_index": k, "stage": name, "stage_name": name,
             "optional": False, "max_time_in_stage_s": None, "alert_recent_days": 7, "alert_baseline_days": 28,
             "alert_min_relative_rise": 0.25, "alert_significance": 0.01, "alert_min_sample": 100}
            for k, name in enumerate(("sign_up", "verify", "done"))]
    con.register("m", pa.Table.from_pylist(maps, schema=JOURNEY_MAPS))
    con.execute("CREATE TABLE journey_maps AS SELECT * FROM m")
    return con


def test_an_incident_opens_one_alert_escalates_and_resolves_when_it_recovers():
    """30% -> 90% drop-off for the cohorts of days 35-38. Cohort 35 matures on night 36:
    1 of 7 recent cohorts lifts the recent rate to 38.6% (+29%), enough; the second cohort
    (+57%) escalates; once the recent window is clean again the alert resolves."""
    incident = {d: 0.9 for d in range(35, 39)}
    alerts = replay_alerts(build(incident, days=70)).to_pylist()
    whole = [a for a in alerts if a["dimension"] == "*"]
    assert len(whole) == 1, whole  # one alert, not one per night
    alert = whole[0]
    assert (alert["stage"], alert["status"], alert["opened_date"]) == ("verify", "resolved", START + timedelta(days=36))
    assert START + timedelta(days=43) < alert["resolved_date"] <= START + timedelta(days=46)
    assert "verify: drop-off within 24 h" in alert["message"]
    during = replay_alerts(build(incident, days=44)).to_pylist()
    assert [(a["status"], a["opened_date"]) for a in during if a["dimension"] == "*"] == [
        ("escalated", START + timedelta(days=36))]
    assert {a["dimension"] for a in alerts} == {"*", "channel", "segment"}  # one per dimension, same story


def test_a_steady_stage_raises_nothing_and_replay_is_deterministic():
    con = build({}, days=60)
    assert replay_alerts(con).num_rows == 0
    noisy = build({d: 0.3 + (0.02 if d % 2 else -0.02) for d in range(60)}, days=60)
    assert replay_alerts(noisy).num_rows == 0
    incident = build({d: 0.5 for d in range(40, 60)}, days=60)
    assert replay_alerts(incident).equals(replay_alerts(incident))
