"""Render generated events into each channel's raw format (the formats documented in
journey_defs/sources/*.yaml). DuckDB renders whole columns at once; nothing here loops per event."""
from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa


@dataclass(frozen=True)
class SourceLayout:
    """How a generated source is laid out on disk, and where its fault-prone fields are."""

    name: str
    folder: str
    file_name: str
    format: str                        # jsonl | csv
    id_prefix: str
    timestamp_field: str
    header: str = ""
    type_field: str | None = None      # closed-vocabulary event type field, if any
    unknown_types: tuple[str, ...] = ()
    typed_int_field: str | None = None  # a field parsed as a number (wrong_type faults)
    columns: tuple[str, ...] = ()

    def relative_path(self, day_text: str) -> str:
        return f"{self.folder}/{day_text}/{self.file_name}"


LAYOUTS = {
    "web": SourceLayout("web", "web", "events.jsonl", "jsonl", "w-", "timestamp"),
    "email": SourceLayout("email", "email", "events.jsonl", "jsonl", "e-", "timestamp", type_field="event",
                          unknown_types=("deferred", "processed", "dropped")),
    "chat": SourceLayout("chat", "chat", "events.jsonl", "jsonl", "c-", "created_at", type_field="type",
                         unknown_types=("typing", "transfer"), typed_int_field="rating"),
    "phone": SourceLayout("phone", "phone", "calls.csv", "csv", "K-", "started_at",
                          header="call_id,caller_number,queue,started_at,ended_at,disposition,ivr_path,csat",
                          typed_int_field="csat",
                          columns=("call_id", "caller_number", "queue", "started_at", "ended_at", "disposition", "ivr_path", "csat")),
    "survey": SourceLayout("survey", "survey", "nps.csv", "csv", "S-", "answered_at",
                           header="response_id,email,answered_at,survey,score,about,comment",
                           typed_int_field="score",
                           columns=("response_id", "email", "answered_at", "survey", "score", "about", "comment")),
}

_ID = "{prefix} || lpad(CAST(rn AS VARCHAR), 9, '0')"
_ISO_MS = "strftime(make_timestamp(ts), '%Y-%m-%dT%H:%M:%S.%gZ')"
_CSV_TEXT = "'\"' || replace(coalesce({col}, ''), '\"', '\"\"') || '\"'"

_RECORD_SQL = {
    "web": f"""to_json({{'message_id': {_ID.format(prefix="'w-'")},
        'type': CASE WHEN event_type = 'page_view' THEN 'page' ELSE 'track' END, 'event': event_type,
        'anonymous_id': anonymous_id, 'user_id': user_id, 'timestamp': {_ISO_MS},
        'properties': {{'page': page, 'referrer': referrer}}, 'context': {{'user_agent': user_agent}}}})""",
    "email": f"""to_json({{'sg_event_id': {_ID.format(prefix="'e-'")}, 'event': event_type, 'email': email,
        'timestamp': CAST(ts // 1000000 AS BIGINT), 'campaign': campaign,
        'url': CASE WHEN event_type = 'click' THEN 'https://shop.example.com/c/' || campaign END}})""",
    "chat": f"""to_json({{'id': {_ID.format(prefix="'c-'")}, 'type': event_type,
        'conversation_id': 'conv-' || CAST(conversation AS VARCHAR), 'visitor_id': anonymous_id, 'email': email,
        'created_at': strftime(make_timestamp(ts), '%Y-%m-%d %H:%M:%S'), 'topic': topic,
        'rating': CAST(score AS INTEGER), 'agent': 'agent-' || CAST(conversation % 17 AS VARCHAR)}})""",
    "phone": f"""concat_ws(',', {_ID.format(prefix="'K-'")}, phone, queue,
        strftime(make_timestamp(ts + 3600000000), '%Y-%m-%dT%H:%M:%S') || '+01:00',
        strftime(make_timestamp(ts + 3600000000 + CAST(duration_s * 1000000 AS BIGINT)), '%Y-%m-%dT%H:%M:%S') || '+01:00',
        disposition, CASE WHEN queue = 'sales' THEN '1>2' ELSE '1>3>1' END,
        coalesce(CAST(CAST(score AS INTEGER) AS VARCHAR), ''))""",
    "survey": f"""concat_ws(',', {_ID.format(prefix="'S-'")}, email,
        strftime(timezone('Europe/Berlin', make_timestamptz(ts)), '%d/%m/%Y %H:%M'),
        CASE event_type WHEN 'nps_response' THEN 'nps' ELSE 'csat' END,
        CAST(CAST(score AS INTEGER) AS VARCHAR), topic, {_CSV_TEXT.format(col="comment")})""",
}


def render_source(source: str, events: pa.Table) -> pa.Table:
    """Lines of one source. `events` needs: file_day, ts (µs), seq, is_copy and the attribute and
    identity columns the source uses. Ids number the real events in time order; copies made
    for faults are numbered after them. Returns file_day, seq, is_copy, ts, event_id, line."""
    record = _RECORD_SQL[source]
    prefix = LAYOUTS[source].id_prefix
    query = f"""
        SELECT file_day, seq, is_copy, ts, '{prefix}' || lpad(CAST(rn AS VARCHAR), 9, '0') AS event_id,
               CAST({record} AS VARCHAR) AS line
        FROM (SELECT *, row_number() OVER (ORDER BY is_copy, ts, seq) AS rn FROM events)
        ORDER BY file_day, is_copy, ts, seq
    """
    with duckdb.connect() as con:
        con.register("events", events)
        return con.sql(query).to_arrow_table()
