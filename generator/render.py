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

_ID = "{prefix} || lpad(CAST(rank AS VARCHAR), 9, '0')"
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


ENRICHED_TABLE = """
CREATE OR REPLACE TABLE enriched AS
SELECT e.*,
       CASE WHEN e.cust >= 0 THEN CASE WHEN e.device = 1 THEN c.anon2 ELSE c.anon1 END END AS anonymous_id,
       CASE WHEN e.identified THEN c.customer_id END AS user_id,
       CASE WHEN e.cust < 0 THEN e.identity
            WHEN e.source = 'chat' AND NOT e.chat_email THEN NULL
            WHEN e.messy THEN '  ' || upper(c.email) || ' '
            ELSE c.email END AS email,
       CASE WHEN e.cust >= 0 THEN c.phone_compact ELSE e.identity END AS phone,
       CASE WHEN e.role = 'stage' AND e.stage = 0 AND e.source = 'web' THEN 'https://www.google.com/' END AS referrer,
       CASE WHEN e.device = 1 THEN 'Mobile Safari' ELSE 'Chrome/142' END AS user_agent
FROM events e LEFT JOIN customers c ON e.cust = c.cust
ORDER BY e.seq
"""
"""Each event, in time order (a parallel join does not keep it by itself), with the identity
values its raw format writes: the second device's anonymous
id, the user id once the site knows it, hand-typed (messy) survey addresses, unknown callers."""


def render_source(con: duckdb.DuckDBPyConnection, source: str) -> pa.Table:
    """Lines of one source from the `enriched` table (rows in time order, `rank` numbering each
    source's events) and the clock-skewed copies listed in table `skew` (seq, shift_us,
    copy_rank), which are numbered after the real events. Returns file_day, seq, is_copy,
    event_id, line (ending in a newline): real rows in time order, then the copies."""
    prefix = LAYOUTS[source].id_prefix
    select = f"""SELECT file_day, seq, is_copy, '{prefix}' || lpad(CAST(rank AS VARCHAR), 9, '0') AS event_id,
                        CAST({_RECORD_SQL[source]} AS VARCHAR) || chr(10) AS line FROM rows"""
    real = con.sql(f"WITH rows AS (SELECT *, false AS is_copy FROM enriched WHERE source = '{source}') {select}")
    copies = con.sql(f"""
        WITH rows AS (
            SELECT e.* REPLACE (e.ts + s.shift_us AS ts, s.copy_rank AS rank), true AS is_copy
            FROM enriched e JOIN skew s ON e.seq = s.seq WHERE e.source = '{source}' ORDER BY s.copy_rank)
        {select}""")
    return pa.concat_tables([real.to_arrow_table(), copies.to_arrow_table()])
