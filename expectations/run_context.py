"""What a gate needs to know about the run it checks: where its staged output is, which days
and journeys it covers, and the sets and limits its data must respect."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from datetime import date, datetime, time, timedelta, timezone

from journey_defs.canonical import CHANNELS
from journey_defs.model import JourneyMap
from journey_defs.source_spec import SourceSpec

if TYPE_CHECKING:
    from lake import RunFolder, Snapshot


@dataclass(frozen=True)
class GateLimits:
    """Thresholds of the checks; the defaults suit a nightly run."""

    bad_row_threshold: float = 0.05      # critical: bad rows / records
    off_map_share: float = 0.10          # warning: off-map events / events of the journey
    identity_drop: float = 0.05          # warning: resolution rate below the trailing mean by more than this
    channel_floor: float = 0.30          # warning: a channel's events below this share of its trailing median
    trailing_days: int = 7
    min_trailing_events: int = 50        # a channel's trailing median below this is too small to judge
    sample_rows: int = 5                 # failing rows kept per expectation


@dataclass(frozen=True)
class RunContext:
    run_id: str
    as_of: date
    days: tuple[date, ...]               # ingest days of the run
    staged: RunFolder                    # the run's own, uncommitted lake folder
    lake: Snapshot                       # the committed lake (trailing days)
    journeys: tuple[JourneyMap, ...]
    specs: dict[str, SourceSpec]
    allowed_lateness: timedelta
    max_clock_skew: timedelta

    @property
    def sources(self) -> tuple[str, ...]:
        """The events sources the run read."""
        return tuple(sorted(name for name, spec in self.specs.items() if spec.kind == "events"))

    @property
    def channels(self) -> tuple[str, ...]:
        """Channels the configured sources can produce."""
        found = set()
        for spec in self.specs.values():
            if spec.kind != "events":
                continue
            if spec.channel_field:
                return CHANNELS
            found.add(spec.channel)
        return tuple(sorted(found))

    @property
    def event_types(self) -> dict[str, tuple[str, ...]]:
        """Per events source with a closed vocabulary (or a constant type): the event types it
        can produce. Sources with an open vocabulary are left out."""
        found = {}
        for name, spec in sorted(self.specs.items()):
            kind = spec.event_type
            if spec.kind != "events" or kind is None:
                continue
            if kind.value is not None:
                found[name] = (kind.value,)
            elif kind.allowed is not None:
                found[name] = tuple(sorted({kind.mapping.get(v, v) for v in kind.allowed}))
        return found

    @property
    def typed_as(self) -> tuple[str, ...]:
        """Allowed "source:event_type" of the events frame ("source:*" for open vocabularies)."""
        closed = self.event_types
        return tuple(sorted(
            [f"{source}:{t}" for source, types in closed.items() for t in types] +
            [f"{name}:*" for name, spec in self.specs.items() if spec.kind == "events" and name not in closed]))

    @property
    def window(self) -> tuple[datetime, datetime]:
        """Timestamps the run's events may have: its first day minus the allowed lateness to
        its last day's end plus the clock skew."""
        start = datetime.combine(min(self.days), time(), timezone.utc) - self.allowed_lateness
        end = datetime.combine(max(self.days) + timedelta(days=1), time(), timezone.utc) + self.max_clock_skew
        return start, end
