"""The journey-map loader: the shipped maps load, and every broken map fails with
file, line, key path and what was expected."""
from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from journey_defs.config_yaml import ConfigError
from journey_defs.loader import BUILTIN_JOURNEYS, load_journey, resolve_journey
from journey_defs.model import AlertPolicy, Predicate

# A small valid map; the error cases below replace whole lines of it by number.
BASE = """\
journey: demo
version: "1"
ordering: ordered
conversion_window: 30d
sources: [web, email]
stages:
  - id: visit
    optional: false
    touchpoints:
      - {channel: web, event: page_view}
  - id: buy
    max_time_in_stage: 2d
    touchpoints:
      - channel: web
        event: checkout
        where: {plan: {equals: basic}}
alerts:
  recent_window: 7d
  baseline_window: 28d
  significance: 0.01
"""


def write_map(tmp_path, lines: dict[int, str] | None = None, text: str = BASE):
    """BASE (or `text`) with the given 1-based lines replaced, written to a file."""
    rows = text.splitlines()
    for number, replacement in (lines or {}).items():
        rows[number - 1] = replacement
    path = tmp_path / "broken_map.yaml"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def assert_config_error(path, line: int, key: str, expected: str, **kwargs) -> None:
    with pytest.raises(ConfigError) as info:
        load_journey(path, **kwargs)
    error, message = info.value, str(info.value)
    assert (error.file, error.line, error.path) == (str(path), line, key), message
    assert message.startswith(f"{path}:{line}: "), message
    assert expected in message, message


# --- the shipped maps -------------------------------------------------------------
def test_subscription_map_loads():
    journey = load_journey(BUILTIN_JOURNEYS["subscription"])
    assert journey.id == "subscription"
    assert journey.version == "1.0"
    assert journey.stage_ids == (
        "discover", "sign_up", "verify", "first_purchase", "onboarding", "repeat_purchase"
    )
    assert journey.ordering == "ordered"
    assert journey.conversion_window == timedelta(days=30)
    assert journey.session_gap == timedelta(minutes=30)
    assert journey.segment_field == "segment"
    assert journey.sources == ("web", "email", "chat", "phone", "survey", "crm")
    assert journey.entry_stage_ids == ("discover",)
    assert journey.final_stage_id == "repeat_purchase"
    assert journey.stage("onboarding").optional
    assert journey.stage("verify").max_time_in_stage == timedelta(days=2)
    assert journey.stage("repeat_purchase").max_time_in_stage is None
    assert journey.stage("discover").touchpoints[0].where == (
        Predicate("page", "in", ("/", "/pricing", "/features", "/how-it-works")),
    )
    assert journey.stage("onboarding").touchpoints[0].where[0].op == "regex"
    sign_up_call = journey.stage("sign_up").touchpoints[1]
    assert (sign_up_call.channel, sign_up_call.event_type) == ("phone", "call")
    assert [p.attribute for p in sign_up_call.where] == ["queue", "disposition"]  # file order
    assert (len(journey.exits), len(journey.support), len(journey.ignore)) == (2, 2, 10)
    assert journey.alerts == AlertPolicy(timedelta(days=7), timedelta(days=28), 0.25, 0.001, 100)
    assert journey.source_file == str(BUILTIN_JOURNEYS["subscription"])
    assert journey.description.startswith("Discover the product")


def test_helpdesk_map_loads():
    journey = load_journey(BUILTIN_JOURNEYS["helpdesk"], known_sources=["helpdesk", "web"])
    assert journey.stage_ids == ("insert", "assign", "take_in_charge", "resolve", "closed")
    assert journey.entry_stage_ids == ("insert", "assign")
    assert journey.conversion_window == timedelta(days=60)
    assert journey.session_gap == timedelta(hours=8)
    assert journey.segment_field is None
    assert journey.stage("insert").touchpoints[0].event_type == "Insert ticket"
    assert (len(journey.exits), len(journey.support), len(journey.ignore)) == (2, 5, 0)
    assert journey.alerts.recent_window == timedelta(days=30)
    assert journey.alerts.baseline_window == timedelta(days=90)
    assert journey.alerts.min_relative_rise == 0.5
    assert journey.alerts.min_sample == 50


def test_defaults_for_omitted_keys(tmp_path):
    journey = load_journey(write_map(tmp_path, {17: "", 18: "", 19: "", 20: ""}))
    assert journey.name == "demo"
    assert journey.stage("buy").name == "buy"
    assert journey.session_gap == timedelta(minutes=30)
    assert (journey.exits, journey.support, journey.ignore) == ((), (), ())
    assert journey.alerts == AlertPolicy()


def test_scalars_keep_their_written_text(tmp_path):
    """`1.10`, `007` and `no` would become 1.1, 7 and False through YAML typing."""
    path = write_map(tmp_path, {2: "version: 1.10", 16: "        where: {plan: {in: [007, 42, no]}}"})
    journey = load_journey(path)
    assert journey.version == "1.10"
    assert journey.stage("buy").touchpoints[0].where == (Predicate("plan", "in", ("007", "42", "no")),)


def test_entry_flag_adds_an_entry_stage(tmp_path):
    journey = load_journey(write_map(tmp_path, {12: "    entry: true"}))
    assert journey.entry_stage_ids == ("visit", "buy")


def test_model_is_immutable():
    journey = load_journey(BUILTIN_JOURNEYS["helpdesk"])
    for obj, attribute in [
        (journey, "id"),
        (journey.stages[0], "optional"),
        (journey.stages[0].touchpoints[0], "channel"),
        (journey.alerts, "min_sample"),
    ]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, attribute, None)


# --- resolving a name ---------------------------------------------------------------
def test_resolve_builtin_name_and_existing_path(tmp_path):
    assert resolve_journey("helpdesk") == BUILTIN_JOURNEYS["helpdesk"]
    assert resolve_journey("helpdesk").name == "helpdesk.yaml"
    assert {"subscription", "helpdesk"} <= set(BUILTIN_JOURNEYS)
    path = write_map(tmp_path)
    assert resolve_journey(str(path)) == path


def test_resolve_unknown_name_is_a_clear_error():
    with pytest.raises(ConfigError) as info:
        resolve_journey("no-such-map")
    assert str(info.value).startswith("no-such-map: no such journey; expected a built-in name (")
    assert "helpdesk" in str(info.value) and "subscription" in str(info.value)


# --- broken maps: one case per error class -----------------------------------------
TP = "stages[1].touchpoints[0]"

ERROR_CASES = {  # case id: (replaced lines, error line, key path, expected text)
    "invalid_yaml": (
        {3: "ordering: ordered: x"}, 3, "", "invalid YAML: mapping values are not allowed here"),
    "unknown_top_level_key": (
        {3: "oredring: ordered"}, 3, "oredring", "unknown key 'oredring'; did you mean 'ordering'?"),
    "bad_journey_id": (
        {1: "journey: Demo-Map"}, 1, "journey", "bad id 'Demo-Map'; expected lowercase letters"),
    "bad_ordering_mode": (
        {3: "ordering: sorted"}, 3, "ordering",
        "'sorted' is not valid; expected one of ordered, strict, unordered"),
    "duration_in_words": (
        {4: "conversion_window: 7 days"}, 4, "conversion_window",
        "bad duration '7 days'; expected a positive number and unit"),
    "duration_negative": (
        {12: "    max_time_in_stage: -3d"}, 12, "stages[1].max_time_in_stage", "bad duration '-3d'"),
    "empty_sources": (
        {5: "sources: []"}, 5, "sources", "expected a non-empty list of source names"),
    "empty_stages": (
        {6: "stages: []", **{n: "" for n in range(7, 17)}}, 6, "stages", "expected a non-empty list of stages"),
    "unknown_stage_key": (
        {12: "    max_time_in_stag: 2d"}, 12, "stages[1].max_time_in_stag", "did you mean 'max_time_in_stage'?"),
    "stage_without_id": (
        {11: "  - name: buy"}, 11, "stages[1]", "missing required key 'id'"),
    "wrong_type_boolean": (
        {8: "    optional: maybe"}, 8, "stages[0].optional", "expected true or false, got 'maybe'"),
    "duplicate_stage_id": (
        {11: "  - id: visit"}, 11, "stages[1].id", "duplicate stage id 'visit' (first at line 7)"),
    "stage_without_touchpoints": (
        {9: "    touchpoints: []", 10: ""}, 9, "stages[0].touchpoints", "stage 'visit' has no touchpoints"),
    "unknown_channel": (
        {10: "      - {channel: fax, event: page_view}"}, 10, "stages[0].touchpoints[0].channel",
        "'fax' is not valid; expected one of web, app, email, sms, chat, phone, survey, ticket, store"),
    "touchpoint_without_event": (
        {15: ""}, 14, TP, "missing required key 'event'"),
    "regex_does_not_compile": (
        {16: '        where: {plan: {regex: "(a|b"}}'}, 16, f"{TP}.where.plan.regex",
        "bad regex '(a|b': missing ), unterminated subpattern at position 0"),
    "unknown_predicate_op": (
        {16: "        where: {plan: {startswith: b}}"}, 16, f"{TP}.where.plan.startswith",
        "unknown key 'startswith'"),
    "two_ops_for_one_attribute": (
        {16: "        where: {plan: {equals: a, prefix: b}}"}, 16, f"{TP}.where.plan",
        "expected exactly one of equals, in, prefix, regex, got 2"),
    "in_with_empty_list": (
        {16: "        where: {plan: {in: []}}"}, 16, f"{TP}.where.plan.in", "expected a non-empty list of values"),
    "in_with_text": (
        {16: "        where: {plan: {in: basic}}"}, 16, f"{TP}.where.plan.in", "expected a list, got 'basic'"),
    "touchpoint_mapped_twice": (
        {10: "      - {channel: web, event: checkout, where: {plan: {equals: basic}}}"}, 14, TP,
        "touchpoint already mapped to stage 'visit'"),
    "all_stages_optional": (
        {8: "    optional: true", 12: "    optional: true"}, 7, "stages", "all stages are optional"),
    "final_stage_optional": (
        {12: "    optional: true"}, 12, "stages[1].optional", "final stage 'buy' is optional"),
    "unknown_alert_key": (
        {20: "  significanse: 0.01"}, 20, "alerts.significanse", "did you mean 'significance'?"),
    "significance_above_one": (
        {20: "  significance: 1.5"}, 20, "alerts.significance",
        "expected a number between 0 and 1 (exclusive), got 1.5"),
    "significance_zero": (
        {20: "  significance: 0"}, 20, "alerts.significance", "between 0 and 1 (exclusive), got 0"),
    "min_relative_rise_zero": (
        {20: "  min_relative_rise: 0"}, 20, "alerts.min_relative_rise", "expected a number > 0"),
    "min_sample_zero": (
        {20: "  min_sample: 0"}, 20, "alerts.min_sample", "expected a number >= 1, got 0"),
    "baseline_shorter_than_recent": (
        {19: "  baseline_window: 3d"}, 19, "alerts.baseline_window",
        "baseline_window must be longer than recent_window"),
    "baseline_equal_to_recent": (
        {19: "  baseline_window: 7d"}, 19, "alerts.baseline_window", "baseline_window must be longer"),
}


@pytest.mark.parametrize(("lines", "line", "key", "expected"), ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_broken_map_names_file_line_key_and_expectation(tmp_path, lines, line, key, expected):
    assert_config_error(write_map(tmp_path, lines), line, key, expected)


def test_base_map_is_valid(tmp_path):
    """The error cases above only fail because of the lines they replace."""
    assert load_journey(write_map(tmp_path)).stage_ids == ("visit", "buy")


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"], ids=["empty", "blank", "comment"])
def test_empty_file(tmp_path, text):
    path = tmp_path / "empty_map.yaml"
    path.write_text(text, encoding="utf-8")
    assert_config_error(path, 1, "", "file is empty")


def test_file_without_stages(tmp_path):
    path = write_map(tmp_path, text="journey: demo\nversion: 1\nsources: [web]\n")
    assert_config_error(path, 1, "", "missing required key 'stages'")


def test_unknown_source_lists_the_known_ones(tmp_path):
    assert_config_error(
        write_map(tmp_path), 5, "sources[1]", "unknown source 'email'; expected one of chat, web",
        known_sources={"web", "chat"},
    )
