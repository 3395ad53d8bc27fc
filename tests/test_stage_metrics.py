"""STAGE_DAILY on a small hand-built case with exact numbers, and the same result whether the
customers come in one bucket or several."""
from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timezone

import pyarrow as pa
import pytest

from journey_defs.outputs import JOURNEY_STAGES, JOURNEYS, STAGE_DAILY
from tests.test_journeys import toy_map
from transforms.stage_metrics import combine_stage_daily, stage_daily

DAY = date(2026, 1, 10)
END = datetime(2026, 1, 11, tzinfo=timezone.utc)
JOURNEY = toy_map()  # a -> b (optional) -> c -> d -> e


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# customer: (segment, status, [(stage, entered_at, entry channel, left_at or None for the current stage)])
CUSTOMERS = {
    "u1": ("pro", "in_progress", [("a", "2026-01-08 10:00", "web", "2026-01-08 12:00"),
                                  ("c", "2026-01-08 12:00", "email", "2026-01-10 09:00"),
                                  ("d", "2026-01-10 09:00", "web", None)]),
    "u2": ("pro", "in_progress", [("a", "2026-01-10 08:00", "email", None)]),
    "u3": (None, "stalled", [("a", "2026-01-05 10:00", "web", "2026-01-06 10:00"),
                             ("b", "2026-01-06 10:00", "chat", None)]),
    "u4": ("basic", "dropped", [("a", "2026-01-02 10:00", "web", "2026-01-02 22:00"),
                                ("c", "2026-01-02 22:00", "web", None)]),
}


def tables(customers: list[str], day: date = DAY) -> tuple[pa.Table, pa.Table]:
    """journey_stages and journeys of `customers` as build_journeys writes them."""
    stages, journeys = [], []
    for customer in customers:
        segment, status, entered = CUSTOMERS[customer]
        for stage, at, channel, left in entered:
            ended = utc(left) if left else END
            stages.append({"journey_id": "toy", "as_of_date": day, "customer_id": customer, "segment": segment,
                           "stage": stage, "stage_index": JOURNEY.stage_ids.index(stage), "entered_at": utc(at),
                           "entry_channel": channel, "left_at": utc(left) if left else None,
                           "time_in_stage_s": (ended - utc(at)).total_seconds(), "is_current": left is None,
                           "stalled": left is None and status == "stalled"})
        journeys.append({"journey_id": "toy", "as_of_date": day, "customer_id": customer, "segment": segment,
                         "status": status, "current_stage": entered[-1][0]})
    return pa.Table.from_pylist(stages, schema=JOURNEY_STAGES), pa.Table.from_pylist(journeys, schema=JOURNEYS)


@pytest.fixture(scope="module")
def daily() -> dict[tuple, dict]:
    out = stage_daily(*tables(list(CUSTOMERS)), JOURNEY, DAY)
    assert out.schema == STAGE_DAILY
    rows = out.to_pylist()
    assert all(r["journey_id"] == "toy" and r["date"] == DAY for r in rows)
    return {(r["stage"], r["channel"], r["segment"]): r for r in rows}


def metrics(row: dict) -> tuple:
    return tuple(row[k] for k in ("entered", "progressed", "dropped", "stalled", "in_stage", "reached",
                                  "conversion_rate", "p50_time_in_stage_s", "p90_time_in_stage_s"))


def test_every_stage_has_all_channel_rows_per_segment_and_rows_per_entry_channel(daily):
    segments = ("*", "basic", "pro", None)
    expected = {(s, "*", seg) for s in JOURNEY.stage_ids for seg in segments}
    expected |= {("a", "web", seg) for seg in ("*", "basic", "pro", None)} | {("a", "email", "*"), ("a", "email", "pro")}
    expected |= {("b", "chat", "*"), ("b", "chat", None)}
    expected |= {("c", "email", "*"), ("c", "email", "pro"), ("c", "web", "*"), ("c", "web", "basic")}
    expected |= {("d", "web", "*"), ("d", "web", "pro")}
    assert set(daily) == expected


@pytest.mark.parametrize("key, expected", [
    # (entered, progressed, dropped, stalled, in_stage, reached, conversion_rate, p50, p90)
    # conversion_rate: went on to any later stage, the optional b included (u3 went a -> b)
    (("a", "*", "*"), (1, 0, 0, 0, 1, 4, 0.75, 43200.0, 77760.0)),   # left after 2 h, 12 h, 24 h
    (("a", "web", "*"), (0, 0, 0, 0, 0, 3, 1.0, 43200.0, 77760.0)),
    (("a", "email", "pro"), (1, 0, 0, 0, 1, 1, 0.0, None, None)),   # nobody left yet: no times
    (("a", "*", "pro"), (1, 0, 0, 0, 1, 2, 0.5, 7200.0, 7200.0)),
    (("a", "*", None), (0, 0, 0, 0, 0, 1, 1.0, 86400.0, 86400.0)),  # customers the CRM does not know
    (("b", "*", "*"), (0, 0, 0, 1, 1, 1, 0.0, None, None)),         # optional: its own customer, stuck there
    (("b", "*", "pro"), (0, 0, 0, 0, 0, 0, None, None, None)),      # nobody reached it: no rate
    (("c", "*", "*"), (0, 1, 1, 0, 1, 2, 0.5, 162000.0, 162000.0)),
    (("c", "web", "basic"), (0, 0, 1, 0, 1, 1, 0.0, None, None)),
    (("d", "*", "*"), (1, 0, 0, 0, 1, 1, 0.0, None, None)),
    (("e", "*", "*"), (0, 0, 0, 0, 0, 0, None, None, None)),        # final stage: no rate
])
def test_exact_numbers(daily, key, expected):
    assert metrics(daily[key]) == pytest.approx(expected)


def test_rows_are_sorted_by_stage_then_all_first():
    keys = [(r["stage"], r["channel"], r["segment"]) for r in stage_daily(*tables(list(CUSTOMERS)), JOURNEY, DAY).to_pylist()]
    assert keys[:6] == [("a", "*", "*"), ("a", "*", "basic"), ("a", "*", "pro"), ("a", "*", None),
                        ("a", "email", "*"), ("a", "email", "pro")]


def test_buckets_combine_to_the_same_table_and_other_days_are_ignored():
    whole = stage_daily(*tables(list(CUSTOMERS)), JOURNEY, DAY)
    (s1, j1), (s2, j2) = tables(["u1", "u3"]), tables(["u2", "u4"])
    s_old, j_old = tables(list(CUSTOMERS), date(2026, 1, 9))
    assert combine_stage_daily([s1, s2, s_old], [j1, j2, j_old], JOURNEY, DAY).equals(whole)
    assert combine_stage_daily([], [], JOURNEY, DAY).num_rows == len(JOURNEY.stages)  # one all-row per stage


def test_a_journey_without_segment_field_has_only_all_segment_rows():
    out = stage_daily(*tables(list(CUSTOMERS)), replace(JOURNEY, segment_field=None), DAY).to_pylist()
    assert {r["segment"] for r in out} == {"*"}
    assert [(r["stage"], r["channel"], r["reached"]) for r in out] == [
        ("a", "*", 4), ("a", "email", 1), ("a", "web", 3), ("b", "*", 1), ("b", "chat", 1),
        ("c", "*", 2), ("c", "email", 1), ("c", "web", 1), ("d", "*", 1), ("d", "web", 1), ("e", "*", 0)]
