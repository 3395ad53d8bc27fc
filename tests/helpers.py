"""Builders shared by the transform tests."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from journey_defs.canonical import CANONICAL_SCHEMA
from journey_defs.source_spec import load_sources
from transforms.parse import dedupe, parse_files, source_files

EVENT_SOURCES = ("web", "email", "chat", "phone", "survey")


def canonical_events(rows: list[dict]) -> pa.Table:
    """CANONICAL_SCHEMA events from short dicts (also used by the other transform tests):
    `ts` as 'YYYY-MM-DD HH:MM[:SS[.ffffff]]' in UTC, `attributes` as a dict; event ids
    e000, e001, ... in row order unless given."""
    full = []
    for i, row in enumerate(rows):
        row = {"event_id": f"e{i:03d}", "source": "test", "source_file": "test.jsonl", "source_line": i + 1, **row}
        row["ts"] = datetime.fromisoformat(row["ts"]).replace(tzinfo=timezone.utc)
        if isinstance(row.get("attributes"), dict):
            row["attributes"] = json.dumps(row["attributes"])
        full.append(row)
    return pa.Table.from_pylist(full, schema=CANONICAL_SCHEMA)


def read_sample(data_dir: Path) -> pa.Table:
    """Every event source of a generated sample read back through the built-in specs, deduplicated."""
    specs = load_sources(EVENT_SOURCES)
    events = pa.concat_tables([parse_files(s, source_files(s, data_dir), data_dir=data_dir).events for s in specs.values()])
    return dedupe(events)[0]
