"""Source specs: built-ins load; every mistake fails at load with file, line and what is expected."""
from __future__ import annotations

import textwrap
from datetime import datetime, timezone

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
from transforms.parse import parse_file, source_files

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
    assert set(specs) == {"web", "email", "chat", "phone", "survey", "crm", "helpdesk"} == set(BUILTIN_SOURCES)
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
    with pytest.raises(ConfigError, match="unknown source 'fax'; known sources: chat, crm, email, helpdesk, phone, survey, web"):
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
