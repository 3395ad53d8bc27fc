"""Parsing raw records into canonical events and bad rows, with exact expected values."""
from __future__ import annotations

import csv
import gc
import hashlib
import json
from collections import Counter
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from generator.generate import GenerateConfig, generate
from journey_defs.canonical import BAD_ROW_SCHEMA, CANONICAL_SCHEMA, IDENTITY_TABLE_SCHEMA
from journey_defs.source_spec import load_sources
from transforms.parse import (
    ParseLimits,
    dedupe,
    normalize_email,
    normalize_phone,
    parse_bytes,
    parse_file,
    parse_files,
    relative_name,
    read_identity_table,
    source_files,
    stable_event_id,
)

RAW = Path(__file__).parent / "fixtures" / "raw"
DAY = date(2026, 1, 5)
SPECS = load_sources()


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def parse_fixture(source: str) -> tuple[list[dict], int]:
    """All events of a built-in source's fixture files for DAY; asserts nothing was rejected."""
    events, read = [], 0
    for path, file_date in source_files(SPECS[source], RAW, DAY):
        result = parse_file(SPECS[source], path, data_dir=RAW, file_date=file_date)
        assert result.bad_rows.num_rows == 0, result.bad_rows.to_pylist()
        assert result.events.schema == CANONICAL_SCHEMA
        events += result.events.to_pylist()
        read += result.records_read
    return events, read


def pick(event: dict, *keys: str) -> dict:
    return {k: event[k] for k in keys}


def parse(source: str, text: str | bytes, file_date: date | None = DAY, spec=None, limits=ParseLimits()):
    data = text.encode() if isinstance(text, str) else text
    spec = spec or SPECS[source]
    result = parse_bytes(spec, data, source_file=f"{source}/test", file_date=file_date, limits=limits)
    assert result.records_read == result.events.num_rows + result.bad_rows.num_rows
    assert result.bad_rows.schema == BAD_ROW_SCHEMA and result.events.schema == CANONICAL_SCHEMA
    return result


# --- built-in sources, exact values --------------------------------------------------
def test_web_fixture_offsets_blank_lines_and_a_record_without_its_id():
    [(path, _), (path_2, _)] = source_files(SPECS["web"], RAW, DAY)
    first = parse_file(SPECS["web"], path, data_dir=RAW, file_date=DAY)
    assert first.records_read == 3  # the blank line is not a record
    # line 4 has no message_id: a bad row, not an invented id (a re-delivery would get another)
    assert first.bad_rows.select(["source_line", "reason", "detail"]).to_pylist() == [
        {"source_line": 4, "reason": "missing_event_id", "detail": "event id field 'message_id' is missing or empty"}]
    events = first.events.to_pylist() + parse_file(SPECS["web"], path_2, data_dir=RAW, file_date=DAY).events.to_pylist()
    keys = ("event_id", "anonymous_id", "user_id", "event_type", "ts", "page", "attributes", "source_file", "source_line")
    assert [pick(e, *keys) for e in events] == [
        {"event_id": "web:w-1", "anonymous_id": "a-1", "user_id": None, "event_type": "page_view",
         "ts": utc(2026, 1, 5, 10, 22, 33, 123000), "page": "/pricing",
         "attributes": '{"referrer":"https://google.com/","message_type":"page","user_agent":"Mozilla/5.0"}',
         "source_file": "web/2026-01-05/part-000.jsonl", "source_line": 1},
        {"event_id": "web:w-2", "anonymous_id": "a-1", "user_id": "C000123", "event_type": "signup",
         "ts": utc(2026, 1, 5, 9, 0, 0), "page": "/signup",  # +02:00 honoured
         "attributes": '{"message_type":"track","user_agent":"Mozilla/5.0"}',
         "source_file": "web/2026-01-05/part-000.jsonl", "source_line": 2},
        {"event_id": "web:w-4", "anonymous_id": "a-3", "user_id": None, "event_type": "page_view",
         "ts": utc(2026, 1, 5, 8), "page": "/", "attributes": '{"message_type":"page"}',
         "source_file": "web/2026-01-05/part-001.jsonl", "source_line": 1},
    ]
    assert all(e["channel"] == "web" and e["customer_id"] is None and e["source_date"] == DAY for e in events)
    # a spec that names no id field hashes source, file and line, the same in SQL and Python
    hashed = parse_file(replace(SPECS["web"], event_id=None), path, data_dir=RAW, file_date=DAY).events
    assert hashed.select(["event_id", "ts", "source_line"]).to_pylist()[2] == {
        "event_id": "web:" + hashlib.md5(b"web\x1fweb/2026-01-05/part-000.jsonl\x1f4").hexdigest()[:20],
        "ts": utc(2026, 1, 5, 23, 59, 59, 999999), "source_line": 4}
    assert hashed["event_id"][2].as_py() == stable_event_id("web", "web/2026-01-05/part-000.jsonl", 4)


def test_email_fixture_epoch_seconds_and_email_normalisation():
    events, _ = parse_fixture("email")
    keys = ("event_id", "email", "channel", "event_type", "ts", "campaign", "attributes", "source_line")
    assert [pick(e, *keys) for e in events] == [
        {"event_id": "email:e-1", "email": "ada@example.com", "channel": "email", "event_type": "delivered",
         "ts": utc(2026, 1, 5, 10, 2, 33), "campaign": "promo_spring", "attributes": None, "source_line": 1},
        {"event_id": "email:e-2", "email": "ada@example.com", "channel": "email", "event_type": "click",
         "ts": utc(2026, 1, 5, 10, 3, 20, 500000), "campaign": "promo_spring",
         "attributes": '{"url":"https://example.com/pricing"}', "source_line": 2},
    ]


def test_chat_fixture_strptime_and_typed_score():
    events, _ = parse_fixture("chat")
    keys = ("event_id", "anonymous_id", "email", "event_type", "ts", "topic", "score", "attributes")
    assert [pick(e, *keys) for e in events] == [
        {"event_id": "chat:c-1", "anonymous_id": "a-1", "email": None, "event_type": "conversation_started",
         "ts": utc(2026, 1, 5, 10, 22, 33), "topic": "billing", "score": None,
         "attributes": '{"conversation_id":"conv-1","agent":"agent-7"}'},
        {"event_id": "chat:c-2", "anonymous_id": "a-1", "email": "ada@example.com", "event_type": "rating",
         "ts": utc(2026, 1, 5, 10, 40), "topic": "billing", "score": 4,
         "attributes": '{"conversation_id":"conv-1","agent":"agent-7"}'},
    ]


def test_phone_fixture_csv_offsets_phone_normalisation_and_duration():
    events, _ = parse_fixture("phone")
    keys = ("event_id", "phone", "event_type", "ts", "queue", "disposition", "score", "duration_s", "attributes", "source_line")
    assert [pick(e, *keys) for e in events] == [
        {"event_id": "phone:K-000001", "phone": "+442079460001", "event_type": "call", "ts": utc(2026, 1, 5, 9, 22, 33),
         "queue": "sales", "disposition": "signed_up", "score": 5, "duration_s": 509.0,
         "attributes": '{"ivr_path":"1>2"}', "source_line": 2},
        {"event_id": "phone:K-000002", "phone": "+442079460002", "event_type": "call", "ts": utc(2026, 1, 5, 11),
         "queue": "support", "disposition": "callback", "score": None, "duration_s": None,
         "attributes": None, "source_line": 3},
    ]


def test_survey_fixture_berlin_local_time_map_and_multiline_record():
    events, read = parse_fixture("survey")
    assert read == 3
    keys = ("event_id", "email", "event_type", "ts", "score", "attributes", "source_line")
    assert [pick(e, *keys) for e in events] == [
        {"event_id": "survey:S-000001", "email": "ada@example.com", "event_type": "nps_response",
         "ts": utc(2026, 1, 5, 10, 22), "score": 9,
         "attributes": '{"about":"onboarding","comment":"Great so far"}', "source_line": 2},
        # 00:30 in Berlin (CET, +01:00) is the previous day in UTC; the quoted comment spans two lines.
        {"event_id": "survey:S-000002", "email": "bob@example.com", "event_type": "csat_response",
         "ts": utc(2026, 1, 4, 23, 30), "score": 4,
         "attributes": '{"about":"support","comment":"Helpful,\\nbut slow"}', "source_line": 3},
        # unmapped raw types pass through; empty attributes give no JSON at all
        {"event_id": "survey:S-000003", "email": "cy@example.com", "event_type": "ces",
         "ts": utc(2026, 1, 5, 17), "score": 2, "attributes": None, "source_line": 5},
    ]


def test_naive_local_times_are_dst_aware():
    text = (
        "response_id,email,answered_at,survey,score,about,comment\n"
        "S-1,a@example.com,29/03/2026 01:30,nps,9,,\n"  # CET  (+01:00)
        "S-2,a@example.com,29/03/2026 03:30,nps,9,,\n"  # CEST (+02:00), after the spring-forward
        "S-3,a@example.com,01/07/2026 12:00,nps,9,,\n"  # summer
    )
    result = parse("survey", text, file_date=None)
    assert result.events["ts"].to_pylist() == [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30), utc(2026, 7, 1, 10)]


def test_helpdesk_fixture_offsets_change_per_row():
    events, _ = parse_fixture("helpdesk")
    assert [pick(e, "user_id", "event_type", "ts", "source_date") for e in events] == [
        {"user_id": "Case1", "event_type": "Insert ticket", "ts": utc(2012, 6, 1, 7), "source_date": None},
        {"user_id": "Case1", "event_type": "Assign seriousness", "ts": utc(2012, 6, 1, 7, 30), "source_date": None},
        {"user_id": "Case1", "event_type": "Closed", "ts": utc(2012, 12, 3, 9), "source_date": None},
    ]


def test_event_ids_are_stable_across_runs():
    path, file_date = source_files(SPECS["web"], RAW, DAY)[0]
    first = parse_file(SPECS["web"], path, data_dir=RAW, file_date=file_date).events
    again = parse_file(SPECS["web"], path, data_dir=RAW, file_date=file_date).events
    assert first.equals(again)


def test_epoch_milliseconds_and_decimal_numbers():
    spec = replace(SPECS["email"], timestamp=replace(SPECS["email"].timestamp, format="epoch_ms"))
    text = '{"sg_event_id": "e-1", "event": "open", "email": "a@example.com", "timestamp": 1767607353250}\n' \
           '{"sg_event_id": "e-2", "event": "open", "email": "a@example.com", "timestamp": "1767607353250.5"}\n'
    assert parse("email", text, spec=spec).events["ts"].to_pylist() == [
        utc(2026, 1, 5, 10, 2, 33, 250000), utc(2026, 1, 5, 10, 2, 33, 250500)]


def test_identity_table_normalised(caplog):
    table = read_identity_table(SPECS["crm"], RAW / "crm" / "customers.csv")
    assert table.schema == IDENTITY_TABLE_SCHEMA
    assert table.to_pylist() == [
        {"customer_id": "C000123", "email": "ada@example.com", "phone": "+442079460001", "segment": "smb"},
        {"customer_id": "C000124", "email": "bob@example.com", "phone": None, "segment": "enterprise"},
    ]
    assert "1 identity rows skipped (malformed or without customer_id)" in caplog.text


def test_a_gzipped_identity_table_is_found_and_read_like_the_plain_one(tmp_path):
    import gzip

    (tmp_path / "crm").mkdir()
    (tmp_path / "crm" / "customers.csv.gz").write_bytes(gzip.compress((RAW / "crm" / "customers.csv").read_bytes()))
    [(path, _)] = source_files(SPECS["crm"], tmp_path)
    assert path.endswith("crm/customers.csv.gz")
    assert read_identity_table(SPECS["crm"], path) == read_identity_table(SPECS["crm"], RAW / "crm" / "customers.csv")


def test_normalize_functions():
    assert normalize_email([" Ada@Example.COM ", "", None, "  "]).to_pylist() == ["ada@example.com", None, None, None]
    assert normalize_phone(["+44 (20) 7946-0001", "0049 30 1234", "n/a", "", None]).to_pylist() == [
        "+442079460001", "+0049301234", None, None, None]


# --- one test per bad-row reason ------------------------------------------------------
WEB_OK = '{"message_id": "ok", "event": "page_view", "anonymous_id": "a", "timestamp": "2026-01-05T10:00:00Z"}'


@pytest.mark.parametrize(
    "reason, bad_record, detail",
    [
        ("malformed", '{"message_id": "x", "event": "page_view"', "invalid JSON: Expecting ',' delimiter: line 1 column 41 (char 40)"),
        ("malformed", '["not", "an", "object"]', "JSON list where an object was expected"),
        ("missing_timestamp", '{"event": "page_view", "anonymous_id": "a", "timestamp": "  "}',
         "timestamp field 'timestamp' is missing or empty"),
        ("bad_timestamp", '{"event": "page_view", "anonymous_id": "a", "timestamp": "not-a-date"}',
         "timestamp 'not-a-date' does not match iso8601"),
        ("bad_timestamp", '{"event": "page_view", "anonymous_id": "a", "timestamp": "epoch"}',
         "timestamp 'epoch' does not match iso8601"),
        ("missing_event_type", '{"anonymous_id": "a", "timestamp": "2026-01-05T10:00:00Z"}',
         "event type field 'event' is missing or empty"),
        ("missing_identity", '{"event": "page_view", "anonymous_id": "", "user_id": null, "timestamp": "2026-01-05T10:00:00Z"}',
         "no identity: 'anonymous_id' (anonymous_id), 'user_id' (user_id) all empty"),
        ("clock_skew", '{"event": "page_view", "anonymous_id": "a", "timestamp": "2026-01-06T01:00:00Z"}',
         "timestamp 2026-01-06T01:00:00Z is after the end of file day 2026-01-05 + 1:00:00 clock skew"),
        ("too_late", '{"event": "page_view", "anonymous_id": "a", "timestamp": "2025-12-28T23:59:59Z"}',
         "timestamp 2025-12-28T23:59:59Z is before the start of file day 2026-01-05 - 7 days, 0:00:00 allowed lateness"),
        # the first failing check wins: no timestamp and no identity -> missing_timestamp
        ("missing_timestamp", '{"event": "page_view"}', "timestamp field 'timestamp' is missing or empty"),
    ],
)
def test_bad_row_reason_jsonl(reason, bad_record, detail):
    result = parse("web", f"{WEB_OK}\n\n{bad_record}\n{WEB_OK}\n")
    assert result.records_read == 3
    assert result.events["source_line"].to_pylist() == [1, 4]
    assert result.bad_rows.to_pylist() == [{
        "source": "web", "source_file": "web/test", "source_line": 3, "source_date": DAY, "stage": "parse",
        "reason": reason, "detail": detail, "raw_text": bad_record,
    }]


def test_bad_row_invalid_utf8_keeps_bytes_as_escapes():
    bad = b'{"event": "page_view", "anonymous_id": "caf\xe9", "timestamp": "2026-01-05T10:00:00Z"}'
    ok_with_replacement_char = '{"message_id": "m", "event": "page_view", "anonymous_id": "\ufffd", "timestamp": "2026-01-05T10:00:00Z"}'
    data = WEB_OK.encode() + b"\n" + bad + b"\r\n" + ok_with_replacement_char.encode() + b"\n"
    result = parse("web", data)
    assert result.events["anonymous_id"].to_pylist() == ["a", "\ufffd"]
    assert result.bad_rows.select(["source_line", "reason", "detail", "raw_text"]).to_pylist() == [{
        "source_line": 2, "reason": "invalid_utf8", "detail": "byte 0xe9 at column 44 is not valid UTF-8",
        "raw_text": '{"event": "page_view", "anonymous_id": "caf\\xe9", "timestamp": "2026-01-05T10:00:00Z"}',
    }]


def test_invalid_utf8_lines_of_a_long_jsonl_file_with_bom_and_blank_lines():
    """Only the lines with invalid bytes are rejected, wherever they are: several in a row,
    next to blank lines, a sequence cut by the newline, an encoded surrogate, the last line."""
    lines = [WEB_OK.replace('"ok"', f'"m{i}"').encode() for i in range(700)]
    broken = {
        5: b'{"anonymous_id": "caf\xe9"}', 6: b'\xff', 7: b'{"a": "\xe2\x82', 300: b'{"a": "\xed\xa0\x80"}',
        301: b' \xc3', 699: b'{"timestamp": "\xf0\x9f"}',
    }
    lines[8] = lines[8].replace(b'"a"', '"caf\u00e9 \u2603"'.encode())  # valid UTF-8, not ASCII
    for i, raw in broken.items():
        lines[i] = raw
    lines[9], lines[302], lines[303] = b"", b" \t\r", b"   "
    data = b"\xef\xbb\xbf" + b"\r\n".join(lines)  # no final newline
    result = parse("web", data)
    assert result.bad_rows.select(["source_line", "reason"]).to_pylist() == [
        {"source_line": i + 1, "reason": "invalid_utf8"} for i in sorted(broken)]
    assert result.bad_rows["raw_text"].to_pylist() == [
        broken[i].decode("utf-8", "backslashreplace") for i in sorted(broken)]
    assert result.bad_rows["detail"][1].as_py() == "byte 0xff at column 1 is not valid UTF-8"
    ok = [i for i in range(700) if i not in broken and i not in (9, 302, 303)]
    assert result.events["source_line"].to_pylist() == [i + 1 for i in ok]
    assert result.events["event_id"].to_pylist() == [f"web:m{i}" for i in ok]
    assert result.events["anonymous_id"].to_pylist()[ok.index(8)] == "caf\u00e9 \u2603"


def test_attributes_keep_only_present_members_escaped_as_json():
    referrer = 'say "hi" \\ caf\u00e9 \u2603\nnext, "user_agent":null,'
    records = [
        {"properties": {"referrer": referrer}, "type": "page", "context": {"user_agent": None}},
        {"properties": {"referrer": None}, "type": None, "context": {"user_agent": " UA/1 "}},
        {"properties": {}, "type": "", "context": {}},
        {"properties": {"referrer": "r"}, "type": "track", "context": {"user_agent": "u"}},
    ]
    base = json.loads(WEB_OK)
    result = parse("web", "\n".join(json.dumps({**base, **r}) for r in records) + "\n")
    assert result.events["attributes"].to_pylist() == [
        json.dumps({"referrer": referrer, "message_type": "page"}, ensure_ascii=False, separators=(",", ":")),
        '{"user_agent":"UA/1"}',
        None,
        '{"referrer":"r","message_type":"track","user_agent":"u"}',
    ]


def test_parse_reuses_a_connection_across_time_zones_and_nested_or_failed_blocks():
    from transforms.sql_session import reused_connection

    text = "response_id,email,answered_at,survey,score,about,comment\nS-1,a@example.com,05/01/2026 00:30,nps,9,,\n"
    berlin = parse("survey", text).events
    assert berlin["ts"].to_pylist() == [utc(2026, 1, 4, 23, 30)]
    utc_spec = replace(SPECS["survey"], timestamp=replace(SPECS["survey"].timestamp, timezone="UTC"))
    assert parse("survey", text, spec=utc_spec).events["ts"].to_pylist() == [utc(2026, 1, 5, 0, 30)]
    assert parse("survey", text).events.equals(berlin)
    with reused_connection("UTC") as outer:
        with reused_connection("Europe/Berlin") as inner:
            assert inner is not outer
            assert inner.sql("SELECT current_setting('TimeZone')").fetchall() == [("Europe/Berlin",)]
        assert outer.sql("SELECT current_setting('TimeZone')").fetchall() == [("UTC",)]
    with pytest.raises(ZeroDivisionError):
        with reused_connection() as con:
            con.register("src", pa.table({"x": [1]}))
            1 / 0
    with reused_connection() as con:
        assert con.sql("SELECT count(*) FROM duckdb_views() WHERE view_name = 'src'").fetchall() == [(0,)]
    assert parse("survey", text).events.equals(berlin)


def test_bad_row_invalid_utf8_csv():
    data = (b"response_id,email,answered_at,survey,score,about,comment\n"
            b"S-1,a@example.com,05/01/2026 11:22,nps,9,x,tr\xc3s bien\n"
            b"S-2,a@example.com,05/01/2026 11:22,nps,9,x,fine\n")
    result = parse("survey", data)
    assert result.events["event_id"].to_pylist() == ["survey:S-2"]
    assert result.bad_rows.select(["source_line", "reason", "raw_text"]).to_pylist() == [
        {"source_line": 2, "reason": "invalid_utf8", "raw_text": "S-1,a@example.com,05/01/2026 11:22,nps,9,x,tr\\xc3s bien"}]


def test_bad_row_malformed_csv_wrong_column_count():
    text = ("call_id,caller_number,queue,started_at,ended_at,disposition,ivr_path,csat\n"
            "K-1,+44 20,sales,2026-01-05T10:00:00Z,,done,,5\n"
            "K-2,+44 20,sales,2026-01-05T10:00:00Z\n")
    result = parse("phone", text)
    assert result.bad_rows.select(["source_line", "reason", "detail", "raw_text"]).to_pylist() == [{
        "source_line": 3, "reason": "malformed", "detail": "expected 8 columns as in the header, got 4",
        "raw_text": "K-2,+44 20,sales,2026-01-05T10:00:00Z"}]


def test_bad_row_unknown_event_type_checks_closed_vocabulary():
    text = ('{"sg_event_id": "e-1", "event": "open", "email": "a@example.com", "timestamp": 1767607353}\n'
            '{"event": "foo", "email": "a@example.com", "timestamp": 1767607353}\n')
    result = parse("email", text)
    assert result.bad_rows.select(["source_line", "reason", "detail"]).to_pylist() == [{
        "source_line": 2, "reason": "unknown_event_type",
        "detail": "event type 'foo' not in delivered, open, click, bounce, unsubscribe"}]


def test_bad_row_unknown_channel_read_per_record():
    spec = replace(SPECS["web"], channel=None, channel_field="medium")
    text = ('{"message_id": "m", "event": "page_view", "anonymous_id": "a", "timestamp": "2026-01-05T10:00:00Z", "medium": "App"}\n'
            '{"event": "page_view", "anonymous_id": "a", "timestamp": "2026-01-05T10:00:00Z", "medium": "fax"}\n'
            '{"event": "page_view", "anonymous_id": "a", "timestamp": "2026-01-05T10:00:00Z"}\n')
    result = parse("web", text, spec=spec)
    assert result.events["channel"].to_pylist() == ["app"]
    assert result.bad_rows.select(["source_line", "reason", "detail"]).to_pylist() == [
        {"source_line": 2, "reason": "unknown_channel",
         "detail": "channel 'fax' in field 'medium' is not one of web, app, email, sms, chat, phone, survey, ticket, store"},
        {"source_line": 3, "reason": "unknown_channel",
         "detail": "channel (empty) in field 'medium' is not one of web, app, email, sms, chat, phone, survey, ticket, store"},
    ]


def test_bad_row_wrong_type():
    text = ('{"id": "c-1", "type": "rating", "visitor_id": "a", "created_at": "2026-01-05 10:00:00", "rating": "ten"}\n'
            '{"id": "c-2", "type": "rating", "visitor_id": "a", "created_at": "2026-01-05 10:00:00", "rating": 4.5}\n'
            '{"id": "c-3", "type": "rating", "visitor_id": "a", "created_at": "2026-01-05 10:00:00", "rating": "4"}\n')
    result = parse("chat", text)
    assert result.events.select(["event_id", "score"]).to_pylist() == [{"event_id": "chat:c-3", "score": 4}]
    assert result.bad_rows.select(["source_line", "reason", "detail"]).to_pylist() == [
        {"source_line": 1, "reason": "wrong_type", "detail": "score: 'ten' in field 'rating' is not a whole number"},
        {"source_line": 2, "reason": "wrong_type", "detail": "score: '4.5' in field 'rating' is not a whole number"},
    ]


def test_bad_row_wrong_type_seconds_between():
    text = ("call_id,caller_number,queue,started_at,ended_at,disposition,ivr_path,csat\n"
            "K-1,+44 20,sales,2026-01-05T10:00:00Z,soon,done,,\n")
    result = parse("phone", text)
    assert result.bad_rows.select(["reason", "detail"]).to_pylist() == [
        {"reason": "wrong_type", "detail": "duration_s: 'soon' in field 'ended_at' is not a timestamp (iso8601)"}]


def test_clock_limits_are_inclusive_of_the_allowed_edge():
    text = ('{"message_id": "m1", "event": "e", "anonymous_id": "a", "timestamp": "2026-01-06T00:59:59.999999Z"}\n'
            '{"message_id": "m2", "event": "e", "anonymous_id": "a", "timestamp": "2025-12-29T00:00:00Z"}\n')
    assert parse("web", text).bad_rows.num_rows == 0
    tight = ParseLimits(max_clock_skew=timedelta(0))
    assert parse("web", text, limits=tight).bad_rows["reason"].to_pylist() == ["clock_skew"]
    assert parse("web", text, file_date=None).bad_rows.num_rows == 0  # no day, no clock checks


# --- the real Helpdesk log, in three formats --------------------------------------------
README_COUNTS = {
    "Take in charge ticket": 5060, "Resolve ticket": 4983, "Assign seriousness": 4938, "Closed": 4574,
    "Wait": 1463, "Require upgrade": 119, "Insert ticket": 118, "Create SW anomaly": 67,
    "Resolve SW anomaly": 13, "Schedule intervention": 5, "VERIFIED": 3, "RESOLVED": 2, "INVALID": 2, "DUPLICATE": 1,
}


@pytest.fixture(scope="module")
def helpdesk_events(helpdesk_csv, real_logs):
    data_dir = real_logs  # the spec's path is helpdesk/helpdesk.csv
    [(path, file_date)] = source_files(SPECS["helpdesk"], data_dir)
    result = parse_file(SPECS["helpdesk"], path, data_dir=data_dir, file_date=file_date)
    assert result.records_read == result.events.num_rows
    assert result.bad_rows.num_rows == 0
    return result.events


def multiset(events: pa.Table) -> Counter:
    return Counter(zip(events["user_id"].to_pylist(), events["event_type"].to_pylist(), events["ts"].to_pylist()))


def test_real_helpdesk_log(helpdesk_events):
    events = helpdesk_events
    assert events.num_rows == 21_348
    assert len(set(events["user_id"].to_pylist())) == 4_580
    first = events.slice(0, 1).to_pylist()[0]
    assert pick(first, "user_id", "event_type", "ts", "channel", "source_file", "source_line") == {
        "user_id": "Case3608", "event_type": "Assign seriousness", "ts": utc(2010, 1, 13, 6, 40, 25),
        "channel": "ticket", "source_file": "helpdesk/helpdesk.csv", "source_line": 2}
    assert Counter(events["event_type"].to_pylist()) == README_COUNTS
    assert len(set(events["event_id"].to_pylist())) == 21_348


def _helpdesk_as_xes(csv_path: Path, path: Path) -> None:
    """The standard XES shape: <log><trace>case attributes, <event>s</trace></log>."""
    traces: dict[str, list[dict]] = {}
    with csv_path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            traces.setdefault(row["case:concept:name"], []).append(row)
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<log xes.version="1.0">']
    for case, rows in traces.items():
        out.append(f'  <trace>\n    <string key="concept:name" value={quoteattr(case)}/>')
        out.append(f'    <string key="variant" value={quoteattr(rows[0]["case:variant"])}/>')
        for row in rows:
            stamp = row["time:timestamp"].replace(" ", "T").replace("+", ".000+")
            out.append("    <event>")
            out.append(f'      <string key="concept:name" value={quoteattr(row["concept:name"])}/>')
            out.append(f'      <string key="lifecycle:transition" value={quoteattr(row["lifecycle:transition"])}/>')
            out.append(f'      <string key="org:resource" value={quoteattr(row["org:resource"])}/>')
            out.append(f'      <date key="time:timestamp" value="{stamp}"/>')
            out.append("    </event>")
        out.append("  </trace>")
    out.append("</log>")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def test_real_helpdesk_log_as_xes_and_parquet_gives_the_same_events(helpdesk_events, helpdesk_csv, tmp_path):
    (tmp_path / "helpdesk").mkdir()
    _helpdesk_as_xes(helpdesk_csv, tmp_path / "helpdesk" / "helpdesk.xes")
    pq.write_table(pacsv.read_csv(helpdesk_csv), tmp_path / "helpdesk" / "helpdesk.parquet")  # real timestamp column
    expected = multiset(helpdesk_events)
    for fmt in ("xes", "parquet"):
        spec = replace(SPECS["helpdesk"], format=fmt, path=f"helpdesk/helpdesk.{fmt}")
        [(path, file_date)] = source_files(spec, tmp_path)
        result = parse_file(spec, path, data_dir=tmp_path, file_date=file_date)
        assert (result.records_read, result.bad_rows.num_rows) == (21_348, 0), fmt
        assert multiset(result.events) == expected, fmt
    xes = parse_file(replace(SPECS["helpdesk"], format="xes"), tmp_path / "helpdesk" / "helpdesk.xes",
                     data_dir=tmp_path, file_date=None).events
    # trace attributes are case:<key> fields, event lines point at the <event> element
    assert xes.slice(0, 1).select(["user_id", "attributes", "source_line"]).to_pylist() == [{
        "user_id": "Case3608", "source_line": 6,
        "attributes": '{"lifecycle":"complete","resource":"Value 2","variant":"Variant 33"}'}]


def test_broken_xes_keeps_earlier_events_and_rejects_the_rest():
    spec = replace(SPECS["helpdesk"], format="xes")
    xes = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<log>\n"
        '  <trace><string key="concept:name" value="Case1"/>\n'
        '    <event><string key="concept:name" value="Insert ticket"/>'
        '<date key="time:timestamp" value="2012-06-01T09:00:00.000+02:00"/></event>\n'
        '    <event><string key="concept:name" value="Closed"/>'
        '<date key="time:timestamp" value="2012-06-02T09:00:00.000+02:00"/></event>\n'
        '    <event><string key="concept:name" value="Wait"/>\n'
        '      <date key="time:timest'
    )
    result = parse("helpdesk", xes, spec=spec, file_date=None)
    assert result.records_read == 3
    assert result.events.select(["user_id", "event_type", "ts", "source_line"]).to_pylist() == [
        {"user_id": "Case1", "event_type": "Insert ticket", "ts": utc(2012, 6, 1, 7), "source_line": 4},
        {"user_id": "Case1", "event_type": "Closed", "ts": utc(2012, 6, 2, 7), "source_line": 5},
    ]
    assert result.bad_rows.select(["source_line", "reason", "detail", "raw_text"]).to_pylist() == [{
        "source_line": 6, "reason": "malformed", "detail": "broken XML: unclosed token: line 7, column 6",
        "raw_text": '<event><string key="concept:name" value="Wait"/>\n      <date key="time:timest',
    }]


def test_xes_bad_event_keeps_its_own_text_even_on_a_shared_line():
    spec = replace(SPECS["helpdesk"], format="xes")
    xes = ('<log><trace><string key="concept:name" value="C"/>\n'
           '<event><string key="concept:name" value="Wait"/><date key="time:timestamp" value="2012-06-01T09:00:00Z"/>'
           '</event><event><string key="concept:name" value="Closed"/></event></trace></log>\n')
    result = parse("helpdesk", xes, spec=spec, file_date=None)
    assert result.events.select(["user_id", "event_type", "source_line"]).to_pylist() == [
        {"user_id": "C", "event_type": "Wait", "source_line": 2}]
    assert result.bad_rows.select(["source_line", "reason", "raw_text"]).to_pylist() == [{
        "source_line": 2, "reason": "missing_timestamp",
        "raw_text": '<event><string key="concept:name" value="Closed"/></event>'}]


def test_csv_reader_error_is_one_malformed_record_and_reading_goes_on():
    header = "call_id,caller_number,queue,started_at,ended_at,disposition,ivr_path,csat\n"
    ok = "K-{},+44 20,sales,2026-01-05T10:00:00Z,,done,,5\n"
    huge = 'K-2,+44 20,sales,2026-01-05T10:00:00Z,,done,"' + "x" * 200_000 + '",5\n'
    result = parse("phone", header + ok.format(1) + huge + ok.format(3))
    assert result.events["event_id"].to_pylist() == ["phone:K-1", "phone:K-3"]
    assert result.bad_rows.select(["source_line", "reason", "detail"]).to_pylist() == [
        {"source_line": 3, "reason": "malformed", "detail": "CSV error: field larger than field limit (131072)"}]
    assert result.bad_rows["raw_text"][0].as_py() == huge.rstrip("\n")
    assert gc.isenabled()


# --- files and dedupe ---------------------------------------------------------------
def test_source_files_pick_the_day_and_parse_the_date():
    web = SPECS["web"]
    assert source_files(web, RAW, DAY) == [
        (str(RAW / "web/2026-01-05/part-000.jsonl"), DAY),
        (str(RAW / "web/2026-01-05/part-001.jsonl"), DAY),
    ]
    assert [f[1] for f in source_files(web, RAW)] == [DAY, DAY, date(2026, 1, 6)]
    assert source_files(web, RAW, date(2026, 1, 7)) == []
    assert source_files(SPECS["crm"], RAW, DAY) == [(str(RAW / "crm/customers.csv"), None)]


def test_source_files_follow_the_spec_glob_exactly(tmp_path):
    """Listing goes through Beam's FileSystems; the spec's own glob decides: `**/` is zero
    or more directories, `*` stays inside one, other files under the same folder are left."""
    spec = replace(SPECS["web"], path="web/**/{date}/*.jsonl")
    for name in ("web/2026-01-05/a.jsonl", "web/eu/2026-01-05/b.jsonl", "web/eu/x/2026-01-06/c.jsonl",
                 "web/2026-01-05/skip.csv", "web/2026-01-05/deeper/d.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    found = [(Path(p).relative_to(tmp_path).as_posix(), d) for p, d in source_files(spec, tmp_path)]
    assert found == [("web/2026-01-05/a.jsonl", DAY), ("web/eu/2026-01-05/b.jsonl", DAY),
                     ("web/eu/x/2026-01-06/c.jsonl", date(2026, 1, 6))]
    assert [d for _, d in source_files(spec, tmp_path, DAY)] == [DAY, DAY]
    assert source_files(spec, tmp_path / "missing") == []


def test_relative_name_of_local_and_remote_paths(tmp_path):
    assert relative_name(tmp_path / "web" / "a.jsonl", tmp_path) == "web/a.jsonl"
    assert relative_name("gs://bucket/raw/web/2026-01-05/a.jsonl", "gs://bucket/raw/") == "web/2026-01-05/a.jsonl"
    with pytest.raises(ValueError, match="is not under"):
        relative_name("gs://other/web/a.jsonl", "gs://bucket/raw")


def test_source_files_reject_an_impossible_day(tmp_path):
    (tmp_path / "web" / "2026-13-40").mkdir(parents=True)
    (tmp_path / "web" / "2026-13-40" / "x.jsonl").write_text("")
    with pytest.raises(ValueError, match="'2026-13-40' in the path is not a valid YYYY-MM-DD day"):
        source_files(SPECS["web"], tmp_path)


def test_dedupe_keeps_the_first_occurrence_and_counts_duplicates():
    path, file_date = source_files(SPECS["web"], RAW, DAY)[0]
    events = parse_file(SPECS["web"], path, data_dir=RAW, file_date=file_date).events
    redelivered = pa.concat_tables([events.slice(1), events, events.slice(0, 1)])
    unique, removed = dedupe(redelivered)
    assert removed == 2
    assert unique.num_rows == 2
    assert sorted(unique["event_id"].to_pylist()) == sorted(events["event_id"].to_pylist())
    assert unique["source_line"].to_pylist() == [2, 1]  # input order kept
    assert dedupe(events)[1] == 0


# --- batches of files: one query, the same rows as file by file -----------------------
def assert_batch_equals_file_by_file(spec, files, data_dir, limits=ParseLimits()):
    """parse_files over `files` == parse_file of each, concatenated; returns the batch result."""
    singles = [parse_file(spec, path, data_dir=data_dir, file_date=day, limits=limits) for path, day in files]
    batch = parse_files(spec, files, data_dir=data_dir, limits=limits)
    assert batch.records_read == sum(r.records_read for r in singles)
    assert batch.events.schema == CANONICAL_SCHEMA and batch.bad_rows.schema == BAD_ROW_SCHEMA
    assert batch.events.to_pylist() == pa.concat_tables([r.events for r in singles]).to_pylist()
    assert batch.bad_rows.to_pylist() == pa.concat_tables([r.bad_rows for r in singles]).to_pylist()
    return batch


@pytest.mark.parametrize("source", ["web", "email", "chat", "phone", "survey", "helpdesk"])
def test_parse_files_equals_file_by_file_on_fixtures(source):
    files = source_files(SPECS[source], RAW)  # web: two days in one batch
    batch = assert_batch_equals_file_by_file(SPECS[source], files, RAW)
    assert batch.events.num_rows > 0


@pytest.fixture(scope="module")
def faulty_sample(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faulty")
    generate(out, GenerateConfig(customers=600, days=6, seed=5, fault_rate=0.08), progress=lambda _: None)
    return out


@pytest.mark.parametrize("source", ["web", "email", "chat", "phone", "survey"])
def test_parse_files_equals_file_by_file_on_a_generated_sample_with_faults(faulty_sample, source):
    spec = SPECS[source]
    files = source_files(spec, faulty_sample)
    assert len({day for _, day in files}) >= 3
    whole = assert_batch_equals_file_by_file(spec, files, faulty_sample)
    for start in range(0, len(files), 2):  # and in batches of two days
        assert_batch_equals_file_by_file(spec, files[start:start + 2], faulty_sample)
    assert whole.bad_rows.num_rows > 0  # compared above with their reasons, lines, details and raw text


def test_generated_faults_cover_reader_and_sql_reasons(faulty_sample):
    reasons = Counter()
    for source in ("web", "email", "chat", "phone", "survey"):
        files = source_files(SPECS[source], faulty_sample)
        reasons.update(parse_files(SPECS[source], files, data_dir=faulty_sample).bad_rows["reason"].to_pylist())
    # reader-level (detail from the file's records) and SQL-level reasons, all compared above
    assert {"malformed", "invalid_utf8", "missing_timestamp", "bad_timestamp", "clock_skew", "unknown_event_type",
            "wrong_type"} <= set(reasons)


def test_parse_files_clock_checks_use_each_records_own_file_day(tmp_path):
    def record(i: int, ts: str) -> str:
        return f'{{"message_id": "m{i}", "event": "page_view", "anonymous_id": "a", "timestamp": "{ts}"}}\n'

    day1, day2 = date(2026, 1, 5), date(2026, 1, 20)
    (tmp_path / "web" / "2026-01-05").mkdir(parents=True)
    (tmp_path / "web" / "2026-01-20").mkdir(parents=True)
    (tmp_path / "web/2026-01-05/a.jsonl").write_text(
        record(1, "2026-01-05T10:00:00Z") + record(2, "2026-01-20T10:00:00Z"))  # 2: fine on day 2, skewed here
    (tmp_path / "web/2026-01-20/a.jsonl").write_text(
        record(3, "2026-01-20T10:00:00Z") + record(4, "2026-01-05T10:00:00Z"))  # 4: fine on day 1, too late here
    files = source_files(SPECS["web"], tmp_path)
    assert [day for _, day in files] == [day1, day2]
    batch = assert_batch_equals_file_by_file(SPECS["web"], files, tmp_path)
    assert batch.events.select(["event_id", "source_file", "source_date"]).to_pylist() == [
        {"event_id": "web:m1", "source_file": "web/2026-01-05/a.jsonl", "source_date": day1},
        {"event_id": "web:m3", "source_file": "web/2026-01-20/a.jsonl", "source_date": day2},
    ]
    assert batch.bad_rows.select(["source_file", "source_line", "source_date", "reason", "detail"]).to_pylist() == [
        {"source_file": "web/2026-01-05/a.jsonl", "source_line": 2, "source_date": day1, "reason": "clock_skew",
         "detail": "timestamp 2026-01-20T10:00:00Z is after the end of file day 2026-01-05 + 1:00:00 clock skew"},
        {"source_file": "web/2026-01-20/a.jsonl", "source_line": 2, "source_date": day2, "reason": "too_late",
         "detail": "timestamp 2026-01-05T10:00:00Z is before the start of file day 2026-01-20 - 7 days, 0:00:00 allowed lateness"},
    ]
    # limits apply to every file of the batch; with room for both, nothing is rejected
    wide = ParseLimits(max_clock_skew=timedelta(days=15), allowed_lateness=timedelta(days=15))
    assert assert_batch_equals_file_by_file(SPECS["web"], files, tmp_path, limits=wide).bad_rows.num_rows == 0


def test_parse_files_with_dated_and_undated_files_checks_only_the_dated(tmp_path):
    spec = replace(SPECS["web"], path="web/**/*.jsonl")
    (tmp_path / "web" / "old").mkdir(parents=True)
    line = '{"message_id": "m", "event": "page_view", "anonymous_id": "a", "timestamp": "2020-01-01T00:00:00Z"}\n'
    (tmp_path / "web/old/x.jsonl").write_text(line)
    (tmp_path / "web/y.jsonl").write_text(line)
    files = [(str(tmp_path / "web/old/x.jsonl"), None), (str(tmp_path / "web/y.jsonl"), DAY)]
    batch = assert_batch_equals_file_by_file(spec, files, tmp_path)
    assert batch.bad_rows.select(["source_file", "reason"]).to_pylist() == [
        {"source_file": "web/y.jsonl", "reason": "too_late"}]


def test_parse_files_parquet_with_different_schemas_and_xes(tmp_path):
    (tmp_path / "helpdesk").mkdir()
    rows = [{"case:concept:name": "C1", "concept:name": "Insert ticket", "time:timestamp": "2012-06-01T09:00:00Z"},
            {"case:concept:name": "", "concept:name": "Closed", "time:timestamp": "2012-06-02T09:00:00Z"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "helpdesk" / "a.parquet")
    pq.write_table(pa.Table.from_pylist([{**r, "org:resource": "Value 1"} for r in rows]), tmp_path / "helpdesk" / "b.parquet")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "helpdesk" / "c.parquet")
    spec = replace(SPECS["helpdesk"], format="parquet", path="helpdesk/*.parquet", attributes=())
    files = source_files(spec, tmp_path)
    batch = assert_batch_equals_file_by_file(spec, files, tmp_path)
    assert batch.bad_rows.select(["source_file", "reason", "raw_text"]).to_pylist() == [
        {"source_file": f"helpdesk/{name}.parquet", "reason": "missing_identity",
         "raw_text": json.dumps(rows[1] | ({"org:resource": "Value 1"} if name == "b" else {}))}
        for name in "abc"]

    xes = ('<log><trace><string key="concept:name" value="C{n}"/>\n'
           '<event><string key="concept:name" value="Wait"/><date key="time:timestamp" value="2012-06-01T09:00:00Z"/>'
           "</event></trace></log>\n")
    for n in (1, 2):
        (tmp_path / "helpdesk" / f"{n}.xes").write_text(xes.format(n=n))
    (tmp_path / "helpdesk" / "3.xes").write_text(xes.format(n=3)[:70])  # broken XML
    spec = replace(SPECS["helpdesk"], format="xes", path="helpdesk/*.xes")
    batch = assert_batch_equals_file_by_file(spec, source_files(spec, tmp_path), tmp_path)
    assert batch.events["user_id"].to_pylist() == ["C1", "C2"]
    assert batch.bad_rows.select(["source_file", "reason"]).to_pylist() == [
        {"source_file": "helpdesk/3.xes", "reason": "malformed"}]


def test_parse_files_of_no_files_is_empty():
    result = parse_files(SPECS["web"], [], data_dir=RAW)
    assert (result.records_read, result.events.schema, result.bad_rows.schema) == (0, CANONICAL_SCHEMA, BAD_ROW_SCHEMA)
    assert result.events.num_rows == result.bad_rows.num_rows == 0
