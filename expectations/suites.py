"""The expectation suites, code-first: which frame each validates and every expectation with
its severity. Critical failures stop a publish; warnings are recorded and reported."""
from __future__ import annotations

import great_expectations as gx
import pandas as pd

from expectations.run_context import GateLimits, RunContext
from journey_defs.outputs import STATUSES

E = gx.expectations
CRITICAL, WARNING = "critical", "warning"


def suites(context: RunContext, limits: GateLimits) -> dict[str, tuple[str, list]]:
    """suite name -> (frame name, expectations)."""
    start, end = context.window
    events = [
        E.ExpectColumnValuesToBeInSet(column="event_id_missing", value_set=[False], severity=CRITICAL),
        E.ExpectColumnValuesToNotBeNull(column="ts", severity=CRITICAL),
        E.ExpectColumnValuesToBeUnique(column="event_id_hash", severity=CRITICAL),
        E.ExpectColumnValuesToBeInSet(column="channel", value_set=list(context.channels), severity=CRITICAL),
        E.ExpectColumnValuesToBeBetween(column="dated_ts", min_value=pd.Timestamp(start),
                                        max_value=pd.Timestamp(end), severity=CRITICAL),
    ]
    events.append(E.ExpectColumnValuesToBeInSet(column="typed_as", value_set=list(context.typed_as),
                                                severity=CRITICAL))
    return {
        "canonical_events": ("events", events),
        "row_accounting": ("manifest", [
            E.ExpectColumnValuesToBeInSet(column="balanced", value_set=[True], severity=CRITICAL),
            E.ExpectColumnPairValuesToBeEqual(column_A="records", column_B="accounted", severity=CRITICAL),
        ]),
        "run_totals": ("run_totals", [
            E.ExpectColumnValuesToBeBetween(column="bad_row_share", min_value=0, max_value=limits.bad_row_threshold,
                                            severity=CRITICAL),
            E.ExpectColumnPairValuesToBeEqual(column_A="manifest_events", column_B="events_written",
                                              severity=CRITICAL),
        ]),
        "journey_statuses": ("journeys", [
            E.ExpectColumnValuesToBeInSet(column="status", value_set=list(STATUSES), severity=CRITICAL),
            E.ExpectCompoundColumnsToBeUnique(column_list=["journey_id", "customer_id"], severity=CRITICAL),
        ]),
        "time_in_stage": ("journey_stages", [
            E.ExpectColumnValuesToBeBetween(column="time_in_stage_s", min_value=0, severity=CRITICAL),
        ]),
        "stage_order": ("stage_order", [
            E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="entered_at", column_B="earlier_stage_entered_at",
                                                      or_equal=True, ignore_row_if="either_value_is_missing",
                                                      severity=CRITICAL),
        ]),
        "funnel": ("funnel", [
            E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="reached_before", column_B="reached", or_equal=True,
                                                      severity=CRITICAL),
        ]),
        "stage_rates": ("stage_daily", [
            E.ExpectColumnValuesToBeBetween(column="conversion_rate", min_value=0, max_value=1, severity=CRITICAL),
        ]),
        "reconcile": ("reconcile", [
            E.ExpectColumnPairValuesToBeEqual(column_A="journeys", column_B="customers_with_stages",
                                              severity=CRITICAL),
            E.ExpectColumnPairValuesToBeEqual(column_A="journeys", column_B="customers_entering", severity=CRITICAL),
        ]),
        "skipped_files": ("skipped_files", [
            E.ExpectColumnValuesToBeNull(column="skipped", severity=WARNING),
        ]),
        "drift_off_map": ("off_map_share", [
            E.ExpectColumnValuesToBeBetween(column="off_map_share", max_value=limits.off_map_share, severity=WARNING),
        ]),
        "drift_identity": ("identity_rate", [
            E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="resolution_rate", column_B="floor", or_equal=True,
                                                      severity=WARNING),
        ]),
        "drift_channel_volume": ("channel_volume", [
            E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="events", column_B="floor", or_equal=True,
                                                      severity=WARNING),
        ]),
    }
