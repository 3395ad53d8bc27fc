"""Immutable, validated model of a journey map (what `journey_defs.loader` returns)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

ORDERING_MODES = ("ordered", "strict", "unordered")
"""`ordered`: a stage counts only after the required stage before it and before any later
stage; `strict`: and progress stops at the first deviation; `unordered`: any order
(README, *Semantics*; transforms/ordering/)."""

STALL_RULES = ("anyone", "identified")
"""Who can be `stalled`: `anyone`, or only `identified` customers (a user id, e-mail or phone
known: someone the business can contact); the others stay in_progress."""

PREDICATE_OPS = ("equals", "in", "prefix", "regex")


@dataclass(frozen=True)
class Predicate:
    """A condition on one event attribute (typed column or key of `attributes`)."""

    attribute: str
    op: str  # one of PREDICATE_OPS
    value: str | tuple[str, ...]

    def matches(self, actual: str | None) -> bool:
        """Scalar reference semantics; the pipeline evaluates the same rule vectorized."""
        if actual is None:
            return False
        actual = str(actual)
        if self.op == "equals":
            return actual == self.value
        if self.op == "in":
            return actual in self.value
        if self.op == "prefix":
            return actual.startswith(self.value)
        return re.search(self.value, actual) is not None


@dataclass(frozen=True)
class Touchpoint:
    """An event on one channel, of one type, whose attributes satisfy every predicate."""

    channel: str
    event_type: str
    where: tuple[Predicate, ...] = ()

    def matches(self, channel: str, event_type: str, attributes: dict) -> bool:
        return (
            channel == self.channel
            and event_type == self.event_type
            and all(p.matches(attributes.get(p.attribute)) for p in self.where)
        )


@dataclass(frozen=True)
class Stage:
    id: str
    name: str
    touchpoints: tuple[Touchpoint, ...]
    optional: bool = False
    entry: bool = False
    max_time_in_stage: timedelta | None = None


@dataclass(frozen=True)
class AlertPolicy:
    """When a stage's rising drop-off becomes an alert (README, *Nightly flow*: rising drop-off alerts)."""

    recent_window: timedelta = timedelta(days=7)
    baseline_window: timedelta = timedelta(days=28)
    min_relative_rise: float = 0.25
    significance: float = 0.001
    min_sample: int = 100


@dataclass(frozen=True)
class JourneyMap:
    id: str
    version: str
    stages: tuple[Stage, ...]
    sources: tuple[str, ...]
    name: str = ""
    description: str = ""
    ordering: str = "ordered"
    conversion_window: timedelta = timedelta(days=30)
    session_gap: timedelta = timedelta(minutes=30)
    segment_field: str | None = None
    stalls: str = "anyone"
    exits: tuple[Touchpoint, ...] = ()
    support: tuple[Touchpoint, ...] = ()
    ignore: tuple[Touchpoint, ...] = ()
    alerts: AlertPolicy = field(default_factory=AlertPolicy)
    source_file: str = ""

    @property
    def stage_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.stages)

    @property
    def entry_stage_ids(self) -> tuple[str, ...]:
        """Stages that open a journey: those marked `entry`, the leading optional stages
        and the first required stage."""
        ids = []
        for stage in self.stages:
            ids.append(stage.id)
            if not stage.optional:
                break
        ids += [s.id for s in self.stages if s.entry and s.id not in ids]
        return tuple(ids)

    @property
    def predecessors(self) -> tuple[int, ...]:
        """p(k) per stage: the index of the latest required stage before k, -1 for entry
        stages (a journey may open there). A stage is entered only after p(k) is
        (ordered, strict)."""
        pred, latest = [], -1
        for k, stage in enumerate(self.stages):
            pred.append(-1 if stage.id in self.entry_stage_ids else latest)
            latest = latest if stage.optional else k
        return tuple(pred)

    @property
    def final_stage_id(self) -> str:
        return self.stages[-1].id

    def stage(self, stage_id: str) -> Stage:
        for s in self.stages:
            if s.id == stage_id:
                return s
        raise KeyError(stage_id)

    def stage_of(self, channel: str, event_type: str, attributes: dict) -> str | None:
        """The stage whose touchpoint this event matches (scalar reference), else None."""
        for s in self.stages:
            if any(t.matches(channel, event_type, attributes) for t in s.touchpoints):
                return s.id
        return None
