"""Alerts continued from where the last publish stopped equal the whole history's replay, on
every night, through an alert's opening, escalation, holding and resolution, at a fast stage
and at a slow one; and anything that could make the saved state stale (a republished day, a
new segment, another policy) replays the whole history instead."""
from __future__ import annotations

from datetime import date, timedelta

import duckdb
import pytest

from tests.test_alerting import INCIDENT, START, build, build_paths
from warehouse import alert_state
from warehouse.alert_counts import summarize
from warehouse.alerting import advance, replay, tables
from warehouse.publish import _create_tables, _replace_alerts

ALERT_TABLES = ("alerts", "alert_nights", "alert_slices")
ORDER = {"alerts": "alert_id", "alert_nights": "night, alert_id",
         "alert_slices": "night, alert_id, dimension, dimension_value"}


def as_warehouse(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """The built snapshots kept aside (`all_stages`) and the warehouse's tables created empty,
    so nights can be published into it one at a time."""
    con.execute("ALTER TABLE journey_stages RENAME TO all_stages")
    _create_tables(con)
    return con


def publish_night(con: duckdb.DuckDBPyConnection, day: date) -> None:
    """What a publish of `day` does to journey_stages, its summaries and the alerts."""
    con.execute("DELETE FROM journey_stages WHERE partition_date = ?", [day])
    con.execute("INSERT INTO journey_stages BY NAME SELECT *, as_of_date AS partition_date FROM all_stages "
                "WHERE as_of_date = ?", [day])
    summarize(con, [day])
    _replace_alerts(con, (day,))


def stored(con: duckdb.DuckDBPyConnection) -> dict[str, list]:
    return {t: con.execute(f"SELECT * EXCLUDE (journey_id), journey_id FROM {t} ORDER BY {ORDER[t]}").fetchall()
            for t in ALERT_TABLES}


def replayed(con: duckdb.DuckDBPyConnection) -> dict[str, list]:
    """The whole history's replay, as rows in the stored tables' column order."""
    out = {}
    for name, table in zip(ALERT_TABLES, replay(con)):
        con.register("_t", table)
        out[name] = con.execute(f"SELECT * EXCLUDE (journey_id), journey_id FROM _t ORDER BY {ORDER[name]}").fetchall()
        con.unregister("_t")
    return out


def saved_state(con: duckdb.DuckDBPyConnection) -> str:
    return con.execute("SELECT state FROM alert_state WHERE journey_id = 'j'").fetchone()[0]


def whole_state(con: duckdb.DuckDBPyConnection) -> str:
    [done] = advance(con, ())  # no days given: the whole history is replayed
    assert not done.continued
    done.state["fingerprint"] = alert_state.load(con, "j")["fingerprint"]
    return alert_state.dumps(done.state)


@pytest.mark.parametrize("scenario", ["incident", "slow stage", "bursts"])
def test_every_night_continued_equals_the_whole_replay(scenario):
    """INCIDENT opens on night 35, escalates on 37 and resolves; the slow stage's alert opens
    around night 50 and stays open with its baseline held; the bursts hold one alert over
    three bad days and resolve it. Each night is published alone and continued from the last
    one's state: its tables and its state equal the whole history's replay, every night."""
    days = 62
    built = {"incident": lambda: build(INCIDENT, days=days), "slow stage": lambda: build_paths(days, incident_from=40),
             "bursts": lambda: build({40: 0.5, 43: 0.5, 46: 0.5}, days=days)}[scenario]
    from_raw = replayed(built())  # the summaries' replay equals one over the raw snapshots
    con = as_warehouse(built())
    continued = 0
    for n in range(days):
        day = START + timedelta(days=n)
        before = alert_state.load(con, "j")
        publish_night(con, day)
        continued += before is not None
        assert stored(con) == replayed(con), day
        assert saved_state(con) == whole_state(con), day
        [done] = advance(con, (day + timedelta(days=1),))  # (tomorrow's publish, nothing new yet: continues)
        assert done.continued and not done.nights
    assert continued == days - 1
    assert stored(con) == from_raw and from_raw["alerts"], scenario
    statuses = {s for s, in con.execute("SELECT status FROM alerts").fetchall()}
    assert statuses == ({"open"} if scenario == "slow stage" else {"resolved"})


def publish_checked(con: duckdb.DuckDBPyConnection, day: date) -> bool:
    """Publish `day` (as `publish_night`); whether its alerts were continued, after checking
    they equal the whole replay's."""
    con.execute("DELETE FROM journey_stages WHERE partition_date = ?", [day])
    con.execute("INSERT INTO journey_stages BY NAME SELECT *, as_of_date AS partition_date FROM all_stages "
                "WHERE as_of_date = ?", [day])
    summarize(con, [day])
    [done] = advance(con, (day,))
    _replace_alerts(con, (day,))
    assert stored(con) == replayed(con) and saved_state(con) == whole_state(con)
    return done.continued


def test_a_republished_day_a_new_segment_or_another_policy_replays_the_whole_history():
    con = as_warehouse(build(INCIDENT, days=45))
    for n in range(40):
        publish_night(con, START + timedelta(days=n))
    # a day before the state's last night, republished with a changed snapshot
    con.execute("UPDATE all_stages SET left_at = NULL WHERE as_of_date = ? AND customer_id LIKE 'c36-1%'",
                [START + timedelta(days=36)])
    assert not publish_checked(con, START + timedelta(days=36))
    # a later night where a segment appears that no earlier night had: the slices' bars change
    con.execute("UPDATE all_stages SET segment = 'new' WHERE as_of_date = ? AND customer_id LIKE 'c40-%'",
                [START + timedelta(days=40)])
    assert not publish_checked(con, START + timedelta(days=40))
    assert publish_checked(con, START + timedelta(days=41))
    # another significance: the state was made under the old one
    con.execute("UPDATE journey_maps SET alert_significance = 0.001")
    assert not publish_checked(con, START + timedelta(days=42))
    assert publish_checked(con, START + timedelta(days=43))
    # a state that cannot be read is no state
    con.execute("UPDATE alert_state SET state = '{not json'")
    assert alert_state.load(con, "j") is None
    assert not publish_checked(con, START + timedelta(days=44))


def test_tables_sorts_as_the_replay_does():
    con = build(INCIDENT, days=40)
    alerts, nights, slices = replay(con)
    again = tables(list(reversed(alerts.to_pylist())), list(reversed(nights.to_pylist())),
                   list(reversed(slices.to_pylist())))
    assert again[0].equals(alerts) and again[1].equals(nights) and again[2].equals(slices)


def test_a_warehouse_without_summaries_gets_them_for_every_published_day():
    """A warehouse an older version published has no summaries and no state: the first
    publish summarizes every published day and replays the whole history."""
    from warehouse.alert_counts import unsummarized

    con = as_warehouse(build(INCIDENT, days=40))
    for n in range(39):
        publish_night(con, START + timedelta(days=n))
    before = stored(con)
    for table in ("alert_counts", "alert_stage_nights", "alert_state"):
        con.execute(f"DROP TABLE {table}")
    _create_tables(con)
    assert len(unsummarized(con)) == 39
    summarize(con, unsummarized(con))
    assert unsummarized(con) == [] and stored(con) == before == replayed(con)
    assert alert_state.load(con, "j") is None
    publish_night(con, START + timedelta(days=39))
    assert stored(con) == replayed(con) and saved_state(con) == whole_state(con)
