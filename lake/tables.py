"""The lake's tables in one registry: name, schema, partition rule, scope, warehouse table.

Why one registry: the pipeline (what a run writes and owns), the commit (which partitions a
run replaces), the gate (what it reads), publish (what fills each warehouse table) and the
tests all walk the same list, so a table added here is written, committed, gated and
published without a second list to keep in step.

Partition rule: `ingest_day` tables are partitioned by the day of the raw file a row came
from (`source_date`; rows of whole-log files go to the run's as-of day), `as_of` tables by
the run's as-of day. Scope: within a day, each table is split by journey (derived tables),
by source (raw-data tables and the identity map), or by run (the gate's checks). A run
replaces exactly the (table, day, scope) it owns, so running journey B never touches
journey A's rows, and reading some sources never touches the others'."""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from journey_defs.canonical import BAD_ROW_SCHEMA, CANONICAL_SCHEMA
from journey_defs.outputs import (
    CHECKS, DEVIATIONS, FEEDBACK, IDENTITIES, JOURNEY_STAGES, JOURNEYS, MANIFEST, OFF_MAP_COUNTS, SESSIONS,
    STAGE_DAILY,
)

INGEST_DAY, AS_OF = "ingest_day", "as_of"
JOURNEY, SOURCE, RUN = "journey", "source", "run"
SCOPE_COLUMNS = {JOURNEY: "journey_id", SOURCE: "source", RUN: None}
"""The column whose value names a row's scope (a run's checks are all the run's own)."""


@dataclass(frozen=True)
class LakeTable:
    name: str
    schema: pa.Schema
    partition: str   # INGEST_DAY | AS_OF
    scope: str       # JOURNEY | SOURCE | RUN
    warehouse: str   # the DuckDB table it is published to

    @property
    def scope_column(self) -> str | None:
        return SCOPE_COLUMNS[self.scope]

    @property
    def partition_column(self) -> str | None:
        """The column that gives an ingest-day row its day (None: the run's as-of day)."""
        return "source_date" if self.partition == INGEST_DAY else None


TABLES: dict[str, LakeTable] = {t.name: t for t in (
    LakeTable("events", CANONICAL_SCHEMA, INGEST_DAY, SOURCE, "events"),
    LakeTable("bad_rows", BAD_ROW_SCHEMA, INGEST_DAY, SOURCE, "bad_rows"),
    LakeTable("identities", IDENTITIES, AS_OF, SOURCE, "identities"),
    LakeTable("sessions", SESSIONS, AS_OF, JOURNEY, "sessions"),
    LakeTable("journeys", JOURNEYS, AS_OF, JOURNEY, "journeys"),
    LakeTable("journey_stages", JOURNEY_STAGES, AS_OF, JOURNEY, "journey_stages"),
    LakeTable("deviations", DEVIATIONS, AS_OF, JOURNEY, "deviations"),
    LakeTable("feedback", FEEDBACK, AS_OF, JOURNEY, "feedback"),
    LakeTable("stage_daily", STAGE_DAILY, AS_OF, JOURNEY, "stage_daily"),
    LakeTable("off_map", OFF_MAP_COUNTS, AS_OF, JOURNEY, "off_map"),
    LakeTable("manifest", MANIFEST, AS_OF, SOURCE, "run_files"),
    LakeTable("checks", CHECKS, AS_OF, RUN, "run_checks"),
)}


def table(name: str) -> LakeTable:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"no lake table '{name}' (known: {', '.join(TABLES)})") from None
