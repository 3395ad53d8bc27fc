"""The ordering modes of a journey map, one module each (README, *Semantics*). Each has
`entries(events, journey, after_start)` -> (customers x stages) entering event index and
`deviations(events, journey, entry_event, after_start)` -> per-event (kind, stage, from_stage);
strict's deviations also cut the entries after a customer's first deviation."""
from __future__ import annotations

from types import ModuleType

from transforms.ordering import ordered, strict, unordered

RULES: dict[str, ModuleType] = {"ordered": ordered, "strict": strict, "unordered": unordered}


def rule_for(mode: str) -> ModuleType:
    return RULES[mode]
