"""Analyst views over the warehouse tables: plain SQL, recreated by every publish.

Snapshot tables (journeys, journey_stages, feedback, off_map) hold one snapshot per as-of
day; the views that describe "now" read each journey's latest snapshot."""
from __future__ import annotations

import duckdb

VIEWS: dict[str, str] = {
    "funnel": """
        -- per journey / stage / as-of day: customers who entered that day, who ever reached
        -- the stage, who reached the next required stage, and the drop-off between them
        WITH s AS (
            SELECT d.journey_id, d.date, d.stage, d.stage_index, coalesce(m.optional, false) AS optional,
                   d.entered, d.reached, d.progressed, d.dropped, d.stalled, d.in_stage
            FROM stage_daily d LEFT JOIN journey_maps m USING (journey_id, stage)
            WHERE d.channel = '*' AND d.segment = '*')
        SELECT s.journey_id, s.date, s.stage, s.stage_index, s.optional, s.entered, s.reached,
               n.reached AS reached_next, s.progressed, s.dropped, s.stalled, s.in_stage,
               CASE WHEN s.reached > 0 AND n.reached IS NOT NULL THEN 1 - n.reached / s.reached END AS drop_off_rate
        FROM s LEFT JOIN LATERAL (
            SELECT r.reached FROM s AS r
            WHERE r.journey_id = s.journey_id AND r.date = s.date AND r.stage_index > s.stage_index AND NOT r.optional
            ORDER BY r.stage_index LIMIT 1) AS n ON true
        ORDER BY s.journey_id, s.date, s.stage_index""",
    "stalled_now": """
        -- customers stuck in a stage past its max_time_in_stage, as of each journey's latest run
        WITH latest AS (SELECT journey_id, max(as_of_date) AS as_of_date FROM journeys GROUP BY journey_id)
        SELECT j.journey_id, j.as_of_date, j.customer_id, j.segment, j.current_stage AS stage,
               j.current_stage_entered_at AS since, j.last_event_at AS last_contact_at,
               j.last_channel AS last_contact_channel,
               date_diff('hour', j.current_stage_entered_at, CAST(j.as_of_date + 1 AS TIMESTAMPTZ)) AS hours_in_stage
        FROM journeys j JOIN latest USING (journey_id, as_of_date)
        WHERE j.status = 'stalled'
        ORDER BY j.journey_id, since, j.customer_id""",
    "time_in_stage": """
        -- median and 90th percentile of the time customers spent in a stage before moving on
        SELECT journey_id, date, stage, stage_index, progressed AS customers_left,
               p50_time_in_stage_s / 3600 AS p50_hours, p90_time_in_stage_s / 3600 AS p90_hours
        FROM stage_daily WHERE channel = '*' AND segment = '*'
        ORDER BY journey_id, date, stage_index""",
    "off_map_events": """
        -- event types the map does not know, by volume, in each journey's latest run
        WITH latest AS (SELECT journey_id, max(partition_date) AS partition_date FROM off_map GROUP BY journey_id)
        SELECT o.journey_id, o.partition_date AS as_of_date, o.channel, o.event_type, o.n_events,
               o.n_events / sum(o.n_events) OVER (PARTITION BY o.journey_id) AS share_of_off_map
        FROM off_map o JOIN latest USING (journey_id, partition_date)
        ORDER BY o.journey_id, o.n_events DESC, o.channel, o.event_type""",
    "touchpoint_sentiment": """
        -- NPS / CSAT answers by the stage they belong to and the channel they came from, latest run;
        -- nps only for 0-10 answers: % promoters (9-10) minus % detractors (0-6)
        WITH latest AS (SELECT journey_id, max(as_of_date) AS as_of_date FROM feedback GROUP BY journey_id)
        SELECT f.journey_id, f.as_of_date, f.stage, f.channel, f.event_type, count(*) AS answers,
               avg(f.score) AS avg_score, min(f.score) AS min_score, max(f.score) AS max_score,
               CASE WHEN max(f.score) > 5 THEN
                   100.0 * (count(*) FILTER (WHERE f.score >= 9) - count(*) FILTER (WHERE f.score <= 6)) / count(*)
               END AS nps
        FROM feedback f JOIN latest USING (journey_id, as_of_date)
        WHERE f.score IS NOT NULL
        GROUP BY ALL ORDER BY f.journey_id, f.stage, f.channel, f.event_type""",
    "journey_paths": """
        -- real stage sequences (stages in the order customers first entered them), most frequent
        -- first, beside the intended one; follows_map: the path is the map's order so far,
        -- optional stages allowed to be skipped
        WITH latest AS (SELECT journey_id, max(as_of_date) AS as_of_date FROM journey_stages GROUP BY journey_id),
        paths AS (
            SELECT s.journey_id, s.customer_id,
                   string_agg(s.stage, ' > ' ORDER BY s.entered_at, s.stage_index) AS path,
                   list(s.stage_index ORDER BY s.entered_at, s.stage_index) AS indexes
            FROM journey_stages s JOIN latest USING (journey_id, as_of_date)
            GROUP BY s.journey_id, s.customer_id),
        intended AS (
            SELECT journey_id, string_agg(stage, ' > ' ORDER BY stage_index) AS intended_path,
                   list(stage_index ORDER BY stage_index) FILTER (WHERE NOT optional) AS required
            FROM journey_maps GROUP BY journey_id)
        SELECT p.journey_id, p.path, count(*) AS customers,
               count(*) / sum(count(*)) OVER (PARTITION BY p.journey_id) AS share,
               any_value(i.intended_path) AS intended_path,
               any_value(list_sort(p.indexes) = p.indexes
                         AND list_has_all(p.indexes, list_filter(i.required, lambda x: x <= list_max(p.indexes)))) AS follows_map
        FROM paths p LEFT JOIN intended i USING (journey_id)
        GROUP BY p.journey_id, p.path
        ORDER BY p.journey_id, customers DESC, p.path""",
}


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    for name, sql in VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
