"""Schemas of the pipeline's output tables (the Parquet lake and, later, the warehouse).
One place, so transforms, the writer and tests agree."""
from __future__ import annotations

import pyarrow as pa

from journey_defs.canonical import UTC_MICROS

ROLES = ("stage", "exit", "support", "ignore", "off_map")
"""What an event is for a journey, in matching priority: an exit touchpoint, a stage
touchpoint, a support touchpoint (detour), an ignored event, or none of them (off-map)."""

STATUSES = ("converted", "dropped", "stalled", "in_progress")

DEVIATION_KINDS = ("skipped_stage", "backtrack", "out_of_order", "detour", "off_map")
"""README, *Semantics*, defines each (transforms/ordering/ finds the first three)."""

SESSIONS = pa.schema([
    ("journey_id", pa.string()), ("customer_id", pa.string()), ("session_id", pa.string()),
    ("session_start", UTC_MICROS), ("session_end", UTC_MICROS), ("n_events", pa.int64()),
    ("channels", pa.string()),  # distinct channels of the session, sorted, comma-separated
])

JOURNEYS = pa.schema([
    ("journey_id", pa.string()), ("journey_version", pa.string()), ("as_of_date", pa.date32()),
    ("as_of_at", UTC_MICROS),  # the instant statuses are measured at (README, *Semantics*)
    ("customer_id", pa.string()), ("segment", pa.string()),
    ("identified", pa.bool_()),  # a user id, e-mail or phone known, or a CRM record: contactable
    ("started_at", UTC_MICROS), ("current_stage", pa.string()), ("current_stage_entered_at", UTC_MICROS),
    ("status", pa.string()), ("converted_at", UTC_MICROS), ("exit_at", UTC_MICROS), ("exit_event", pa.string()),
    ("last_event_at", UTC_MICROS), ("last_channel", pa.string()), ("n_events", pa.int64()),
])

JOURNEY_STAGES = pa.schema([
    ("journey_id", pa.string()), ("as_of_date", pa.date32()), ("customer_id", pa.string()), ("segment", pa.string()),
    ("stage", pa.string()), ("stage_index", pa.int32()), ("entered_at", UTC_MICROS), ("entry_channel", pa.string()),
    ("left_at", UTC_MICROS),            # entry of the next stage reached, null while in the stage
    ("time_in_stage_s", pa.float64()),  # left_at (or the as-of instant) minus entered_at
    ("is_current", pa.bool_()), ("stalled", pa.bool_()),
])

DEVIATIONS = pa.schema([
    ("journey_id", pa.string()), ("as_of_date", pa.date32()), ("customer_id", pa.string()),
    ("kind", pa.string()), ("stage", pa.string()), ("from_stage", pa.string()),
    ("event_id", pa.string()), ("channel", pa.string()), ("event_type", pa.string()), ("ts", UTC_MICROS),
])

FEEDBACK = pa.schema([
    ("journey_id", pa.string()), ("as_of_date", pa.date32()), ("customer_id", pa.string()),
    ("event_id", pa.string()), ("channel", pa.string()), ("event_type", pa.string()), ("ts", UTC_MICROS),
    ("score", pa.int32()), ("stage", pa.string()),
])

OFF_MAP_COUNTS = pa.schema([
    ("journey_id", pa.string()), ("channel", pa.string()), ("event_type", pa.string()), ("n_events", pa.int64()),
])
"""Events that match no touchpoint, by type: what the map does not know yet."""

STAGE_DAILY = pa.schema([
    ("journey_id", pa.string()), ("date", pa.date32()), ("stage", pa.string()), ("stage_index", pa.int32()),
    ("channel", pa.string()), ("segment", pa.string()),  # "*" = all
    ("entered", pa.int64()),        # customers whose first entry into the stage was on `date`
    ("progressed", pa.int64()),     # customers who left the stage (reached a later stage) on `date`
    ("dropped", pa.int64()),        # customers whose journey is dropped, at this stage, as of `date`
    ("stalled", pa.int64()),        # customers stalled in this stage as of `date`
    ("in_stage", pa.int64()),       # customers currently in this stage (any status but converted) as of `date`
    ("reached", pa.int64()),        # customers who ever reached this stage (as of `date`)
    ("reached_next", pa.int64()),   # of those, who afterwards entered a later stage of the map
    ("conversion_rate", pa.float64()),  # reached_next / reached (null for the final stage)
    ("p50_time_in_stage_s", pa.float64()), ("p90_time_in_stage_s", pa.float64()),
])

IDENTITIES = pa.schema([
    ("identity_key", pa.string()), ("value", pa.string()), ("customer_id", pa.string()),
    ("source", pa.string()),  # the source whose events carried the value
])
"""The identity map as of a run: every identity value seen in a source's stitched events with
the customer it resolves to now (transforms.identity_map)."""

DUPLICATES = pa.schema([("source_file", pa.string()), ("n_duplicates", pa.int64())])
"""Exact duplicates removed by stitching, counted per source file of the dropped copy."""

FILE_COUNTS = pa.schema([
    ("source", pa.string()), ("source_file", pa.string()), ("source_date", pa.date32()),
    ("records", pa.int64()), ("parsed_events", pa.int64()), ("bad_rows", pa.int64()),
    ("status", pa.string()),  # read | skipped | failed
    ("reason", pa.string()),  # why skipped or failed; null when read
])
"""Row accounting input, one row per raw file of the run's folders (transforms.ingest): read;
skipped (in a dated source's day folder, matched by no source of the run: all zeros); failed
(not readable as its spec says, e.g. not decompressible or a column missing: its data rows
when known, else 0, and no events or bad rows)."""

MANIFEST = pa.schema([
    ("run_id", pa.string()), ("as_of_date", pa.date32()),
    ("source", pa.string()), ("source_file", pa.string()), ("source_date", pa.date32()),
    ("records", pa.int64()), ("events", pa.int64()), ("bad_rows", pa.int64()), ("duplicates", pa.int64()),
    ("balanced", pa.bool_()),
    ("status", pa.string()), ("reason", pa.string()),  # as in FILE_COUNTS
])
"""A run's row accounting, one row per raw file: records = events + bad rows + duplicates, and
never balanced when the file failed (transforms.manifest); the warehouse's `run_files`."""

CHECKS = pa.schema([
    ("run_id", pa.string()), ("as_of_date", pa.date32()), ("suite", pa.string()), ("expectation", pa.string()),
    ("columns", pa.string()), ("severity", pa.string()),  # critical | warning
    ("success", pa.bool_()),
    ("observed", pa.string()),          # the observed value or the number of unexpected rows
    ("unexpected_count", pa.int64()),
    ("sample", pa.string()),            # JSON list of failing values / rows
    ("details", pa.string()),           # JSON: the figures behind a drift warning
])
"""One row per expectation a run's quality gate evaluated."""
