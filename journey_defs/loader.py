"""Turn a journey-map YAML file into the immutable `JourneyMap` model.

Every mistake in a map is a `ConfigError` naming file, line, key path and what was
expected, because maps are edited by analysts and a nightly run must not fail vaguely.
"""
from __future__ import annotations

import re
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterable

from journey_defs import duckdb_rules
from journey_defs.canonical import CANONICAL_SCHEMA, CHANNELS
from journey_defs.config_yaml import ConfigError, Node
from journey_defs.model import (
    ORDERING_MODES,
    STALL_RULES,
    PREDICATE_OPS,
    AlertPolicy,
    JourneyMap,
    Predicate,
    Stage,
    Touchpoint,
)
from journey_defs.source_spec import available_sources, load_source_spec, load_sources, spec_files

__all__ = ["BUILTIN_JOURNEYS", "check_definitions", "load_journey", "resolve_journey"]

BUILTIN_JOURNEYS: dict[str, Path] = {p.stem: p for p in sorted(Path(__file__).parent.glob("*.yaml"))}
"""Maps shipped next to this module, by name (the file stem)."""

_ID = re.compile(r"[a-z][a-z0-9_]*")  # used with fullmatch
_JOURNEY_KEYS = ("journey", "version", "sources", "stages")
_JOURNEY_OPTIONAL = (
    "name", "description", "ordering", "conversion_window", "session_gap",
    "segment_field", "stalls", "exits", "support", "ignore", "alerts",
)
_STAGE_OPTIONAL = ("name", "optional", "entry", "max_time_in_stage")
_ALERT_KEYS = ("recent_window", "baseline_window", "min_relative_rise", "significance", "min_sample")
_COLUMNS = frozenset(CANONICAL_SCHEMA.names) - {"attributes"}
"""Attributes read from a typed column; any other name is a key of the `attributes` JSON."""


def load_journey(path: str | Path, known_sources: Iterable[str] | None = None) -> JourneyMap:
    """Read, validate and cross-check one journey map."""
    root = Node.load(path)
    keys = root.mapping(_JOURNEY_KEYS, _JOURNEY_OPTIONAL)
    journey_id = _identifier(keys["journey"])
    defaults = JourneyMap(id="", version="", stages=(), sources=())
    return JourneyMap(
        id=journey_id,
        version=_text(keys["version"]),
        name=_get(keys, "name", _text, journey_id),
        description=_get(keys, "description", lambda n: n.string(allow_empty=True).strip(), ""),
        ordering=_get(keys, "ordering", lambda n: n.choice(ORDERING_MODES), defaults.ordering),
        conversion_window=_get(keys, "conversion_window", Node.duration, defaults.conversion_window),
        session_gap=_get(keys, "session_gap", Node.duration, defaults.session_gap),
        segment_field=_get(keys, "segment_field", Node.string, None),
        stalls=_get(keys, "stalls", lambda n: n.choice(STALL_RULES), defaults.stalls),
        sources=_sources(keys["sources"], known_sources),
        stages=_stages(keys["stages"]),
        exits=_get(keys, "exits", _touchpoint_list, ()),
        support=_get(keys, "support", _touchpoint_list, ()),
        ignore=_get(keys, "ignore", _touchpoint_list, ()),
        alerts=_get(keys, "alerts", _alert_policy, AlertPolicy()),
        source_file=str(path),
    )


def check_definitions(journey_names: Iterable[str], sources_dirs: Iterable[str | Path] = ()) -> list[JourneyMap]:
    """Load everything a run loads before it reads data, so `journeys check` fails exactly
    where `journeys run` would: each journey (a built-in name or a file) against the known
    sources, and every source spec the journeys name. Also every spec file in each of
    `sources_dirs`, named or not: a run loads a folder's spec only for the journeys that name
    it, so a spec left broken there passes today's runs and breaks the first journey that
    adds it. Raises ConfigError (file, line, key path) at the first mistake."""
    sources_dirs = list(sources_dirs)
    known = available_sources(sources_dirs)
    journeys = [load_journey(resolve_journey(name), known_sources=known) for name in journey_names]
    load_sources(sorted({s for j in journeys for s in j.sources}), sources_dirs)
    for directory in sources_dirs:
        for path in spec_files(directory):
            load_source_spec(path, expected_name=path.stem)
    return journeys


def resolve_journey(name_or_path: str) -> Path:
    """A built-in map name (e.g. 'helpdesk') or the path of an existing map file."""
    if name_or_path in BUILTIN_JOURNEYS:
        return BUILTIN_JOURNEYS[name_or_path]
    path = Path(name_or_path)
    if path.is_file():
        return path
    builtins = ", ".join(sorted(BUILTIN_JOURNEYS))
    raise ConfigError(
        name_or_path, None, "", f"no such journey; expected a built-in name ({builtins}) or an existing file"
    )


# --- small readers --------------------------------------------------------------
def _get(keys: dict[str, Node], key: str, read: Callable[[Node], object], default):
    """An optional key: read it when present, else the default."""
    return read(keys[key]) if key in keys else default


def _text(node: Node) -> str:
    """A scalar as written in the file, so `1.10`, `007` or `no` keep their text
    instead of becoming 1.1, 7 or False through YAML typing."""
    node.string()  # validates: a non-empty scalar, not null
    return node.node.value


def _identifier(node: Node) -> str:
    text = node.string()
    if not _ID.fullmatch(text):
        raise node.error(f"bad id '{text}'; expected lowercase letters, digits and _, starting with a letter")
    return text


def _non_empty_items(node: Node, message: str) -> list[Node]:
    items = node.items()
    if not items:
        raise node.error(message)
    return items


# --- sources --------------------------------------------------------------------
def _sources(node: Node, known_sources: Iterable[str] | None) -> tuple[str, ...]:
    """Source names; checked against the known source specs when the caller has them."""
    items = _non_empty_items(node, "expected a non-empty list of source names")
    names = tuple(item.string() for item in items)
    if known_sources is not None:
        known = sorted(set(known_sources))
        for item, name in zip(items, names):
            if name not in known:
                raise item.error(f"unknown source '{name}'; expected one of {', '.join(known)}")
    return names


# --- stages ---------------------------------------------------------------------
def _stages(node: Node) -> tuple[Stage, ...]:
    """All stages, then the checks that need to see them together."""
    stage_keys = [item.mapping(("id", "touchpoints"), _STAGE_OPTIONAL)
                  for item in _non_empty_items(node, "expected a non-empty list of stages")]
    stages = [_stage(keys) for keys in stage_keys]
    _check_unique_ids(stage_keys, stages)
    _check_touchpoints_unique(stage_keys, stages)
    _check_required_stages(node, stage_keys, stages)
    return tuple(stages)


def _stage(keys: dict[str, Node]) -> Stage:
    stage_id = _identifier(keys["id"])
    touchpoints = _non_empty_items(keys["touchpoints"], f"stage '{stage_id}' has no touchpoints")
    return Stage(
        id=stage_id,
        name=_get(keys, "name", _text, stage_id),
        touchpoints=tuple(_touchpoint(t) for t in touchpoints),
        optional=_get(keys, "optional", Node.boolean, False),
        entry=_get(keys, "entry", Node.boolean, False),
        max_time_in_stage=_get(keys, "max_time_in_stage", Node.duration, None),
    )


def _check_unique_ids(stage_keys: list[dict[str, Node]], stages: list[Stage]) -> None:
    first: dict[str, Node] = {}
    for keys, stage in zip(stage_keys, stages):
        if stage.id in first:
            raise keys["id"].error(f"duplicate stage id '{stage.id}' (first at line {first[stage.id].line})")
        first[stage.id] = keys["id"]


def _check_touchpoints_unique(stage_keys: list[dict[str, Node]], stages: list[Stage]) -> None:
    """An event must map to one stage, else the stage it reaches would be ambiguous."""
    owner: dict[tuple, str] = {}
    for keys, stage in zip(stage_keys, stages):
        for tp_node, tp in zip(keys["touchpoints"].items(), stage.touchpoints):
            key = (tp.channel, tp.event_type, frozenset(tp.where))
            if key in owner:
                raise tp_node.error(f"touchpoint already mapped to stage '{owner[key]}'")
            owner[key] = stage.id


def _check_required_stages(node: Node, stage_keys: list[dict[str, Node]], stages: list[Stage]) -> None:
    """A journey needs a required stage, and it must end on one: that is what 'converted' means."""
    if all(s.optional for s in stages):
        raise node.error("all stages are optional; expected at least one required stage")
    if stages[-1].optional:
        raise stage_keys[-1]["optional"].error(
            f"final stage '{stages[-1].id}' is optional; the final stage must be required"
        )


# --- touchpoints ----------------------------------------------------------------
def _touchpoint_list(node: Node) -> tuple[Touchpoint, ...]:
    return tuple(_touchpoint(item) for item in node.items())


def _touchpoint(node: Node) -> Touchpoint:
    keys = node.mapping(("channel", "event"), ("where",))
    return Touchpoint(
        channel=keys["channel"].choice(CHANNELS),
        event_type=_text(keys["event"]),
        where=_get(keys, "where", _predicates, ()),
    )


def _predicates(node: Node) -> tuple[Predicate, ...]:
    """`attribute: {op: value}` pairs, in file order."""
    return tuple(_predicate(attribute, condition) for attribute, condition in node.mapping().items())


def _predicate(attribute: str, node: Node) -> Predicate:
    if attribute not in _COLUMNS:
        reason = duckdb_rules.attribute_path_error(attribute)
        if reason:
            raise node.error(f"attribute '{attribute}' cannot be read from the attributes JSON ({reason})")
    ops = node.mapping(optional=PREDICATE_OPS)
    if len(ops) != 1:
        raise node.error(f"expected exactly one of {', '.join(PREDICATE_OPS)}, got {len(ops)}")
    op, value = next(iter(ops.items()))
    if op == "in":
        items = _non_empty_items(value, "expected a non-empty list of values")
        return Predicate(attribute, op, tuple(_text(item) for item in items))
    text = _text(value)
    if op == "regex":
        _check_regex(value, text)
    return Predicate(attribute, op, text)


def _check_regex(node: Node, pattern: str) -> None:
    """The run matches with DuckDB's regexp_matches (RE2), not Python's `re`: a pattern `re`
    takes (look-ahead, backreferences) can still fail there, so RE2 itself decides."""
    reason = duckdb_rules.regex_error(pattern)
    if reason is None:
        return
    message = f"'{pattern}' is not a pattern DuckDB's RE2 accepts ({reason})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. FutureWarning for '[[' in a set
        try:
            re.compile(pattern)
        except re.error:
            raise node.error(message) from None
    raise node.error(message + "; RE2 has no look-around, backreferences, atomic groups or possessive "
                     "quantifiers (https://github.com/google/re2/wiki/Syntax)")


# --- alerts ---------------------------------------------------------------------
def _alert_policy(node: Node) -> AlertPolicy:
    keys = node.mapping(optional=_ALERT_KEYS)
    default = AlertPolicy()
    policy = AlertPolicy(
        recent_window=_get(keys, "recent_window", _whole_days, default.recent_window),
        baseline_window=_get(keys, "baseline_window", _whole_days, default.baseline_window),
        min_relative_rise=_get(keys, "min_relative_rise", _positive, default.min_relative_rise),
        significance=_get(keys, "significance", _probability, default.significance),
        min_sample=_get(keys, "min_sample", lambda n: n.integer(minimum=1), default.min_sample),
    )
    if policy.baseline_window <= policy.recent_window:
        culprit = keys.get("baseline_window") or keys.get("recent_window") or node
        raise culprit.error("baseline_window must be longer than recent_window")
    return policy


def _whole_days(node: Node) -> timedelta:
    """Alerting counts nights (`window.days`): 36h would silently become 1 night, 12h none."""
    window = node.duration()
    if window % timedelta(days=1):
        raise node.error(f"alert windows count whole nights; expected whole days like 7d or 2w, got '{node.value()}'")
    return window


def _positive(node: Node) -> float:
    value = node.number()
    if value <= 0:
        raise node.error(f"expected a number > 0, got {value:g}")
    return value


def _probability(node: Node) -> float:
    value = node.number()
    if not 0 < value < 1:
        raise node.error(f"expected a number between 0 and 1 (exclusive), got {value:g}")
    return value
