"""The warehouse's tables: which lake table fills each one, and their columns.

Every table mirrors one lake table plus `partition_date`, the lake partition its rows came
from: the ingest day for `events` and `bad_rows` (the day of the raw file), the run's as-of
day for everything derived. Publishing a day replaces exactly the rows of that
`partition_date`, which is what makes publishing idempotent and a range equal to its days.
`alerts`, `alert_nights` and `alert_slices` are replayed by warehouse.alerting from
`alert_counts` and `alert_stage_nights` (summaries of each night's `journey_stages`, written with
its partition), continuing from `alert_state`; `journey_maps` comes from the journey definitions."""
from __future__ import annotations

import pyarrow as pa

from lake.tables import TABLES

PARTITION_COLUMN = "partition_date"

MIRRORED: dict[str, tuple[str, pa.Schema]] = {t.warehouse: (t.name, t.schema) for t in TABLES.values()}
"""warehouse table -> (lake table, lake schema), from the lake's registry."""

ALERTS = pa.schema([
    ("alert_id", pa.string()), ("journey_id", pa.string()), ("stage", pa.string()),
    ("opened_by", pa.string()),  # the series whose evidence opened it: "stage", or a slice ("channel email")
    ("opened_date", pa.date32()), ("updated_date", pa.date32()), ("escalated_date", pa.date32()),
    ("resolved_date", pa.date32()),
    ("status", pa.string()),  # open | escalated | resolved
    ("baseline_drop_rate", pa.float64()), ("recent_drop_rate", pa.float64()),
    ("relative_rise", pa.float64()), ("p_value", pa.float64()),
    ("evidence", pa.float64()), ("threshold", pa.float64()),  # the CUSUM (log-likelihood ratio) and its bar
    ("breakdown", pa.string()),  # the slices showing the rise, most missing movers first ("channel email +98%, ...")
    ("message", pa.string()),
])
"""Rising drop-off alerts, one per journey, stage and incident, replayed from the published
history at every publish (warehouse.alerting); figures are the latest night's."""

ALERT_NIGHTS = pa.schema([
    ("alert_id", pa.string()), ("journey_id", pa.string()), ("night", pa.date32()),
    ("status", pa.string()),  # as of that night: open | escalated | resolved (its last row)
    ("scan_days", pa.int32()),  # the recent entrants compared: those of the last scan_days nights
    ("recent_entrants", pa.int64()), ("moved_on", pa.int64()), ("expected_moved_on", pa.float64()),
    ("baseline_entrants", pa.int64()), ("baseline_drop_rate", pa.float64()), ("recent_drop_rate", pa.float64()),
    ("relative_rise", pa.float64()), ("p_value", pa.float64()), ("evidence", pa.float64()),
    ("threshold", pa.float64()), ("breakdown", pa.string()), ("message", pa.string()),
])
"""Each alert on each published night from its opening to its resolution, with that night's
figures (the `alerts` row keeps the latest): how an alert evolved, and what a report of an
older day showed. Replayed with `alerts`. Figures are null on a night with no recent entrants."""

ALERT_SLICES = pa.schema([
    ("alert_id", pa.string()), ("journey_id", pa.string()), ("night", pa.date32()),
    ("dimension", pa.string()), ("dimension_value", pa.string()),  # channel | segment, and its value
    ("scan_days", pa.int32()), ("recent_entrants", pa.int64()), ("moved_on", pa.int64()),
    ("expected_moved_on", pa.float64()), ("baseline_entrants", pa.int64()), ("baseline_drop_rate", pa.float64()),
    ("recent_drop_rate", pa.float64()), ("relative_rise", pa.float64()), ("p_value", pa.float64()),
    ("evidence", pa.float64()),
])
"""An alert's breakdown night by night: the entry channels and segments of its stage that
showed the rise that night, with their own figures. Replayed with `alerts`."""

JOURNEY_MAPS = pa.schema([
    ("journey_id", pa.string()), ("journey_version", pa.string()), ("stage_index", pa.int32()),
    ("stage", pa.string()), ("stage_name", pa.string()), ("optional", pa.bool_()),
    ("max_time_in_stage_s", pa.float64()),
    # the journey's alert policy (the same on every stage row)
    ("alert_recent_days", pa.int32()), ("alert_baseline_days", pa.int32()), ("alert_min_relative_rise", pa.float64()),
    ("alert_significance", pa.float64()), ("alert_min_sample", pa.int64()),
])
"""The intended maps: one row per stage, in map order (what funnel and journey_paths compare with)."""

ALERT_COUNTS = pa.schema([
    ("partition_date", pa.date32()), ("journey_id", pa.string()), ("night", pa.int64()), ("entry_night", pa.int64()),
    ("stage", pa.string()), ("dimension", pa.string()), ("value", pa.string()), ("age", pa.int64()),
    ("slot", pa.int64()), ("n", pa.int64()), ("moved", pa.int64()),
])
"""What alerting reads of each published night's journey_stages (warehouse.alert_counts):
per stage and series (dimension '*', 'channel' or 'segment' and its value), entry night and
age (nights as days since 1970) and 4-hour slot of entry, the entrants and how many had moved
on, as known that night. Written with the night's partition."""

ALERT_STAGE_NIGHTS = pa.schema([
    ("partition_date", pa.date32()), ("journey_id", pa.string()), ("night", pa.int64()), ("stage", pa.string()),
    ("p90_s", pa.float64()),  # the movers' p90 time in stage that night (the alert horizon)
    ("first_entry", pa.int64()),  # the stage's first entry night in the snapshot
])

ALERT_STATE = pa.schema([("journey_id", pa.string()), ("state", pa.string())])
"""Where the alert replay stopped, per journey (JSON, warehouse.alert_state): the next
publish of later nights continues from it instead of replaying the whole history."""

DERIVED: dict[str, pa.Schema] = {"alerts": ALERTS, "alert_nights": ALERT_NIGHTS, "alert_slices": ALERT_SLICES,
                                 "journey_maps": JOURNEY_MAPS, "alert_counts": ALERT_COUNTS,
                                 "alert_stage_nights": ALERT_STAGE_NIGHTS, "alert_state": ALERT_STATE}
"""The tables a publish derives rather than mirrors."""

ALL_TABLES = (*MIRRORED, *DERIVED)


def existing_tables(con, database: str | None = None) -> set[str]:
    """Names of the tables in `database` (default: the connection's own)."""
    where = "database_name = current_database()" if database is None else "database_name = ?"
    return {t for t, in con.execute(f"SELECT table_name FROM duckdb_tables() WHERE {where}",
                                    [] if database is None else [database]).fetchall()}


def warehouse_schema(table: str) -> pa.Schema:
    """Columns of a warehouse table as Arrow types."""
    if table in DERIVED:
        return DERIVED[table]
    return MIRRORED[table][1].append(pa.field(PARTITION_COLUMN, pa.date32()))
