"""Journey tables -> STAGE_DAILY: per stage, entry channel and segment, how many customers
entered, progressed, dropped, stalled and are in the stage as of a day, and how long they
took to leave it.

Why this module exists: it is the one table the rising drop-off detection and the report
read, so its counts are defined once, in SQL over the small per-customer tables (one row
per customer and stage), not over events. Quantiles are exact (`quantile_cont`), which
cannot be merged from per-bucket results: `combine_stage_daily` therefore recomputes from
the concatenation of the buckets' journey_stages and journeys, which is cheap because
they are already one row per customer and stage.
"""
from __future__ import annotations

from datetime import date
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from journey_defs.model import JourneyMap
from journey_defs.outputs import JOURNEY_STAGES, JOURNEYS, STAGE_DAILY
from transforms.sql_session import query_tables

__all__ = ["STAGE_INPUTS", "stage_daily", "combine_stage_daily"]

_SQL = """
WITH rows AS (
    SELECT s.stage_index, s.entry_channel, s.segment, s.entered_at, s.left_at, s.time_in_stage_s,
           s.is_current, s.stalled, j.status
    FROM stages s JOIN journeys j USING (customer_id) JOIN map m USING (stage_index)
),
agg AS (
    SELECT stage_index,
           CASE WHEN grouping(entry_channel) = 1 THEN '*' ELSE entry_channel END AS channel,
           CASE WHEN grouping(segment) = 1 THEN '*' ELSE segment END AS segment,
           count(*) FILTER (CAST(entered_at AS DATE) = $day) AS entered,
           count(*) FILTER (CAST(left_at AS DATE) = $day) AS progressed,
           count(*) FILTER (is_current AND status = 'dropped') AS dropped,
           count(*) FILTER (stalled) AS stalled,
           count(*) FILTER (is_current AND status <> 'converted') AS in_stage,
           count(*) AS reached,
           count(left_at) AS reached_next,  -- left = entered a later stage after it (transforms.journeys)
           quantile_cont(time_in_stage_s, 0.5) FILTER (left_at IS NOT NULL) AS p50_time_in_stage_s,
           quantile_cont(time_in_stage_s, 0.9) FILTER (left_at IS NOT NULL) AS p90_time_in_stage_s
    FROM rows
    GROUP BY GROUPING SETS ((stage_index, entry_channel, segment), (stage_index, entry_channel),
                            (stage_index, segment), (stage_index))
    HAVING $by_segment OR grouping(segment) = 1
),
scaffold AS (  -- every stage has an all-channels row per segment, even when nobody reached it
    SELECT stage_index, '*' AS channel, segment
    FROM map, (SELECT DISTINCT segment FROM journeys WHERE $by_segment UNION SELECT '*')
),
filled AS (
    SELECT * FROM agg
    UNION ALL BY NAME
    SELECT stage_index, channel, segment, 0 AS entered, 0 AS progressed, 0 AS dropped, 0 AS stalled,
           0 AS in_stage, 0 AS reached, 0 AS reached_next
    FROM scaffold s
    WHERE NOT EXISTS (SELECT 1 FROM agg a WHERE a.stage_index = s.stage_index AND a.channel = s.channel
                                          AND a.segment IS NOT DISTINCT FROM s.segment)
)
SELECT $journey_id AS journey_id, $day AS date, m.stage, f.stage_index, f.channel, f.segment,
       f.entered, f.progressed, f.dropped, f.stalled, f.in_stage, f.reached,
       CASE WHEN NOT m.is_final THEN f.reached_next END AS reached_next,
       CASE WHEN NOT m.is_final AND f.reached > 0 THEN f.reached_next / f.reached END AS conversion_rate,
       f.p50_time_in_stage_s, f.p90_time_in_stage_s
FROM filled f JOIN map m USING (stage_index)
ORDER BY f.stage_index, f.channel <> '*', f.channel, f.segment <> '*', f.segment NULLS LAST
"""
"""`stages`/`journeys` are the day's journey_stages/journeys of this journey; `map` holds
each stage's index, id and whether it is the final stage.
`$by_segment` is false for a journey without `segment_field`: then every row has segment "*"."""

STAGE_INPUTS = {
    "journey_stages": pa.schema([JOURNEY_STAGES.field(n) for n in (
        "journey_id", "as_of_date", "customer_id", "segment", "stage_index", "entered_at", "entry_channel",
        "left_at", "time_in_stage_s", "is_current", "stalled")]),
    "journeys": pa.schema([JOURNEYS.field(n) for n in ("journey_id", "as_of_date", "customer_id", "segment", "status")]),
}
"""The columns stage metrics read: what a pipeline needs to ship to the step computing them."""


def stage_daily(journey_stages: pa.Table, journeys: pa.Table, journey: JourneyMap, as_of_date: date) -> pa.Table:
    """STAGE_DAILY rows of `as_of_date`: every stage x (its entry channel, or "*" = all) x
    (segment, or "*"; only "*" when the journey has no segment_field); a null segment is
    customers the CRM does not know. Counts are of
    customers (one journey per customer). reached_next = the stage's customers who afterwards
    entered a later stage of the map, conversion_rate = reached_next / reached (both null for
    the final stage; the rate also when nobody reached the stage);
    p50/p90 over the time in stage of customers who left it (null when none did)."""
    of_the_day = (pc.field("journey_id") == journey.id) & (pc.field("as_of_date") == as_of_date)
    tables = {"stages": journey_stages.select(STAGE_INPUTS["journey_stages"].names).filter(of_the_day),
              "journeys": journeys.select(STAGE_INPUTS["journeys"].names).filter(of_the_day), "map": _stage_map(journey)}
    params = {"journey_id": journey.id, "day": as_of_date, "by_segment": journey.segment_field is not None}
    out = query_tables(_SQL, tables, params)
    return out.cast(STAGE_DAILY)


def combine_stage_daily(journey_stages_parts: Sequence[pa.Table], journeys_parts: Sequence[pa.Table],
                        journey: JourneyMap, as_of_date: date) -> pa.Table:
    """STAGE_DAILY over several buckets: `stage_daily` of the concatenated parts (exact
    quantiles do not merge; the inputs are one row per customer and stage, so this is cheap)."""
    def concat(parts: Sequence[pa.Table], schema: pa.Schema) -> pa.Table:
        return pa.concat_tables([schema.empty_table(), *(t.select(schema.names).cast(schema) for t in parts)])

    return stage_daily(concat(journey_stages_parts, STAGE_INPUTS["journey_stages"]),
                       concat(journeys_parts, STAGE_INPUTS["journeys"]), journey, as_of_date)


def _stage_map(journey: JourneyMap) -> pa.Table:
    """stage_index, stage id and whether it is the final stage."""
    return pa.table({
        "stage_index": pa.array(range(len(journey.stages)), pa.int32()),
        "stage": pa.array(journey.stage_ids, pa.string()),
        "is_final": pa.array([k == len(journey.stages) - 1 for k in range(len(journey.stages))]),
    })
