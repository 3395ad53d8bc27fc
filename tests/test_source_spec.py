"""Source specs: built-ins load; every mistake fails at load with file, line and what is expected,
including what only DuckDB or the file listing would reject at run time (strptime patterns, time
zones, JSON-lines field paths, path classes), each shown to fail in the run's own code too."""
from __future__ import annotations

import dataclasses
import json
import re
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from journey_defs.config_yaml import ConfigError
from journey_defs.source_spec import (
    BUILTIN_SOURCES,
    EventTypeSpec,
    FieldSpec,
    SourceSpec,
    TimestampSpec,
    load_source_spec,
    load_sources,
)
from transforms.parse import parse_bytes, parse_file, source_files, stable_event_id

GOOD = """\
source: shop
kind: events
format: jsonl
path: "shop/{date}/*.jsonl"
channel: store
event_id: id
timestamp: {field: at, format: iso8601, timezone: Europe/Berlin}
event_type:
  field: kind
  map: {buy: purchase}
  allowed: [buy, return]
identity:
  user_id: customer.number
fields:
  score: rating
attributes:
  till: till
"""


def write(tmp_path, text: str, name: str = "shop.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_every_builtin_spec_loads():
    specs = load_sources()
    assert set(specs) == {"web", "email", "chat", "phone", "survey", "crm", "helpdesk", "bpic2013_incidents"} == set(BUILTIN_SOURCES)
    assert {n for n, s in specs.items() if s.kind == "identity"} == {"crm"}
    assert specs["survey"].timestamp == TimestampSpec("answered_at", "%d/%m/%Y %H:%M", "Europe/Berlin")
    assert specs["survey"].event_type.mapping == {"nps": "nps_response", "csat": "csat_response"}
    assert specs["phone"].event_type == EventTypeSpec(value="call")
    assert specs["phone"].fields[-1] == FieldSpec("duration_s", seconds_between=("started_at", "ended_at"))
    assert specs["helpdesk"].identity == (("user_id", "case:concept:name"),)
    assert specs["web"].referenced_fields() == (
        "timestamp", "event", "message_id", "anonymous_id", "user_id", "properties.page",
        "properties.referrer", "type", "context.user_agent")


def test_a_good_user_spec_loads(tmp_path):
    spec = load_source_spec(write(tmp_path, GOOD))
    assert spec == SourceSpec(
        name="shop", kind="events", format="jsonl", path="shop/{date}/*.jsonl", channel="store",
        event_id="id", timestamp=TimestampSpec("at", "iso8601", "Europe/Berlin"),
        event_type=EventTypeSpec(field="kind", map=(("buy", "purchase"),), allowed=("buy", "return")),
        identity=(("user_id", "customer.number"),), fields=(FieldSpec("score", "rating"),),
        attributes=(("till", "till"),), spec_file=str(tmp_path / "shop.yaml"),
    )


@pytest.mark.parametrize(
    "old, new, line, key, message",
    [
        ("channel: store", "channel: fax", 5, "channel",
         "'fax' is not valid; expected one of web, app, email, sms, chat, phone, survey, ticket, store"),
        ("format: jsonl", "format: xml", 3, "format", "'xml' is not valid; expected one of jsonl, csv, parquet, xes"),
        ("timezone: Europe/Berlin", "timezone: Mars/Olympus", 7, "timestamp.timezone",
         "unknown time zone 'Mars/Olympus'; expected an IANA name like Europe/Berlin"),
        ("format: iso8601", "format: yyyy-mm-dd", 7, "timestamp.format",
         "unknown timestamp format 'yyyy-mm-dd'; expected iso8601, epoch_s, epoch_ms or a strptime pattern "
         "containing % (like '%Y-%m-%d %H:%M:%S')"),
        ("  score: rating", "  stars: rating", 15, "fields.stars",
         "unknown typed attribute 'stars'; expected one of page, campaign, queue, topic, disposition, score, "
         "duration_s (put other fields under 'attributes')"),
        ("  field: kind", "  field: kind\n  value: sale", 9, "event_type",
         "event_type needs exactly one of 'field' (read per record) or 'value' (constant)"),
        ("identity:\n  user_id: customer.number", "identity: {}", 12, "identity",
         "an events source needs at least one identity key: anonymous_id, user_id, email, phone"),
        ("  user_id: customer.number", "  customer_id: customer.number", 13, "identity.customer_id",
         "unknown key 'customer_id'; did you mean 'user_id'?"),
        ("timestamp: {", "timestmap: {", 7, "timestmap", "unknown key 'timestmap'; did you mean 'timestamp'?"),
        ("timestamp: {field: at, format: iso8601, timezone: Europe/Berlin}\n", "", 1, "",
         "missing required key 'timestamp'"),
        ('path: "shop/{date}/*.jsonl"', 'path: "/data/shop/{day}.jsonl"', 4, "path",
         "path '/data/shop/{day}.jsonl' must be relative to the data directory (no leading / or ..)"),
        ('path: "shop/{date}/*.jsonl"', 'path: "shop/{day}.jsonl"', 4, "path",
         "path 'shop/{day}.jsonl' may contain only one placeholder, {date}"),
        ("format: jsonl", "format: jsonl\ndelimiter: ';'", 4, "delimiter", "'delimiter' only applies to format: csv"),
        ("  score: rating", "  topic: {seconds_between: [a, b]}", 15, "fields.topic.seconds_between",
         "seconds_between gives a number; 'topic' is a text attribute"),
        ("  till: till", "  page: till", 17, "attributes.page", "'page' is a typed attribute; map it under 'fields'"),
        ("source: shop", "source: Shop Floor", 1, "source",
         "bad source name 'Shop Floor'; expected lower-case letters, digits and _"),
    ],
)
def test_spec_errors_name_file_line_and_expectation(tmp_path, old, new, line, key, message):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_source_spec(path)
    error = caught.value
    assert (error.file, error.line, error.path, error.message) == (str(path), line, key, message)
    assert str(error).startswith(f"{path}:{line}: ")


def test_identity_source_errors(tmp_path):
    crm = "source: shopcrm\nkind: identity\nformat: csv\npath: crm.csv\nidentity:\n  email: mail\n"
    with pytest.raises(ConfigError) as caught:
        load_source_spec(write(tmp_path, crm))
    assert (caught.value.line, caught.value.path, caught.value.message) == (
        6, "identity", "missing required key 'customer_id'")
    with pytest.raises(ConfigError) as caught:
        load_source_spec(write(tmp_path, crm.replace("kind: identity", "kind: identity\nchannel: web")))
    assert (caught.value.line, caught.value.path, caught.value.message) == (
        3, "channel", "'channel' only applies to kind: events sources")
    with pytest.raises(ConfigError) as caught:
        load_source_spec(write(tmp_path, crm.replace("format: csv", "format: xes")))
    assert (caught.value.line, caught.value.message) == (3, "an identity source must be jsonl, csv or parquet")


def test_event_type_constant_rejects_map(tmp_path):
    text = GOOD.replace("  field: kind\n  map: {buy: purchase}\n  allowed: [buy, return]\n", "  value: sale\n  map: {a: b}\n")
    with pytest.raises(ConfigError) as caught:
        load_source_spec(write(tmp_path, text))
    assert (caught.value.line, caught.value.path) == (10, "event_type.map")


def test_load_sources_unknown_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown source 'fax'; known sources: bpic2013_incidents, chat, crm, email, helpdesk, phone, survey, web"):
        load_sources(["web", "fax"])


def test_user_spec_file_name_must_match_its_source(tmp_path):
    write(tmp_path, GOOD, name="till.yaml")
    with pytest.raises(ConfigError) as caught:
        load_sources(["till"], extra_dirs=[tmp_path])
    assert (caught.value.line, caught.value.path, caught.value.message) == (
        1, "source", "source name 'shop' must match the file name 'till'")


def test_user_spec_parses_a_custom_export_without_code(tmp_path):
    """A shop's till export (semicolon CSV, epoch ms, channel per row): a YAML file is all it takes."""
    specs_dir = tmp_path / "specs"
    specs_dir.mkdir()
    write(specs_dir, """\
    source: till
    format: csv
    delimiter: ";"
    path: "till/{date}/receipts-*.csv"
    channel: {field: where}
    event_id: receipt
    timestamp: {field: at_ms, format: epoch_ms}
    event_type: {value: purchase}
    identity:
      email: customer_mail
      phone: customer_phone
    fields:
      disposition: outcome
    attributes:
      basket_eur: total
    """, name="till.yaml")
    data = tmp_path / "data" / "till" / "2026-01-05"
    data.mkdir(parents=True)
    (data / "receipts-01.csv").write_text(
        "receipt;at_ms;where;customer_mail;customer_phone;outcome;total\n"
        "R1;1767607353000;store;Ada@Example.com;;paid;12.50\n"
        "R2;1767607354000;app;;+49 30 1234-5;refund;\n",
        encoding="utf-8",
    )
    specs = load_sources(["web", "till"], extra_dirs=[specs_dir])
    [(path, day)] = source_files(specs["till"], tmp_path / "data")
    result = parse_file(specs["till"], path, data_dir=tmp_path / "data", file_date=day)
    assert result.bad_rows.num_rows == 0
    assert result.events.select(
        ["event_id", "channel", "event_type", "ts", "email", "phone", "disposition", "attributes"]
    ).to_pylist() == [
        {"event_id": "till:R1", "channel": "store", "event_type": "purchase",
         "ts": datetime(2026, 1, 5, 10, 2, 33, tzinfo=timezone.utc), "email": "ada@example.com", "phone": None,
         "disposition": "paid", "attributes": '{"basket_eur":"12.50"}'},
        {"event_id": "till:R2", "channel": "app", "event_type": "purchase",
         "ts": datetime(2026, 1, 5, 10, 2, 34, tzinfo=timezone.utc), "email": None, "phone": "+493012345",
         "disposition": "refund", "attributes": None},
    ]


# --- what DuckDB decides at run time is decided by DuckDB at load ---------------------------
RECORD = {"id": "1", "at": "2026-01-05T10:00:00Z", "kind": "buy", "customer": {"number": "c1"},
          "rating": "5", "till": "t1"}


def parse_one(spec: SourceSpec, record: dict = RECORD):
    """One JSON line through the run's reader and validation query."""
    return parse_bytes(spec, json.dumps(record).encode() + b"\n", source_file="shop/x.jsonl", file_date=None)


def spec_error(tmp_path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_source_spec(write(tmp_path, text))
    assert str(caught.value).startswith(f"{tmp_path / 'shop.yaml'}:{caught.value.line}: ")
    return caught.value


STRPTIME_REJECTS = {  # case id: (pattern, DuckDB's reason)
    "day_with_space_padding": ("%e.%m.%Y", "Unrecognized format for strftime/strptime: %e"),
    "epoch_directive": ("%s", "Unrecognized format for strftime/strptime: %s"),
    "unknown_directive": ("%Y-%m-%d %Q", "Unrecognized format for strftime/strptime: %Q"),
    "trailing_percent": ("%Y-%m-%d %", "Trailing format character %"),
}


@pytest.mark.parametrize(("pattern", "reason"), STRPTIME_REJECTS.values(), ids=STRPTIME_REJECTS.keys())
def test_strptime_pattern_duckdb_rejects_fails_at_load(tmp_path, pattern, reason):
    error = spec_error(tmp_path, GOOD.replace("format: iso8601", f"format: '{pattern}'"))
    assert (error.line, error.path, error.message) == (7, "timestamp.format", (
        f"'{pattern}' is not a strptime pattern DuckDB accepts ({reason}); "
        "see https://duckdb.org/docs/sql/functions/dateformat"))


@pytest.mark.parametrize("pattern", [p for p, _ in STRPTIME_REJECTS.values()], ids=STRPTIME_REJECTS.keys())
def test_strptime_pattern_check_rejects_the_run_cannot_use(tmp_path, pattern):
    """Not stricter than the run: try_strptime raises on the pattern, whatever the value."""
    spec = load_source_spec(write(tmp_path, GOOD))
    spec = dataclasses.replace(spec, timestamp=dataclasses.replace(spec.timestamp, format=pattern))
    with pytest.raises(duckdb.Error):
        parse_one(spec)


@pytest.mark.parametrize(("pattern", "value"), [
    ("%d/%m/%Y %H:%M", "05/01/2026 11:00"),
    ("%-d.%-m.%Y %H:%M:%S", "5.1.2026 11:00:00"),
    ("%Y-%m-%dT%H:%M:%S.%f", "2026-01-05T11:00:00.000000"),
])
def test_strptime_pattern_check_accepts_the_run_parses(tmp_path, pattern, value):
    spec = load_source_spec(write(tmp_path, GOOD.replace("format: iso8601", f"format: '{pattern}'")))
    result = parse_one(spec, {**RECORD, "at": value})
    assert result.bad_rows.num_rows == 0
    assert result.events["ts"].to_pylist() == [datetime(2026, 1, 5, 10, tzinfo=timezone.utc)]  # Berlin, CET


@pytest.mark.parametrize("zone", ["posix/Europe/Berlin", "right/UTC", "posixrules", "localtime"])
def test_time_zone_duckdb_does_not_know_fails_at_load(tmp_path, zone):
    """Python's zoneinfo may find these files on the machine; DuckDB's ICU, which the run uses, does not."""
    error = spec_error(tmp_path, GOOD.replace("timezone: Europe/Berlin", f"timezone: {zone}"))
    assert (error.line, error.path, error.message) == (
        7, "timestamp.timezone", f"unknown time zone '{zone}'; expected an IANA name like Europe/Berlin")
    spec = load_source_spec(write(tmp_path, GOOD))
    spec = dataclasses.replace(spec, timestamp=dataclasses.replace(spec.timestamp, timezone=zone))
    with pytest.raises(duckdb.Error):
        parse_one(spec)


@pytest.mark.parametrize("zone", ["UTC", "Etc/GMT-5", "America/Ciudad_Juarez"])
def test_time_zone_duckdb_knows_loads_and_parses(tmp_path, zone):
    spec = load_source_spec(write(tmp_path, GOOD.replace("timezone: Europe/Berlin", f"timezone: {zone}")))
    assert spec.timestamp.timezone == zone
    assert parse_one(spec).events.num_rows == 1


JSON_FIELD_REJECTS = {  # case id: (field, DuckDB's reason)
    "empty_part": ("customer..number", "JSON path error near '.\"\".\"number\"'"),
    "leading_dot": (".number", "JSON path error near '.\"\".\"number\"'"),
    "trailing_dot": ("customer.", "JSON path error near '.\"\"'"),
    "wildcard": ("customer.*", "DuckDB reads '*' as a JSON wildcard, not a key"),
    "trailing_backslash": ("customer\\", "JSON path error near '.\"customer\\\"'"),
}


@pytest.mark.parametrize(("field", "reason"), JSON_FIELD_REJECTS.values(), ids=JSON_FIELD_REJECTS.keys())
def test_jsonl_field_duckdb_rejects_fails_at_load(tmp_path, field, reason):
    error = spec_error(tmp_path, GOOD.replace("user_id: customer.number", f"user_id: '{field}'"))
    assert (error.line, error.path, error.message) == (13, "identity.user_id", (
        f"field '{field}' is not a JSON path DuckDB accepts ({reason}); "
        "dots separate nested keys, so no part may be empty or '*'"))
    spec = dataclasses.replace(load_source_spec(write(tmp_path, GOOD)), identity=(("user_id", field),))
    with pytest.raises(duckdb.Error):
        parse_one(spec)


def test_odd_jsonl_fields_duckdb_accepts_load_and_parse(tmp_path):
    odd = ['a"b', "a\\b", "$", "x y", "[0]"]
    text = GOOD.replace("  till: till\n", "".join(f"  k{i}: '{f}'\n" for i, f in enumerate(odd)))
    spec = load_source_spec(write(tmp_path, text))
    fields = [field for _, field in spec.attributes]
    assert fields == ['a"b', "a\\b", "$", "x y", "[0]"]
    [attributes] = parse_one(spec, {**RECORD, **{f: f"v{i}" for i, f in enumerate(fields)}}).events["attributes"].to_pylist()
    assert json.loads(attributes) == {f"k{i}": f"v{i}" for i in range(len(odd))}


def test_csv_field_names_are_header_names_not_json_paths(tmp_path):
    text = GOOD.replace("format: jsonl", "format: csv").replace("user_id: customer.number", "user_id: 'customer..number'")
    assert load_source_spec(write(tmp_path, text)).identity == (("user_id", "customer..number"),)


@pytest.mark.parametrize(("glob", "reason"), [
    ("shop/[z-a]*.jsonl", "bad character range z-a at position 1"),
    ("shop/{date}/[]x.jsonl", "unterminated character set at position 0"),
])
def test_path_class_the_file_listing_cannot_compile_fails_at_load(tmp_path, glob, reason):
    """source_files turns the path into a Python regex with each [...] class as written."""
    error = spec_error(tmp_path, GOOD.replace('"shop/{date}/*.jsonl"', f'"{glob}"'))
    token = glob[glob.index("["):glob.index("]") + 1]
    assert (error.line, error.path, error.message) == (4, "path", (
        f"path '{glob}' has a bad character class '{token}' ({reason}); expected a class like [0-9] or [abc]"))
    spec = dataclasses.replace(load_source_spec(write(tmp_path, GOOD)), path=glob)
    with pytest.raises(re.error):
        source_files(spec, tmp_path)


def test_path_with_a_good_class_loads_and_lists(tmp_path):
    spec = load_source_spec(write(tmp_path, GOOD.replace('"shop/{date}/*.jsonl"', '"shop/{date}/part-[0-9].jsonl"')))
    day = tmp_path / "shop" / "2026-01-05"
    day.mkdir(parents=True)
    for name in ("part-1.jsonl", "part-x.jsonl"):
        (day / name).write_text("", encoding="utf-8")
    assert [p.rsplit("/", 1)[-1] for p, _ in source_files(spec, tmp_path)] == ["part-1.jsonl"]


def test_lone_surrogate_in_a_spec_value_fails_at_load(tmp_path):
    error = spec_error(tmp_path, GOOD.replace("map: {buy: purchase}", 'map: {buy: "purch\\udc80ase"}'))
    assert (error.line, error.path, error.message) == (
        10, "event_type.map.buy", "'purch\\udc80ase' holds a lone surrogate (\\udc80); expected text that is valid Unicode")


def readme_spec_example() -> str:
    """The source-spec example of README.md's *Sources* section, as printed there."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if b.startswith("source: tickets\n")]
    return block


def test_event_id_null_means_no_id_column_exactly_as_leaving_it_out(tmp_path):
    example = readme_spec_example()
    assert re.search(r"^event_id: null\b", example, re.M)  # what the README shows and says: ids derived
    spec = load_source_spec(write(tmp_path, example, "tickets.yaml"))
    (tmp_path / "omitted").mkdir()
    without = load_source_spec(write(tmp_path / "omitted", re.sub(r"^event_id: null.*\n", "", example, flags=re.M),
                                     "tickets.yaml"))
    assert spec.event_id is None
    assert dataclasses.replace(spec, spec_file=None) == dataclasses.replace(without, spec_file=None)
    for null in ("~", "", "null  # derived"):
        assert load_source_spec(write(tmp_path, GOOD.replace("event_id: id", f"event_id: {null}"))).event_id is None
    xes = ('<log><trace><string key="concept:name" value="T1"/><event><string key="concept:name" value="open"/>'
           '<date key="time:timestamp" value="2026-01-05T09:00:00Z"/></event></trace></log>')
    events = parse_bytes(spec, xes.encode(), source_file="exports/tickets.xes", file_date=None).events
    assert events["event_id"].to_pylist() == [stable_event_id("tickets", "exports/tickets.xes", 1)]
    # an id column that is there but empty is still an error, not a null
    with pytest.raises(ConfigError, match="event_id: expected a non-empty text value"):
        load_source_spec(write(tmp_path, GOOD.replace("event_id: id", "event_id: ' '")))
