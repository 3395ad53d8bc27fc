"""Touchpoint matching: every predicate operator, the role priority, attribute lookup in the
typed columns and the `attributes` JSON, and agreement with the scalar reference
(`JourneyMap.stage_of`, `Touchpoint.matches`) on a generated sample and the real Helpdesk log."""
from __future__ import annotations

import json
import re

import pyarrow as pa
import pytest

from generator.generate import GenerateConfig, generate
from journey_defs.canonical import CANONICAL_SCHEMA, TYPED_ATTRIBUTES
from journey_defs.loader import BUILTIN_JOURNEYS, load_journey
from journey_defs.model import JourneyMap, Predicate, Stage, Touchpoint
from journey_defs.source_spec import load_sources
from transforms.match import match_touchpoints, off_map_counts, with_matches
from tests.helpers import canonical_events, read_sample
from transforms.parse import parse_files, source_files


def tp(channel: str, event_type: str, **where) -> Touchpoint:
    return Touchpoint(channel, event_type, tuple(Predicate(a, op, v) for a, (op, v) in where.items()))


PREDICATE_MAP = JourneyMap(
    id="ops", version="1", sources=("web",),
    stages=(
        Stage("by_equals", "", (tp("web", "view", page=("equals", "/a")),)),
        Stage("by_in", "", (tp("web", "view", page=("in", ("/b", "/c"))),)),
        Stage("by_prefix", "", (tp("web", "view", page=("prefix", "/shop/")),)),
        Stage("by_regex", "", (tp("web", "view", page=("regex", r"^/item/[0-9]+$")),)),
        Stage("by_score", "", (tp("survey", "nps", score=("equals", "5")),)),
        Stage("by_json", "", (tp("web", "click", plan=("in", ("pro", "team")), seats=("equals", "5")),)),
    ),
)


@pytest.mark.parametrize("event, stage", [
    ({"channel": "web", "event_type": "view", "page": "/a"}, "by_equals"),
    ({"channel": "web", "event_type": "view", "page": "/ab"}, None),  # equals is exact
    ({"channel": "web", "event_type": "view", "page": "/c"}, "by_in"),
    ({"channel": "web", "event_type": "view", "page": "/shop/socks"}, "by_prefix"),
    ({"channel": "web", "event_type": "view", "page": "/shop"}, None),
    ({"channel": "web", "event_type": "view", "page": "/item/42"}, "by_regex"),
    ({"channel": "web", "event_type": "view", "page": "/item/42x"}, None),
    ({"channel": "web", "event_type": "view"}, None),  # missing attribute: no match
    ({"channel": "web", "event_type": "other", "page": "/a"}, None),  # event type must be equal
    ({"channel": "app", "event_type": "view", "page": "/a"}, None),  # channel must be equal
    ({"channel": "survey", "event_type": "nps", "score": 5}, "by_score"),  # numbers compare as text
    ({"channel": "survey", "event_type": "nps", "score": 50}, None),
    ({"channel": "web", "event_type": "click", "attributes": {"plan": "pro", "seats": 5}}, "by_json"),
    ({"channel": "web", "event_type": "click", "attributes": {"plan": "pro", "seats": "5"}}, "by_json"),
    ({"channel": "web", "event_type": "click", "attributes": {"plan": "pro"}}, None),  # every predicate must hold
    ({"channel": "web", "event_type": "click", "attributes": {"plan": "pro", "seats": None}}, None),
    ({"channel": "web", "event_type": "click", "attributes": {"plan": "free", "seats": 5}}, None),
])
def test_each_predicate_operator(event, stage):
    events = canonical_events([{"ts": "2026-01-05 10:00", **event}])
    matched = match_touchpoints(events, PREDICATE_MAP).to_pylist()
    expected_index = -1 if stage is None else PREDICATE_MAP.stage_ids.index(stage)
    assert matched == [{"stage_index": expected_index, "role": "stage" if stage else "off_map"}]


def test_role_priority_exit_stage_support_ignore_off_map():
    journey = JourneyMap(
        id="prio", version="1", sources=("web",),
        stages=(Stage("one", "", (tp("web", "a"),)), Stage("two", "", (tp("web", "b", page=("prefix", "/x")),))),
        exits=(tp("web", "b", page=("equals", "/x/quit")),),
        support=(tp("web", "b"), tp("web", "a")),
        ignore=(tp("web", "b"), tp("web", "c")),
    )
    events = canonical_events([
        {"ts": "2026-01-05 10:00", "channel": "web", "event_type": "b", "page": "/x/quit"},  # exit beats stage
        {"ts": "2026-01-05 10:01", "channel": "web", "event_type": "b", "page": "/x/1"},     # stage beats support
        {"ts": "2026-01-05 10:02", "channel": "web", "event_type": "a"},                     # stage beats support
        {"ts": "2026-01-05 10:03", "channel": "web", "event_type": "b", "page": "/y"},       # support beats ignore
        {"ts": "2026-01-05 10:04", "channel": "web", "event_type": "c"},
        {"ts": "2026-01-05 10:05", "channel": "web", "event_type": "d"},
        {"ts": "2026-01-05 10:06", "channel": "web", "event_type": "d"},
        {"ts": "2026-01-05 10:07", "channel": "email", "event_type": "a"},
    ])
    matched = with_matches(events, journey)
    assert matched["role"].to_pylist() == ["exit", "stage", "stage", "support", "ignore", "off_map", "off_map", "off_map"]
    assert matched["stage_index"].to_pylist() == [-1, 1, 0, -1, -1, -1, -1, -1]
    assert matched.schema.field("stage_index").type == pa.int32()
    assert off_map_counts(matched, journey).to_pylist() == [
        {"journey_id": "prio", "channel": "email", "event_type": "a", "n_events": 1},
        {"journey_id": "prio", "channel": "web", "event_type": "d", "n_events": 2},
    ]


def test_match_of_an_empty_table():
    journey = load_journey(BUILTIN_JOURNEYS["subscription"])
    assert match_touchpoints(CANONICAL_SCHEMA.empty_table(), journey).num_rows == 0


def test_the_maps_regexes_run_as_python_re_search():
    """The pipeline evaluates regexes with RE2; for the shipped maps it must agree with `re.search`."""
    predicates = [p for name in BUILTIN_JOURNEYS for t in _all_touchpoints(load_journey(BUILTIN_JOURNEYS[name]))
                  for p in t.where if p.op == "regex"]
    assert predicates
    probes = ["onboarding_1", "onboarding_123", "onboarding_", "onboarding_1x", "xonboarding_1", "Onboarding_1",
              "onboarding_١", "", "onboarding_1 ", "ONBOARDING_2"]
    for predicate in predicates:
        journey = JourneyMap(id="rx", version="1", sources=("email",),
                             stages=(Stage("s", "", (Touchpoint("email", "click", (predicate,)),)),))
        events = canonical_events([{"ts": "2026-01-05 10:00", "channel": "email", "event_type": "click",
                                    predicate.attribute: p} for p in probes])
        got = [i == 0 for i in match_touchpoints(events, journey)["stage_index"].to_pylist()]
        assert got == [re.search(predicate.value, p) is not None for p in probes], predicate


def _all_touchpoints(journey: JourneyMap) -> list[Touchpoint]:
    return [t for s in journey.stages for t in s.touchpoints] + [*journey.exits, *journey.support, *journey.ignore]


def scalar_roles(events: pa.Table, journey: JourneyMap) -> list[tuple[int, str]]:
    """(stage_index, role) per event by the scalar reference, one event at a time."""
    out = []
    for row in events.to_pylist():
        attributes = {**json.loads(row["attributes"] or "{}"),
                      **{k: row[k] for k in TYPED_ATTRIBUTES if row[k] is not None}}
        hits = lambda tps: any(t.matches(row["channel"], row["event_type"], attributes) for t in tps)  # noqa: E731
        stage = journey.stage_of(row["channel"], row["event_type"], attributes)
        if hits(journey.exits):
            out.append((-1, "exit"))
        elif stage is not None:
            out.append((journey.stage_ids.index(stage), "stage"))
        else:
            out.append((-1, "support" if hits(journey.support) else "ignore" if hits(journey.ignore) else "off_map"))
    return out


@pytest.fixture(scope="module")
def sample_events(tmp_path_factory) -> pa.Table:
    out = tmp_path_factory.mktemp("match_sample")
    generate(out, GenerateConfig(customers=1500, days=14, seed=21, fault_rate=0.0), progress=lambda _: None)
    return read_sample(out)


def test_vectorized_matching_equals_the_scalar_reference_on_a_sample(sample_events):
    journey = load_journey(BUILTIN_JOURNEYS["subscription"])
    matched = match_touchpoints(sample_events, journey)
    got = list(zip(matched["stage_index"].to_pylist(), matched["role"].to_pylist()))
    assert got == scalar_roles(sample_events, journey)
    assert {role for _, role in got} == {"exit", "stage", "support", "ignore", "off_map"}
    assert {k for k, role in got if role == "stage"} == set(range(len(journey.stages)))


def test_vectorized_matching_equals_the_scalar_reference_on_the_helpdesk_log(helpdesk_csv, real_logs):
    spec = load_sources(("helpdesk",))["helpdesk"]
    data_dir = real_logs
    events = parse_files(spec, source_files(spec, data_dir), data_dir=data_dir).events
    journey = load_journey(BUILTIN_JOURNEYS["helpdesk"])
    matched = match_touchpoints(events, journey)
    assert list(zip(matched["stage_index"].to_pylist(), matched["role"].to_pylist())) == scalar_roles(events, journey)
