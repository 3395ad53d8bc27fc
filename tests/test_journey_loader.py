"""The journey-map loader: the shipped maps load, and every broken map fails with
file, line, key path and what was expected. Regexes and JSON attribute names are judged by
the DuckDB the run uses (both ways: what loads, transforms.match runs; what is rejected, it
cannot), and check_definitions loads everything a run loads, plus every spec of a --sources-dir."""
from __future__ import annotations

import dataclasses
import textwrap
from datetime import timedelta

import duckdb
import pytest

from journey_defs.config_yaml import ConfigError
from journey_defs.loader import BUILTIN_JOURNEYS, check_definitions, load_journey, resolve_journey
from journey_defs.model import AlertPolicy, JourneyMap, Predicate, Stage, Touchpoint
from tests.helpers import canonical_events
from transforms.match import match_touchpoints

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
        "'(a|b' is not a pattern DuckDB's RE2 accepts (missing ): (a|b)"),
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
    "alert_window_not_whole_days": (
        {18: "  recent_window: 36h"}, 18, "alerts.recent_window",
        "alert windows count whole nights; expected whole days like 7d or 2w, got '36h'"),
    "duration_too_long": (
        {4: "conversion_window: 36526d"}, 4, "conversion_window",
        "bad duration '36526d'; expected at most 36525d (100 years)"),
    "duration_beyond_timedelta": (  # was an OverflowError, not a ConfigError
        {12: "    max_time_in_stage: 99999999999w"}, 12, "stages[1].max_time_in_stage",
        "bad duration '99999999999w'; expected at most 36525d"),
    "duration_rounds_to_zero": (
        {4: "conversion_window: 0.0000001s"}, 4, "conversion_window",
        "bad duration '0.0000001s'; it rounds to 0, expected at least 1 microsecond"),
    "lone_surrogate_in_event": (
        {15: '        event: "check\\ud800out"'}, 15, f"{TP}.event",
        "'check\\ud800out' holds a lone surrogate (\\ud800); expected text that is valid Unicode"),
    "lone_surrogate_in_attribute_name": (
        {16: '        where: {"pl\\udfffan": {equals: basic}}'}, 16, f"{TP}.where.pl\udfffan",
        "holds a lone surrogate (\\udfff)"),
    "attribute_empty_name": (
        {16: "        where: {'': {equals: basic}}"}, 16, f"{TP}.where.",
        "attribute '' cannot be read from the attributes JSON (JSON path error near '.\"\"')"),
    "attribute_json_wildcard": (
        {16: "        where: {'*': {equals: basic}}"}, 16, f"{TP}.where.*",
        "attribute '*' cannot be read from the attributes JSON (DuckDB reads '*' as a JSON wildcard, not a key)"),
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


# --- regexes: RE2 (DuckDB's regexp_matches) decides, not Python's re ----------------
RE2_REJECTS = {  # case id: (pattern, DuckDB's reason); Python's re takes every one of them
    "look_ahead": ("x(?=y)", "invalid perl operator: (?="),
    "negative_look_ahead": ("x(?!y)", "invalid perl operator: (?!"),
    "look_behind": ("(?<=x)y", "invalid perl operator: (?<"),
    "negative_look_behind": ("(?<!x)y", "invalid perl operator: (?<"),
    "backreference": (r"(a)\1", r"invalid escape sequence: \1"),
    "named_backreference": ("(?P<p>a)(?P=p)", "invalid perl operator: (?P"),
    "atomic_group": ("(?>ab|a)c", "invalid perl operator: (?>"),
    "possessive_plus": ("a++", "bad repetition operator: ++"),
    "possessive_star": ("a*+b", "bad repetition operator: *+"),
    "end_before_newline": (r"x\Z", r"invalid escape sequence: \Z"),
    "verbose_flag": ("(?x) a b", "invalid perl operator: (?x"),
    "repeat_over_1000": ("a{1001}", "invalid repetition size: {1001}"),
}


def regex_map(tmp_path, pattern: str):
    """BASE with line 16's predicate a regex (single-quoted YAML: backslashes stay as written)."""
    return write_map(tmp_path, {16: f"        where: {{page: {{regex: '{pattern}'}}}}"})


@pytest.mark.parametrize(("pattern", "reason"), RE2_REJECTS.values(), ids=RE2_REJECTS.keys())
def test_regex_that_re2_rejects_fails_at_load(tmp_path, pattern, reason):
    assert_config_error(
        regex_map(tmp_path, pattern), 16, f"{TP}.where.page.regex",
        f"'{pattern}' is not a pattern DuckDB's RE2 accepts ({reason}); RE2 has no look-around, "
        "backreferences, atomic groups or possessive quantifiers")


def test_regex_error_message_in_full(tmp_path):
    path = regex_map(tmp_path, "x(?=y)")
    with pytest.raises(ConfigError) as info:
        load_journey(path)
    assert str(info.value) == (
        f"{path}:16: {TP}.where.page.regex: 'x(?=y)' is not a pattern DuckDB's RE2 accepts "
        "(invalid perl operator: (?=); RE2 has no look-around, backreferences, atomic groups or "
        "possessive quantifiers (https://github.com/google/re2/wiki/Syntax)")


RE2_ACCEPTS = [
    "^/pricing$", r"^/item/[0-9]+$", "[a-z]+", "pro|team", "(?i)^/PRICING", "(?s)a.b", "(?m)^a$",
    "(?i:pro)-plan", r"\d{2,3}", r"\bwelcome\b", "[[:alpha:]]+", "(?P<plan>pro)", "a{1000}", "a+?",
    r"\pL+", "(?U)a+",  # RE2 only: Python's re rejects these two, the run takes them
]


@pytest.mark.parametrize("pattern", RE2_ACCEPTS)
def test_regex_that_re2_accepts_loads(tmp_path, pattern):
    journey = load_journey(regex_map(tmp_path, pattern))
    assert journey.stage("buy").touchpoints[0].where == (Predicate("page", "regex", pattern),)


# --- check_definitions: everything a run loads ----------------------------------------
SPEC = """\
source: shop
format: jsonl
path: "shop/{date}/*.jsonl"
channel: store
timestamp: {field: at}
event_type: {field: kind}
identity: {user_id: customer}
"""


def spec_dir(tmp_path, files: dict[str, str]):
    folder = tmp_path / "specs"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def test_check_definitions_accepts_the_builtin_journeys():
    journeys = check_definitions(sorted(BUILTIN_JOURNEYS), [])
    assert [j.id for j in journeys] == sorted(BUILTIN_JOURNEYS) == ["bpic2013_incidents", "helpdesk", "subscription"]


def test_check_definitions_accepts_a_map_file_and_a_good_spec_dir(tmp_path):
    folder = spec_dir(tmp_path, {"shop.yaml": SPEC})
    path = write_map(tmp_path, {5: "sources: [web, shop]"})
    [journey] = check_definitions([str(path)], [folder])
    assert journey.sources == ("web", "shop")


def test_check_definitions_rejects_an_unnamed_spec_with_an_unknown_key(tmp_path):
    """No journey names `shop`: a run would not load it, so only check can catch it."""
    folder = spec_dir(tmp_path, {"shop.yaml": SPEC.replace("timestamp:", "timestmap:")})
    with pytest.raises(ConfigError) as info:
        check_definitions(["subscription"], [folder])
    error = info.value
    assert (error.file, error.line, error.path) == (str(folder / "shop.yaml"), 5, "timestmap")
    assert error.message == "unknown key 'timestmap'; did you mean 'timestamp'?"


def test_check_definitions_rejects_a_spec_with_bad_yaml(tmp_path):
    folder = spec_dir(tmp_path, {"good.yml": SPEC.replace("shop", "good"), "shop.yaml": SPEC + "fields: {score: [\n"})
    with pytest.raises(ConfigError) as info:
        check_definitions(["helpdesk"], [folder])
    assert info.value.file == str(folder / "shop.yaml")
    assert info.value.message.startswith("invalid YAML: ")


def test_check_definitions_rejects_a_spec_named_after_another_source(tmp_path):
    folder = spec_dir(tmp_path, {"till.yaml": SPEC})
    with pytest.raises(ConfigError, match="source name 'shop' must match the file name 'till'"):
        check_definitions(["helpdesk"], [folder])


def test_check_definitions_rejects_a_broken_spec_a_journey_names(tmp_path):
    """A built-in overridden by a broken user spec fails as the run would."""
    folder = spec_dir(tmp_path, {"web.yaml": SPEC.replace("shop", "web").replace("store", "fax")})
    with pytest.raises(ConfigError) as info:
        check_definitions(["subscription"], [folder])
    assert (info.value.file, info.value.path) == (str(folder / "web.yaml"), "channel")


def test_check_definitions_rejects_unknown_sources_and_missing_dirs(tmp_path):
    path = write_map(tmp_path, {5: "sources: [web, till]"})
    with pytest.raises(ConfigError) as info:
        check_definitions([str(path)], [spec_dir(tmp_path, {"shop.yaml": SPEC})])
    assert (info.value.line, info.value.path) == (5, "sources[1]")
    assert info.value.message.startswith("unknown source 'till'; expected one of bpic2013_incidents, chat, crm, email, helpdesk, ")
    with pytest.raises(ConfigError, match="source spec directory does not exist"):
        check_definitions(["helpdesk"], [tmp_path / "nowhere"])
    with pytest.raises(ConfigError, match="no such journey"):
        check_definitions(["no-such-map"], [])


# --- parity: what check accepts, the run's matcher compiles; what it rejects, it cannot --
ODD_ATTRIBUTES = ['a"b', "a\\b", "$", "a.b", "[0]", "x y"]  # keys of the attributes JSON, used as written


def parity_map(tmp_path, patterns: list[str]):
    """A map whose stage k matches page regex k, plus one stage per odd JSON attribute name."""
    stages = [f"  - id: s{k}\n    touchpoints:\n      - {{channel: web, event: view, where: {{page: {{regex: '{p}'}}}}}}"
              for k, p in enumerate(patterns)]
    stages += [f"  - id: j{k}\n    touchpoints:\n      - {{channel: web, event: click, where: {{'{a}': {{equals: 'v{k}'}}}}}}"
               for k, a in enumerate(ODD_ATTRIBUTES)]
    path = tmp_path / "parity.yaml"
    path.write_text('journey: parity\nversion: "1"\nordering: unordered\nsources: [web]\nstages:\n'
                    + "\n".join(stages) + "\n", encoding="utf-8")
    return path


def test_what_check_accepts_the_run_matches(tmp_path):
    patterns = ["^/item/[0-9]+$", "(?i)^/PRICING$", "^/(a|b)/", r"\pL+-\d", "[[:upper:]]{3}"]
    [journey] = check_definitions([str(parity_map(tmp_path, patterns))], [])
    pages = ["/item/42", "/Pricing", "/b/x", "é-7", "ABC"]  # page k matches pattern k first
    rows = [{"ts": "2026-01-05 10:00", "channel": "web", "event_type": "view", "page": p} for p in pages]
    rows += [{"ts": "2026-01-05 10:00", "channel": "web", "event_type": "click", "attributes": {a: f"v{k}"}}
             for k, a in enumerate(ODD_ATTRIBUTES)]
    rows += [{"ts": "2026-01-05 10:00", "channel": "web", "event_type": "view", "page": "/nothing"}]
    matched = match_touchpoints(canonical_events(rows), journey).to_pylist()
    assert [m["stage_index"] for m in matched] == list(range(len(patterns) + len(ODD_ATTRIBUTES))) + [-1]


@pytest.mark.parametrize("pattern", [p for p, _ in RE2_REJECTS.values()], ids=RE2_REJECTS.keys())
def test_what_check_rejects_the_run_cannot_match(pattern):
    """Not stricter than the run: each rejected regex also fails in transforms.match."""
    journey = JourneyMap(id="j", version="1", sources=("web",), stages=(
        Stage("s", "s", (Touchpoint("web", "view", (Predicate("page", "regex", pattern),)),)),))
    events = canonical_events([{"ts": "2026-01-05 10:00", "channel": "web", "event_type": "view", "page": "x"}])
    with pytest.raises(duckdb.Error):
        match_touchpoints(events, journey)


@pytest.mark.parametrize("attribute", ["", "*"])
def test_attribute_names_check_rejects_the_run_cannot_read(attribute):
    journey = JourneyMap(id="j", version="1", sources=("web",), stages=(
        Stage("s", "s", (Touchpoint("web", "view", (Predicate(attribute, "equals", "v"),)),)),))
    events = canonical_events([{"ts": "2026-01-05 10:00", "channel": "web", "event_type": "view",
                                "attributes": {"x": "v"}}])
    with pytest.raises(duckdb.Error):
        match_touchpoints(events, journey)
