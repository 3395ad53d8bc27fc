"""YAML reading that remembers where every value came from, so a broken config fails
with the file, the line, the path of the key and what was expected."""
from __future__ import annotations

import difflib
import re
from datetime import timedelta
from pathlib import Path

import yaml
from yaml.constructor import SafeConstructor


class ConfigError(ValueError):
    """A configuration file is invalid; the message names file, line, key path and expectation."""

    def __init__(self, file: str, line: int | None, path: str, message: str):
        self.file, self.line, self.path, self.message = file, line, path, message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {path + ': ' if path else ''}{message}")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION = timedelta(days=36525)
"""100 years, longer than any journey. Beyond some bound the run fails, and that bound
depends on the date: a conversion window's lookback steps back day by day and passes the
year 1 after ~739,000 days, int64 microseconds overflow after ~10**8 days, and 10**9 days
do not even fit a timedelta (an OverflowError at load)."""


class Node:
    """A YAML node with its file, 1-based line and key path, and typed accessors."""

    def __init__(self, node: yaml.Node, file: str, path: str = ""):
        self.node, self.file, self.path = node, file, path

    @classmethod
    def load(cls, file: str | Path) -> "Node":
        file = str(file)
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(file, None, "", f"cannot read file: {exc}") from exc
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise ConfigError(
                file, mark.line + 1 if mark else None, "", f"invalid YAML: {exc.problem or exc}"
            ) from exc
        if node is None:
            raise ConfigError(file, 1, "", "file is empty; expected a mapping of settings")
        return cls(node, file)

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    def error(self, message: str) -> ConfigError:
        return ConfigError(self.file, self.line, self.path, message)

    def _child(self, node: yaml.Node, suffix: str) -> "Node":
        return Node(node, self.file, f"{self.path}{suffix}")

    # --- structure -------------------------------------------------------------
    def mapping(self, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> dict[str, "Node"]:
        """Keys to child nodes; fails on unknown, duplicate or missing keys."""
        if not isinstance(self.node, yaml.MappingNode):
            raise self.error(f"expected a mapping, got {self._kind()}")
        allowed = set(required) | set(optional)
        children: dict[str, Node] = {}
        for key_node, value_node in self.node.value:
            key = str(SafeConstructor().construct_object(key_node))
            prefix = f"{self.path}." if self.path else ""
            child = Node(value_node, self.file, f"{prefix}{key}")
            key_as_node = Node(key_node, self.file, f"{prefix}{key}")
            key_as_node._check_utf8(key)
            if allowed and key not in allowed:
                hint = difflib.get_close_matches(key, sorted(allowed), n=1)
                expected = f"did you mean '{hint[0]}'?" if hint else "expected one of " + ", ".join(sorted(allowed))
                raise key_as_node.error(f"unknown key '{key}'; {expected}")
            if key in children:
                raise key_as_node.error(f"duplicate key '{key}' (first at line {children[key].line})")
            children[key] = child
        missing = [k for k in required if k not in children]
        if missing:
            raise self.error(f"missing required key '{missing[0]}'")
        return children

    def items(self) -> list["Node"]:
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.error(f"expected a list, got {self._kind()}")
        return [self._child(n, f"[{i}]") for i, n in enumerate(self.node.value)]

    def is_mapping(self) -> bool:
        return isinstance(self.node, yaml.MappingNode)

    def is_null(self) -> bool:
        """A YAML null (`null`, `~` or nothing after the key)."""
        return isinstance(self.node, yaml.ScalarNode) and self.node.tag == "tag:yaml.org,2002:null"


    # --- scalars ---------------------------------------------------------------
    def value(self):
        return SafeConstructor().construct_object(self.node, deep=True)

    def string(self, allow_empty: bool = False) -> str:
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag == "tag:yaml.org,2002:null":
            raise self.error(f"expected a text value, got {self._kind()}")
        text = str(self.value())
        if not text.strip() and not allow_empty:
            raise self.error("expected a non-empty text value")
        self._check_utf8(text)
        return text

    def _check_utf8(self, text: str) -> None:
        """A `"\\ud800"` escape gives a lone surrogate, which no UTF-8 text can hold: DuckDB
        (and Arrow) would fail on it at run time, in the middle of a query."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise self.error(
                f"'{text.encode('utf-8', 'backslashreplace').decode()}' holds a lone surrogate "
                f"(\\u{ord(text[exc.start]):04x}); expected text that is valid Unicode"
            ) from None

    def choice(self, options: tuple[str, ...]) -> str:
        text = self.string()
        if text not in options:
            raise self.error(f"'{text}' is not valid; expected one of {', '.join(options)}")
        return text

    def boolean(self) -> bool:
        value = self.value()
        if not isinstance(value, bool):
            raise self.error(f"expected true or false, got '{value}'")
        return value

    def integer(self, minimum: int | None = None) -> int:
        value = self.value()
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"expected a whole number, got '{value}'")
        if minimum is not None and value < minimum:
            raise self.error(f"expected a number >= {minimum}, got {value}")
        return value

    def number(self, minimum: float | None = None, maximum: float | None = None) -> float:
        value = self.value()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"expected a number, got '{value}'")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise self.error(f"expected a number in [{minimum}, {maximum}], got {value}")
        return float(value)

    def duration(self) -> timedelta:
        """Durations are written like 90s, 30m, 36h, 7d or 2w; they must be positive (also
        once rounded to microseconds) and at most MAX_DURATION."""
        text = str(self.value())
        match = _DURATION.match(text)
        if not match or float(match.group(1)) <= 0:
            raise self.error(f"bad duration '{text}'; expected a positive number and unit, like 30m, 36h, 7d or 2w")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if seconds > MAX_DURATION.total_seconds():
            raise self.error(f"bad duration '{text}'; expected at most {MAX_DURATION.days}d (100 years)")
        duration = timedelta(seconds=seconds)
        if not duration:
            raise self.error(f"bad duration '{text}'; it rounds to 0, expected at least 1 microsecond")
        return duration

    def _kind(self) -> str:
        if isinstance(self.node, yaml.MappingNode):
            return "a mapping"
        if isinstance(self.node, yaml.SequenceNode):
            return "a list"
        if self.node.tag == "tag:yaml.org,2002:null":
            return "nothing (null)"
        return f"'{self.node.value}'"
