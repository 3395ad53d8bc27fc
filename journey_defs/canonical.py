"""The canonical event and bad-row schemas: the one place every module agrees on.

Every source format is parsed into `CANONICAL_SCHEMA`; every record that cannot be
becomes a row of `BAD_ROW_SCHEMA` with one of `BAD_ROW_REASONS`. Nothing is dropped.
"""
from __future__ import annotations

import pyarrow as pa

CHANNELS = ("web", "app", "email", "sms", "chat", "phone", "survey", "ticket", "store")
"""Channels a source or a touchpoint may name; anything else is rejected."""

IDENTITY_KEYS = ("anonymous_id", "user_id", "email", "phone")
"""Identity columns a source may fill; stitching resolves them to `customer_id`."""

TYPED_ATTRIBUTES = {
    "page": pa.string(),
    "campaign": pa.string(),
    "queue": pa.string(),
    "topic": pa.string(),
    "disposition": pa.string(),
    "score": pa.int32(),
    "duration_s": pa.float64(),
}
"""Attributes common enough to get their own typed column; others go to `attributes` (JSON)."""

UTC_MICROS = pa.timestamp("us", tz="UTC")

CANONICAL_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("customer_id", pa.string()),
        *[pa.field(key, pa.string()) for key in IDENTITY_KEYS],
        pa.field("channel", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("ts", UTC_MICROS, nullable=False),
        *[pa.field(name, dtype) for name, dtype in TYPED_ATTRIBUTES.items()],
        pa.field("attributes", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_line", pa.int64(), nullable=False),
        pa.field("source_date", pa.date32()),
    ]
)
"""One row per event. `attributes` is a JSON object of the source's other fields.
`source_date` is the day partition the record was read from (null for whole-log files);
it differs from `ts`'s day for late events."""

BAD_ROW_REASONS = {
    "malformed": "record could not be parsed (bad JSON, wrong column count, broken XML)",
    "invalid_utf8": "record contains bytes that are not valid UTF-8",
    "missing_timestamp": "timestamp field is missing or empty",
    "bad_timestamp": "timestamp could not be parsed with the source's format",
    "clock_skew": "timestamp lies after the file's day plus the allowed clock skew",
    "too_late": "timestamp lies before the file's day minus the allowed lateness",
    "unknown_event_type": "event type is not in the source's closed vocabulary",
    "unknown_channel": "channel is not one of the known channels",
    "wrong_type": "a typed field holds a value of the wrong type",
    "missing_identity": "record carries no identity key at all",
    "missing_event_type": "event type field is missing or empty",
    "missing_event_id": "the spec names an event id field and it is missing or empty (no id is invented: "
                        "a re-delivered copy could not be recognised as a duplicate)",
}
"""Reason codes for rejected records, with the explanation shown to users."""

BAD_ROW_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_line", pa.int64(), nullable=False),
        pa.field("source_date", pa.date32()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("raw_text", pa.string(), nullable=False),
    ]
)
"""`raw_text` is the record as read; invalid bytes appear as `\\xNN` escapes so it can be replayed."""

IDENTITY_TABLE_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("email", pa.string()),
        pa.field("phone", pa.string()),
        pa.field("segment", pa.string()),
    ]
)
"""The CRM/identity table after normalisation (emails lower-cased, phones as +digits)."""


def unresolved_customer_id(identity_key: str, value: str) -> str:
    """Customer id of an identity that resolves to no known customer: kept, never dropped."""
    return f"{identity_key}:{value}"
