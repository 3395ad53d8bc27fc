"""Source specs: how one raw export maps onto canonical events or the identity table.

A spec is data (a YAML file), so supporting a new export means writing a file, not code.
Everything is validated at load with the file, line and key path of the mistake, so a
broken spec fails before any data is read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from journey_defs import duckdb_rules
from journey_defs.canonical import CHANNELS, IDENTITY_KEYS, TYPED_ATTRIBUTES
from journey_defs.config_yaml import ConfigError, Node

KINDS = ("events", "identity")
FORMATS = ("jsonl", "csv", "parquet", "xes")
TIMESTAMP_FORMATS = ("iso8601", "epoch_s", "epoch_ms")
IDENTITY_TABLE_COLUMNS = ("customer_id", "email", "phone", "segment")
"""Columns an identity (CRM) source maps; `customer_id` is required."""

_EVENT_ONLY_KEYS = ("channel", "event_id", "timestamp", "event_type", "fields", "attributes")
_SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{([^}]*)\}")
_GLOB_CLASS = re.compile(r"\[[^\]]*\]")


@dataclass(frozen=True)
class TimestampSpec:
    """Where the event time is and how to read it; naive times are local to `timezone`."""

    field: str
    format: str = "iso8601"  # iso8601 | epoch_s | epoch_ms | a strptime pattern with %
    timezone: str = "UTC"

    @property
    def is_pattern(self) -> bool:
        return "%" in self.format


@dataclass(frozen=True)
class EventTypeSpec:
    """Event type read from `field` (optionally mapped and checked) or a constant `value`."""

    field: str | None = None
    value: str | None = None
    map: tuple[tuple[str, str], ...] = ()  # raw value -> canonical event type
    allowed: tuple[str, ...] | None = None  # closed vocabulary of raw values

    @property
    def mapping(self) -> dict[str, str]:
        return dict(self.map)


@dataclass(frozen=True)
class FieldSpec:
    """A typed canonical attribute: copied from `path`, or seconds between two timestamps."""

    name: str
    path: str | None = None
    seconds_between: tuple[str, str] | None = None


@dataclass(frozen=True)
class SourceSpec:
    """One validated source spec (see journey_defs/sources/*.yaml for examples)."""

    name: str
    kind: str
    format: str
    path: str
    channel: str | None = None  # constant channel ...
    channel_field: str | None = None  # ... or the field that holds it per record
    event_id: str | None = None
    timestamp: TimestampSpec | None = None
    event_type: EventTypeSpec | None = None
    identity: tuple[tuple[str, str], ...] = ()  # (canonical key, raw field)
    fields: tuple[FieldSpec, ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()  # (attribute name, raw field)
    delimiter: str = ","
    spec_file: str | None = None

    @property
    def dated(self) -> bool:
        """A day folder per night (`{date}` in the path); else a whole log, re-read by every run."""
        return "{date}" in self.path

    @property
    def identity_map(self) -> dict[str, str]:
        return dict(self.identity)

    def referenced_fields(self) -> tuple[str, ...]:
        """Every raw field the spec reads, in a stable order (readers extract only these)."""
        paths: list[str] = []
        if self.timestamp:
            paths.append(self.timestamp.field)
        if self.event_type and self.event_type.field:
            paths.append(self.event_type.field)
        if self.channel_field:
            paths.append(self.channel_field)
        if self.event_id:
            paths.append(self.event_id)
        paths += [field for _, field in self.identity]
        for spec in self.fields:
            paths += list(spec.seconds_between) if spec.seconds_between else [spec.path]
        paths += [field for _, field in self.attributes]
        return tuple(dict.fromkeys(paths))


# --- loading -------------------------------------------------------------------------
def load_source_spec(path: str | Path, expected_name: str | None = None) -> SourceSpec:
    """Read and validate one spec file; raises ConfigError naming file, line and key.
    `expected_name` (the registry key) must equal the spec's `source`."""
    root = Node.load(path)
    keys = root.mapping(
        required=("source", "format", "path"),
        optional=("kind", "identity", "delimiter", *_EVENT_ONLY_KEYS),
    )
    if "event_id" in keys and keys["event_id"].is_null():
        del keys["event_id"]  # `event_id: null`: no id column, ids derived, as when the key is omitted
    name = keys["source"].string()
    if not _SOURCE_NAME.match(name):
        raise keys["source"].error(f"bad source name '{name}'; expected lower-case letters, digits and _")
    if expected_name is not None and name != expected_name:
        raise keys["source"].error(f"source name '{name}' must match the file name '{expected_name}'")
    kind = keys["kind"].choice(KINDS) if "kind" in keys else "events"
    fmt = keys["format"].choice(FORMATS)
    common = dict(
        name=name,
        kind=kind,
        format=fmt,
        path=_data_path(keys["path"]),
        delimiter=_delimiter(keys.get("delimiter"), fmt),
        spec_file=str(path),
    )
    if "identity" not in keys:
        raise root.error("missing required key 'identity'")
    if kind == "identity":
        return _identity_source(keys, common)
    return _events_source(root, keys, common)


def _identity_source(keys: dict[str, Node], common: dict) -> SourceSpec:
    for key in _EVENT_ONLY_KEYS:
        if key in keys:
            raise keys[key].error(f"'{key}' only applies to kind: events sources")
    if common["format"] == "xes":
        raise keys["format"].error("an identity source must be jsonl, csv or parquet")
    identity = keys["identity"].mapping(required=("customer_id",), optional=IDENTITY_TABLE_COLUMNS[1:])
    return SourceSpec(**common, identity=tuple((k, _field(v, common["format"])) for k, v in identity.items()))


def _events_source(root: Node, keys: dict[str, Node], common: dict) -> SourceSpec:
    for key in ("channel", "timestamp", "event_type"):
        if key not in keys:
            raise root.error(f"missing required key '{key}'")
    fmt = common["format"]
    channel, channel_field = _channel(keys["channel"], fmt)
    identity_node = keys["identity"]
    identity = identity_node.mapping(optional=IDENTITY_KEYS)
    if not identity:
        raise identity_node.error(
            "an events source needs at least one identity key: " + ", ".join(IDENTITY_KEYS)
        )
    return SourceSpec(
        **common,
        channel=channel,
        channel_field=channel_field,
        event_id=_field(keys["event_id"], fmt) if "event_id" in keys else None,
        timestamp=_timestamp(keys["timestamp"], fmt),
        event_type=_event_type(keys["event_type"], fmt),
        identity=tuple((k, _field(v, fmt)) for k, v in identity.items()),
        fields=_fields(keys["fields"], fmt) if "fields" in keys else (),
        attributes=_attributes(keys["attributes"], fmt) if "attributes" in keys else (),
    )


def _field(node: Node, fmt: str) -> str:
    """A raw field name; dots address nested JSON / Parquet struct members. JSON-lines
    fields become DuckDB JSON paths, which DuckDB checks when the run binds its query."""
    name = node.string()
    if fmt == "jsonl":
        reason = duckdb_rules.json_field_error(name)
        if reason:
            raise node.error(f"field '{name}' is not a JSON path DuckDB accepts ({reason}); "
                             "dots separate nested keys, so no part may be empty or '*'")
    return name


def _data_path(node: Node) -> str:
    text = node.string()
    if text.startswith("/") or ".." in Path(text).parts:
        raise node.error(f"path '{text}' must be relative to the data directory (no leading / or ..)")
    placeholders = _PLACEHOLDER.findall(text)
    if any(p != "date" for p in placeholders) or len(placeholders) > 1:
        raise node.error(f"path '{text}' may contain only one placeholder, {{date}}")
    for token in _GLOB_CLASS.findall(text):
        # transforms.parse turns the glob into a Python regex, a [...] class verbatim.
        try:
            re.compile(token)
        except re.error as exc:
            raise node.error(f"path '{text}' has a bad character class '{token}' ({exc}); "
                             "expected a class like [0-9] or [abc]") from None
    return text


def _delimiter(node: Node | None, fmt: str) -> str:
    if node is None:
        return ","
    if fmt != "csv":
        raise node.error("'delimiter' only applies to format: csv")
    text = node.string(allow_empty=True)
    if len(text) != 1 or text in "\"\r\n":
        raise node.error(f"delimiter must be one character (not a quote or newline), got '{text}'")
    return text


def _channel(node: Node, fmt: str) -> tuple[str | None, str | None]:
    if node.is_mapping():
        return None, _field(node.mapping(required=("field",))["field"], fmt)
    return node.choice(CHANNELS), None


def _timestamp(node: Node, file_format: str) -> TimestampSpec:
    """The run parses a pattern with DuckDB's try_strptime, which returns NULL for a value
    that does not match but raises for a pattern it does not know (like %e or a trailing %),
    and reads naive times in the zone DuckDB (ICU) knows: both are checked by DuckDB here."""
    keys = node.mapping(required=("field",), optional=("format", "timezone"))
    fmt = keys["format"].string() if "format" in keys else "iso8601"
    if fmt not in TIMESTAMP_FORMATS and "%" not in fmt:
        raise keys["format"].error(
            f"unknown timestamp format '{fmt}'; expected iso8601, epoch_s, epoch_ms "
            "or a strptime pattern containing % (like '%Y-%m-%d %H:%M:%S')"
        )
    if fmt not in TIMESTAMP_FORMATS:
        reason = duckdb_rules.strptime_error(fmt)
        if reason:
            raise keys["format"].error(f"'{fmt}' is not a strptime pattern DuckDB accepts ({reason}); "
                                       "see https://duckdb.org/docs/sql/functions/dateformat")
    tz = keys["timezone"].string() if "timezone" in keys else "UTC"
    if duckdb_rules.timezone_error(tz):
        raise keys["timezone"].error(f"unknown time zone '{tz}'; expected an IANA name like Europe/Berlin")
    return TimestampSpec(field=_field(keys["field"], file_format), format=fmt, timezone=tz)


def _event_type(node: Node, fmt: str) -> EventTypeSpec:
    keys = node.mapping(optional=("field", "value", "map", "allowed"))
    if ("field" in keys) == ("value" in keys):
        raise node.error("event_type needs exactly one of 'field' (read per record) or 'value' (constant)")
    if "value" in keys:
        for key in ("map", "allowed"):
            if key in keys:
                raise keys[key].error(f"'{key}' only applies with event_type 'field', not a constant 'value'")
        return EventTypeSpec(value=keys["value"].string())
    mapping = ()
    if "map" in keys:
        mapping = tuple((raw, target.string()) for raw, target in keys["map"].mapping().items())
    allowed = None
    if "allowed" in keys:
        allowed = tuple(item.string() for item in keys["allowed"].items())
        if not allowed:
            raise keys["allowed"].error("allowed must list at least one event type")
    return EventTypeSpec(field=_field(keys["field"], fmt), map=mapping, allowed=allowed)


def _fields(node: Node, fmt: str) -> tuple[FieldSpec, ...]:
    out = []
    for name, child in node.mapping().items():
        if name not in TYPED_ATTRIBUTES:
            raise child.error(
                f"unknown typed attribute '{name}'; expected one of {', '.join(TYPED_ATTRIBUTES)} "
                "(put other fields under 'attributes')"
            )
        if not child.is_mapping():
            out.append(FieldSpec(name=name, path=_field(child, fmt)))
            continue
        between = child.mapping(required=("seconds_between",))["seconds_between"]
        if str(TYPED_ATTRIBUTES[name]) == "string":
            raise between.error(f"seconds_between gives a number; '{name}' is a text attribute")
        ends = between.items()
        if len(ends) != 2:
            raise between.error("seconds_between expects [start_field, end_field]")
        out.append(FieldSpec(name=name, seconds_between=(_field(ends[0], fmt), _field(ends[1], fmt))))
    return tuple(out)


def _attributes(node: Node, fmt: str) -> tuple[tuple[str, str], ...]:
    out = []
    for name, child in node.mapping().items():
        if name in TYPED_ATTRIBUTES:
            raise child.error(f"'{name}' is a typed attribute; map it under 'fields'")
        out.append((name, _field(child, fmt)))
    return tuple(out)


# --- registry ------------------------------------------------------------------------
BUILTIN_DIR = Path(__file__).with_name("sources")
BUILTIN_SOURCES: dict[str, Path] = {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}
"""Built-in specs by source name (the file name is the source name)."""


def spec_files(directory: str | Path) -> list[Path]:
    """The spec files of a user dir, in the order a later one overrides an earlier one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(str(directory), None, "", "source spec directory does not exist")
    return [p for pattern in ("*.yaml", "*.yml") for p in sorted(directory.glob(pattern))]


def available_sources(extra_dirs: Iterable[str | Path] = ()) -> dict[str, Path]:
    """Spec files by name: built-ins, then each user dir in order (a user spec overrides)."""
    found = dict(BUILTIN_SOURCES)
    for directory in extra_dirs:
        found.update({p.stem: p for p in spec_files(directory)})
    return found


def load_sources(
    names: Iterable[str] | None = None, extra_dirs: Iterable[str | Path] = ()
) -> dict[str, SourceSpec]:
    """Load the named specs (all known ones when `names` is None), validated."""
    known = available_sources(extra_dirs)
    names = list(known) if names is None else list(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            "sources", None, "",
            f"unknown source '{unknown[0]}'; known sources: {', '.join(sorted(known))}",
        )
    return {name: load_source_spec(known[name], expected_name=name) for name in names}
