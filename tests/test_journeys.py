"""Journey instances: stage entries per ordering mode, statuses with their strict bounds,
deviations, feedback, and the whole chain (parse -> stitch -> match -> journeys, sessions)
against the generator's ground truth."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generator.generate import GenerateConfig, generate
from journey_defs.loader import BUILTIN_JOURNEYS, load_journey
from journey_defs.model import JourneyMap, Stage, Touchpoint
from journey_defs.outputs import DEVIATIONS, FEEDBACK, JOURNEY_STAGES, JOURNEYS
from journey_defs.source_spec import load_sources
from tests.helpers import canonical_events, read_sample
from transforms.journeys import JourneyOutputs, build_journeys
from transforms.match import with_matches
from transforms.parse import read_identity_table
from transforms.sessions import sessionize

AS_OF = date(2026, 1, 10)  # events before 2026-01-11 00:00 UTC count


def utc(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def toy_map(ordering: str = "ordered") -> JourneyMap:
    """a -> b (optional) -> c -> d -> e; stage x is the web event 'x'. Stalled after 1 d in
    a or b, 2 d in c; d and e have no limit. Exit: web 'cancel'; detour: chat 'help'."""
    limits = {"a": timedelta(days=1), "b": timedelta(days=1), "c": timedelta(days=2)}
    return JourneyMap(
        id="toy", version="2.1", sources=("web", "chat", "survey"), ordering=ordering, segment_field="segment",
        conversion_window=timedelta(days=10),
        stages=tuple(Stage(s, s.upper(), (Touchpoint("web", s),), optional=s == "b", max_time_in_stage=limits.get(s))
                     for s in "abcde"),
        exits=(Touchpoint("web", "cancel"),), support=(Touchpoint("chat", "help"),),
        ignore=(Touchpoint("web", "login"), Touchpoint("survey", "nps")),
    )


def run(journey: JourneyMap, rows: list[tuple], as_of: date = AS_OF, segments: pa.Table | None = None) -> JourneyOutputs:
    """Rows (customer, event_type, ts[, channel[, score]]) -> build_journeys outputs (schemas checked)."""
    events = canonical_events([
        {"customer_id": r[0], "event_type": r[1], "ts": r[2], "channel": r[3] if len(r) > 3 else "web",
         "score": r[4] if len(r) > 4 else None} for r in rows])
    out = build_journeys(with_matches(events, journey), journey, as_of, segments)
    for table, schema in ((out.journeys, JOURNEYS), (out.journey_stages, JOURNEY_STAGES),
                          (out.deviations, DEVIATIONS), (out.feedback, FEEDBACK)):
        assert table.schema == schema
    return out


def stages_of(out: JourneyOutputs, customer: str) -> list[tuple]:
    """(stage, entered_at, left_at, time_in_stage_s, is_current, stalled) of a customer."""
    return [(r["stage"], r["entered_at"], r["left_at"], r["time_in_stage_s"], r["is_current"], r["stalled"])
            for r in out.journey_stages.to_pylist() if r["customer_id"] == customer]


def entries_of(out: JourneyOutputs, customer: str) -> dict[str, datetime]:
    return {stage: entered for stage, entered, *_ in stages_of(out, customer)}


def deviations_of(out: JourneyOutputs, customer: str | None = None) -> list[tuple]:
    """(kind, stage, from_stage, event_type, ts) in time order."""
    return [(r["kind"], r["stage"], r["from_stage"], r["event_type"], r["ts"])
            for r in out.deviations.to_pylist() if customer in (None, r["customer_id"])]


def journey_of(out: JourneyOutputs, customer: str) -> dict:
    [row] = [r for r in out.journeys.to_pylist() if r["customer_id"] == customer]
    return row


# --- ordering modes -------------------------------------------------------------------------
def test_ordered_journey_with_its_stages_and_an_optional_stage_left_out():
    out = run(toy_map(), [
        ("c1", "login", "2026-01-04 09:00"),  # before the journey: counted as an event, nothing else
        ("c1", "a", "2026-01-05 10:00"), ("c1", "b", "2026-01-05 11:00"), ("c1", "c", "2026-01-05 12:00"),
        ("c1", "d", "2026-01-06 12:00"), ("c1", "e", "2026-01-07 00:00"),
        ("c2", "a", "2026-01-08 10:00"), ("c2", "c", "2026-01-08 12:00"), ("c2", "d", "2026-01-09 10:00"),
    ], segments=pa.table({"customer_id": ["c1", "zz"], "segment": ["pro", "team"]}))
    assert stages_of(out, "c1") == [
        ("a", utc("2026-01-05 10:00"), utc("2026-01-05 11:00"), 3600.0, False, False),
        ("b", utc("2026-01-05 11:00"), utc("2026-01-05 12:00"), 3600.0, False, False),
        ("c", utc("2026-01-05 12:00"), utc("2026-01-06 12:00"), 86400.0, False, False),
        ("d", utc("2026-01-06 12:00"), utc("2026-01-07 00:00"), 43200.0, False, False),
        ("e", utc("2026-01-07 00:00"), None, 4 * 86400.0, True, False),  # until the end of AS_OF
    ]
    assert stages_of(out, "c2") == [  # b is optional: skipping it is no deviation
        ("a", utc("2026-01-08 10:00"), utc("2026-01-08 12:00"), 7200.0, False, False),
        ("c", utc("2026-01-08 12:00"), utc("2026-01-09 10:00"), 79200.0, False, False),
        ("d", utc("2026-01-09 10:00"), None, 136800.0, True, False),
    ]
    assert deviations_of(out) == []
    assert out.journeys.to_pylist() == [
        {"journey_id": "toy", "journey_version": "2.1", "as_of_date": AS_OF, "as_of_at": utc("2026-01-11 00:00"),
         "customer_id": "c1", "segment": "pro", "identified": True,  # known to the CRM
         "started_at": utc("2026-01-05 10:00"), "current_stage": "e", "current_stage_entered_at": utc("2026-01-07 00:00"),
         "status": "converted", "converted_at": utc("2026-01-07 00:00"), "exit_at": None, "exit_event": None,
         "last_event_at": utc("2026-01-07 00:00"), "last_channel": "web", "n_events": 6},
        {"journey_id": "toy", "journey_version": "2.1", "as_of_date": AS_OF, "as_of_at": utc("2026-01-11 00:00"),
         "customer_id": "c2", "segment": None, "identified": False,  # no user id, e-mail, phone or CRM record
         "started_at": utc("2026-01-08 10:00"), "current_stage": "d", "current_stage_entered_at": utc("2026-01-09 10:00"),
         "status": "in_progress", "converted_at": None, "exit_at": None, "exit_event": None,
         "last_event_at": utc("2026-01-09 10:00"), "last_channel": "web", "n_events": 3},
    ]
    assert out.journey_stages["entry_channel"].to_pylist() == ["web"] * 8
    assert set(out.journey_stages["segment"].to_pylist()) == {"pro", None}


def test_ordered_skipped_stage_and_backtracks():
    out = run(toy_map(), [
        ("c1", "c", "2026-01-05 09:00"),  # before the journey started: neither an entry nor a deviation
        ("c1", "a", "2026-01-05 10:00"),
        ("c1", "e", "2026-01-05 11:00"),  # c and d never entered: skipped, the first of them is named
        ("c1", "c", "2026-01-05 12:00"), ("c1", "d", "2026-01-05 12:30"), ("c1", "e", "2026-01-05 13:00"),
        ("c1", "a", "2026-01-05 14:00"),  # back to a
        ("c1", "b", "2026-01-05 15:00"),  # the optional stage after a later one: out of order, not entered
    ])
    assert deviations_of(out) == [
        ("skipped_stage", "c", "a", "e", utc("2026-01-05 11:00")),
        ("backtrack", "a", "e", "a", utc("2026-01-05 14:00")),
        ("out_of_order", "b", "e", "b", utc("2026-01-05 15:00")),
    ]
    assert stages_of(out, "c1") == [
        ("a", utc("2026-01-05 10:00"), utc("2026-01-05 12:00"), 7200.0, False, False),
        ("c", utc("2026-01-05 12:00"), utc("2026-01-05 12:30"), 1800.0, False, False),
        ("d", utc("2026-01-05 12:30"), utc("2026-01-05 13:00"), 1800.0, False, False),
        ("e", utc("2026-01-05 13:00"), None, 5 * 86400.0 + 11 * 3600.0, True, False),
    ]
    assert journey_of(out, "c1")["status"] == "converted"


STRICT_ROWS = [
    ("c1", "a", "2026-01-05 10:00"), ("c1", "c", "2026-01-05 11:00"),
    ("c1", "a", "2026-01-05 12:00"),            # backtrack: strict progress stops here
    ("c1", "d", "2026-01-05 13:00"),
    ("c1", "help", "2026-01-05 14:00", "chat"), ("c1", "video", "2026-01-05 15:00"),
    ("c1", "e", "2026-01-05 16:00"), ("c1", "a", "2026-01-05 17:00"),
    ("c2", "a", "2026-01-05 10:00"),
    ("c2", "d", "2026-01-05 11:00"),            # skipped c: strict progress stops here
    ("c2", "c", "2026-01-05 12:00"),
]


def test_ordered_mode_on_the_strict_example():
    out = run(toy_map("ordered"), STRICT_ROWS)
    assert entries_of(out, "c1") == {"a": utc("2026-01-05 10:00"), "c": utc("2026-01-05 11:00"),
                                     "d": utc("2026-01-05 13:00"), "e": utc("2026-01-05 16:00")}
    assert deviations_of(out, "c1") == [
        ("backtrack", "a", "c", "a", utc("2026-01-05 12:00")),
        ("detour", "d", None, "help", utc("2026-01-05 14:00")),
        ("off_map", "d", None, "video", utc("2026-01-05 15:00")),
        ("backtrack", "a", "e", "a", utc("2026-01-05 17:00")),
    ]
    assert entries_of(out, "c2") == {"a": utc("2026-01-05 10:00"), "c": utc("2026-01-05 12:00")}
    assert journey_of(out, "c1")["status"] == "converted"


def test_strict_mode_stops_progress_at_the_first_skip_or_backtrack():
    out = run(toy_map("strict"), STRICT_ROWS)
    assert entries_of(out, "c1") == {"a": utc("2026-01-05 10:00"), "c": utc("2026-01-05 11:00")}
    assert deviations_of(out, "c1") == [  # detours and off-map events are still recorded, at the stopped stage
        ("backtrack", "a", "c", "a", utc("2026-01-05 12:00")),
        ("detour", "c", None, "help", utc("2026-01-05 14:00")),
        ("off_map", "c", None, "video", utc("2026-01-05 15:00")),
    ]
    assert (journey_of(out, "c1")["current_stage"], journey_of(out, "c1")["status"]) == ("c", "stalled")
    assert entries_of(out, "c2") == {"a": utc("2026-01-05 10:00")}
    assert deviations_of(out, "c2") == [("skipped_stage", "c", "a", "d", utc("2026-01-05 11:00"))]
    assert stages_of(out, "c1")[1] == ("c", utc("2026-01-05 11:00"), None, 5 * 86400.0 + 13 * 3600.0, True, True)


def test_unordered_mode_takes_each_stages_first_event_after_the_start():
    out = run(toy_map("unordered"), [
        ("c1", "c", "2026-01-05 09:00"),  # before the start (a is the entry stage): ignored
        ("c1", "a", "2026-01-05 10:00"), ("c1", "e", "2026-01-05 11:00"), ("c1", "c", "2026-01-05 12:00"),
        ("c1", "b", "2026-01-05 13:00"), ("c1", "help", "2026-01-05 14:00", "chat"),
    ])
    assert stages_of(out, "c1") == [
        ("a", utc("2026-01-05 10:00"), utc("2026-01-05 11:00"), 3600.0, False, False),
        # entered after e, the last stage they reach: never left (the funnel: not gone on)
        ("b", utc("2026-01-05 13:00"), None, 5 * 86400.0 + 11 * 3600.0, False, False),
        ("c", utc("2026-01-05 12:00"), None, 5 * 86400.0 + 12 * 3600.0, False, False),
        ("e", utc("2026-01-05 11:00"), None, 5 * 86400.0 + 13 * 3600.0, True, False),
    ]
    assert deviations_of(out) == [("detour", "e", None, "help", utc("2026-01-05 14:00"))]  # no skips, no backtracks
    assert journey_of(out, "c1")["status"] == "converted"


def test_several_entry_stages_on_the_helpdesk_map():
    """Helpdesk: 'insert' (optional) and 'assign' (the first required stage) both open a journey."""
    journey = load_journey(BUILTIN_JOURNEYS["helpdesk"])
    steps = ["Insert ticket", "Assign seriousness", "Take in charge ticket", "Resolve ticket", "Closed"]
    rows = [("case1", step, f"2026-01-0{i + 1} 10:00", "ticket") for i, step in enumerate(steps)]
    rows += [("case2", "Assign seriousness", "2026-01-03 10:00", "ticket"),
             ("case2", "Wait", "2026-01-03 11:00", "ticket"),
             ("case2", "Take in charge ticket", "2026-01-04 10:00", "ticket"),
             ("case3", "Take in charge ticket", "2026-01-03 10:00", "ticket"),  # no entry stage: no journey
             ("case4", "Assign seriousness", "2026-01-03 10:00", "ticket"),
             ("case4", "Insert ticket", "2026-01-03 11:00", "ticket"),          # after a later stage: out of order
             ("case4", "INVALID", "2026-01-04 09:00", "ticket")]
    out = run(journey, rows)
    assert out.journeys["customer_id"].to_pylist() == ["case1", "case2", "case4"]
    assert list(entries_of(out, "case1")) == ["insert", "assign", "take_in_charge", "resolve", "closed"]
    assert journey_of(out, "case1")["started_at"] == utc("2026-01-01 10:00")
    assert entries_of(out, "case2") == {"assign": utc("2026-01-03 10:00"), "take_in_charge": utc("2026-01-04 10:00")}
    assert entries_of(out, "case4") == {"assign": utc("2026-01-03 10:00")}
    assert [(j["customer_id"], j["status"], j["current_stage"], j["exit_event"]) for j in out.journeys.to_pylist()] == [
        ("case1", "converted", "closed", None), ("case2", "in_progress", "take_in_charge", None),
        ("case4", "dropped", "assign", "INVALID")]
    assert deviations_of(out) == [("detour", "assign", None, "Wait", utc("2026-01-03 11:00")),
                                  ("out_of_order", "insert", "assign", "Insert ticket", utc("2026-01-03 11:00"))]


# --- statuses -----------------------------------------------------------------------------------
STATUS_CASES = {
    # customer: (events, expected status, current stage)
    "sla_exact": ([("a", "2026-01-10 00:00")], "in_progress", "a"),              # exactly 1 d in a: not stalled
    "sla_over": ([("a", "2026-01-09 23:59:59.999999")], "stalled", "a"),
    "no_limit": ([("a", "2026-01-05 10:00"), ("c", "2026-01-05 11:00"), ("d", "2026-01-05 12:00")], "in_progress", "d"),
    "window_exact": ([("a", "2026-01-01 00:00")], "stalled", "a"),                # exactly 10 d since the start: not dropped
    "window_over": ([("a", "2025-12-31 23:59:59.999999")], "dropped", "a"),
    "convert_exact": ([("a", "2025-12-31 12:00"), ("c", "2026-01-01 12:00"), ("d", "2026-01-02 12:00"),
                       ("e", "2026-01-10 12:00")], "converted", "e"),              # final stage exactly 10 d after the start
    "convert_late": ([("a", "2025-12-31 12:00"), ("c", "2026-01-01 12:00"), ("d", "2026-01-02 12:00"),
                      ("e", "2026-01-10 12:00:00.000001")], "dropped", "e"),
    "exit": ([("a", "2026-01-10 10:00"), ("cancel", "2026-01-10 11:00"), ("cancel", "2026-01-10 12:00")], "dropped", "a"),
    "exit_after_converting": ([("a", "2026-01-05 10:00"), ("c", "2026-01-05 11:00"), ("d", "2026-01-05 12:00"),
                               ("e", "2026-01-06 10:00"), ("cancel", "2026-01-07 10:00")], "converted", "e"),
    "exit_before_start": ([("cancel", "2026-01-04 10:00"), ("a", "2026-01-10 12:00")], "in_progress", "a"),
    "after_as_of": ([("a", "2026-01-10 10:00"), ("c", "2026-01-11 00:00"), ("cancel", "2026-01-12 00:00")],
                    "in_progress", "a"),                                           # events from the next day on do not count
    "no_journey": ([("c", "2026-01-05 10:00"), ("e", "2026-01-06 10:00")], None, None),
}


def test_each_status_with_strict_bounds():
    out = run(toy_map(), [(customer, event, ts) for customer, (events, *_) in STATUS_CASES.items() for event, ts in events])
    got = {j["customer_id"]: (j["status"], j["current_stage"]) for j in out.journeys.to_pylist()}
    assert got == {c: (status, stage) for c, (_, status, stage) in STATUS_CASES.items() if status}
    by_customer = {j["customer_id"]: j for j in out.journeys.to_pylist()}
    assert [(by_customer["exit"][k]) for k in ("exit_at", "exit_event", "converted_at")] == [
        utc("2026-01-10 11:00"), "cancel", None]
    # conversion is final: the later exit is recorded, the status stays converted
    assert [by_customer["exit_after_converting"][k] for k in ("converted_at", "exit_at")] == [
        utc("2026-01-06 10:00"), utc("2026-01-07 10:00")]
    assert by_customer["convert_exact"]["converted_at"] == utc("2026-01-10 12:00")
    assert by_customer["exit_before_start"]["exit_at"] is None
    assert [by_customer["after_as_of"][k] for k in ("n_events", "last_event_at")] == [1, utc("2026-01-10 10:00")]
    assert [r["customer_id"] for r in out.journey_stages.to_pylist() if r["stalled"]] == ["sla_over", "window_exact"]


def test_last_event_ties_are_broken_by_event_id():
    out = run(toy_map(), [("c1", "a", "2026-01-05 10:00"), ("c1", "help", "2026-01-05 11:00", "chat"),
                          ("c1", "login", "2026-01-05 11:00", "web")])  # e001 (chat) < e002 (web): web is last
    assert journey_of(out, "c1")["last_channel"] == "web"


# --- deviations and feedback ------------------------------------------------------------------
def test_detours_off_map_and_feedback_belong_to_the_current_stage():
    out = run(toy_map(), [
        ("c1", "help", "2026-01-05 09:00", "chat"),       # before the start: no deviation
        ("c1", "nps", "2026-01-05 09:30", "survey", 3),   # before the start: no feedback
        ("c1", "a", "2026-01-05 10:00"),
        ("c1", "help", "2026-01-05 10:30", "chat"),
        ("c1", "c", "2026-01-05 11:00"),
        ("c1", "video", "2026-01-05 11:30"),
        ("c1", "login", "2026-01-05 11:40"),              # ignored: nothing
        ("c1", "nps", "2026-01-05 12:00", "survey", 7),
        ("c1", "help", "2026-01-05 12:00", "email"),      # not the support touchpoint's channel: off-map
        ("c1", "cancel", "2026-01-05 13:00"),             # an exit is no deviation
        ("c1", "video", "2026-01-05 14:00"),              # after the exit: still recorded
    ])
    assert deviations_of(out) == [
        ("detour", "a", None, "help", utc("2026-01-05 10:30")),
        ("off_map", "c", None, "video", utc("2026-01-05 11:30")),
        ("off_map", "c", None, "help", utc("2026-01-05 12:00")),
        ("off_map", "c", None, "video", utc("2026-01-05 14:00")),
    ]
    assert out.deviations["event_id"].to_pylist() == ["e003", "e005", "e008", "e010"]
    assert out.feedback.to_pylist() == [
        {"journey_id": "toy", "as_of_date": AS_OF, "customer_id": "c1", "event_id": "e007", "channel": "survey",
         "event_type": "nps", "ts": utc("2026-01-05 12:00"), "score": 7, "stage": "c"}]


def test_no_events_give_empty_tables():
    out = run(toy_map(), [])
    assert out.journeys.num_rows == out.journey_stages.num_rows == out.deviations.num_rows == out.feedback.num_rows == 0


# --- against the generator's ground truth -----------------------------------------------------
GROUND_TRUTH_CONFIG = GenerateConfig(customers=3000, days=20, seed=5, fault_rate=0.0)

STITCH_SQL = """
WITH web_users AS (  -- an anonymous id that ever co-occurs with a user id belongs to that user
    SELECT anonymous_id, min(user_id) AS user_id FROM events
    WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL GROUP BY anonymous_id)
SELECT e.* REPLACE (coalesce(e.user_id, w.user_id, by_email.customer_id, by_phone.customer_id,
                             'anonymous_id:' || e.anonymous_id, 'email:' || e.email, 'phone:' || e.phone) AS customer_id)
FROM events e
LEFT JOIN web_users w ON e.anonymous_id = w.anonymous_id
LEFT JOIN crm by_email ON e.email = by_email.email
LEFT JOIN crm by_phone ON e.phone = by_phone.phone
"""
"""A simple stitching for the test (the pipeline's own is transforms.identity)."""


@pytest.fixture(scope="module")
def ground_truth_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("journeys_sample")
    generate(out, GROUND_TRUTH_CONFIG, progress=lambda _: None)
    crm = read_identity_table(load_sources(("crm",))["crm"], out / "crm" / "customers.csv")
    with duckdb.connect() as con:
        con.register("events", read_sample(out))
        con.register("crm", crm)
        events = con.sql(STITCH_SQL).to_arrow_table()
    journey = load_journey(BUILTIN_JOURNEYS["subscription"])
    matched = with_matches(events, journey)
    as_of = GROUND_TRUTH_CONFIG.start + timedelta(days=GROUND_TRUTH_CONFIG.days - 1)
    result = build_journeys(matched, journey, as_of, crm.select(["customer_id", "segment"]))
    return out, journey, matched, result


def truth(out: Path, name: str) -> pa.Table:
    return pq.read_table(out / "ground_truth" / f"{name}.parquet")


def compare(sql: str, **tables: pa.Table) -> list[tuple]:
    with duckdb.connect() as con:
        for name, table in tables.items():
            con.register(name, table)
        return con.execute(sql).fetchall()


def test_stage_entries_statuses_and_counts_equal_the_ground_truth(ground_truth_run):
    out, journey, _, result = ground_truth_run
    customers = truth(out, "customers")
    for stage in journey.stage_ids:
        [(rows, wrong_time, wrong_channel, entered)] = compare(f"""
            SELECT count(*), count(*) FILTER (t.entered_{stage} IS DISTINCT FROM s.entered_at),
                   count(*) FILTER (t.entry_channel_{stage} IS DISTINCT FROM s.entry_channel), count(s.entered_at)
            FROM truth t FULL JOIN (SELECT * FROM stages WHERE stage = '{stage}') s ON t.customer_key = s.customer_id""",
            truth=customers, stages=result.journey_stages)
        assert (rows, wrong_time, wrong_channel) == (GROUND_TRUTH_CONFIG.customers, 0, 0), stage
        assert entered > 0, stage
    [(rows, wrong_status, wrong_stage, wrong_count, wrong_segment)] = compare("""
        SELECT count(*), count(*) FILTER (t.status IS DISTINCT FROM j.status),
               count(*) FILTER (t.furthest_stage IS DISTINCT FROM j.current_stage),
               count(*) FILTER (t.n_events IS DISTINCT FROM j.n_events),
               count(*) FILTER (t.segment IS DISTINCT FROM j.segment)
        FROM truth t FULL JOIN journeys j ON t.customer_key = j.customer_id""", truth=customers, journeys=result.journeys)
    assert (rows, wrong_status, wrong_stage, wrong_count, wrong_segment) == (GROUND_TRUTH_CONFIG.customers, 0, 0, 0, 0)
    assert set(result.journeys["status"].to_pylist()) == {"converted", "dropped", "stalled", "in_progress"}


def test_statuses_as_of_every_day_equal_the_ground_truth_history(ground_truth_run):
    out, journey, matched, _ = ground_truth_run
    history = truth(out, "status_history")
    for d in range(GROUND_TRUTH_CONFIG.days):
        day = GROUND_TRUTH_CONFIG.start + timedelta(days=d)
        journeys = build_journeys(matched, journey, day, None).journeys
        [(rows, wrong)] = compare(f"""
            SELECT count(*), count(*) FILTER (h.status IS DISTINCT FROM j.status OR h.stage IS DISTINCT FROM j.current_stage)
            FROM (SELECT * FROM history WHERE DATE '{day}' BETWEEN valid_from AND valid_to) h
            FULL JOIN journeys j ON h.customer_key = j.customer_id""", history=history, journeys=journeys)
        assert wrong == 0 and rows == journeys.num_rows, day


def test_deviations_equal_the_ground_truth(ground_truth_run):
    out, _, _, result = ground_truth_run
    multiset = "SELECT {key} AS customer, kind, stage, count(*) AS n FROM {table} GROUP BY ALL"
    rows = compare(f"""
        SELECT coalesce(t.kind, d.kind), count(*) FILTER (t.n IS DISTINCT FROM d.n), sum(t.n)
        FROM ({multiset.format(key='customer_key', table='truth')}) t
        FULL JOIN ({multiset.format(key='customer_id', table='deviations')}) d USING (customer, kind, stage)
        GROUP BY ALL ORDER BY 1""", truth=truth(out, "deviations"), deviations=result.deviations)
    assert [(kind, wrong) for kind, wrong, _ in rows] == [(k, 0) for k in ("backtrack", "detour", "off_map", "skipped_stage")]
    assert all(n > 0 for *_, n in rows)


def test_feedback_stages_equal_the_ground_truth(ground_truth_run):
    out, _, _, result = ground_truth_run
    [(rows, unmatched_truth, unmatched_ours, wrong_stage)] = compare("""
        SELECT count(*), count(*) FILTER (f.customer_id IS NULL), count(*) FILTER (t.customer_key IS NULL),
               count(*) FILTER (t.stage IS DISTINCT FROM f.stage)
        FROM truth t FULL JOIN feedback f
          ON t.customer_key = f.customer_id AND t.ts = f.ts AND t.channel = f.channel AND t.score = f.score""",
        truth=truth(out, "feedback"), feedback=result.feedback)
    assert rows > 100 and (unmatched_truth, unmatched_ours, wrong_stage) == (0, 0, 0)


def test_sessions_equal_the_ground_truth(ground_truth_run):
    out, journey, matched, _ = ground_truth_run
    _, sessions = sessionize(matched, journey.session_gap, journey.id)
    [(rows, unmatched_truth, unmatched_ours, wrong)] = compare("""
        SELECT count(*), count(*) FILTER (s.customer_id IS NULL), count(*) FILTER (t.customer_key IS NULL),
               count(*) FILTER (t.session_end IS DISTINCT FROM s.session_end OR t.n_events IS DISTINCT FROM s.n_events)
        FROM truth t FULL JOIN sessions s ON t.customer_key = s.customer_id AND t.session_start = s.session_start""",
        truth=truth(out, "sessions"), sessions=sessions)
    assert rows > GROUND_TRUTH_CONFIG.customers and (unmatched_truth, unmatched_ours, wrong) == (0, 0, 0)
