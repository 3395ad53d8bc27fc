"""Analyst views over the warehouse tables: plain SQL, recreated by every publish.

Snapshot tables (journeys, journey_stages, feedback, off_map) hold one snapshot per as-of
day; the views that describe "now" read each journey's latest snapshot."""
from __future__ import annotations

import duckdb

VIEWS: dict[str, str] = {
    "runs": """
        -- one row per published run: its row accounting and its quality gate's outcome
        WITH files AS (
            SELECT run_id, any_value(as_of_date) AS as_of_date, count(*) FILTER (status <> 'skipped') AS files,
                   count(*) FILTER (status = 'skipped') AS skipped_files, sum(records) AS records,
                   sum(events) AS events, sum(bad_rows) AS bad_rows, sum(duplicates) AS duplicates,
                   bool_and(balanced) AS balanced
            FROM run_files GROUP BY run_id),
        checks AS (
            SELECT run_id, count(*) AS expectations,
                   count(*) FILTER (NOT success AND severity = 'warning') AS warnings,
                   string_agg(CASE WHEN NOT success AND severity = 'warning'
                                   THEN suite || ' ' || columns || ': ' || observed END, '; ') AS warning_details
            FROM run_checks GROUP BY run_id)
        SELECT f.*, coalesce(c.expectations, 0) AS expectations, coalesce(c.warnings, 0) AS warnings,
               c.warning_details
        FROM files f LEFT JOIN checks c USING (run_id)
        ORDER BY f.as_of_date, f.run_id""",
    "funnel": """
        -- per journey / stage / as-of day: customers who entered that day, who ever reached
        -- the stage, who of them went on to a later stage of the map, and the drop-off between
        -- (README, *Semantics*: optional stages are steps of their own; 0 <= drop-off <= 1)
        SELECT d.journey_id, d.date, d.stage, d.stage_index, coalesce(m.optional, false) AS optional,
               d.entered, d.reached, d.reached_next, d.progressed, d.dropped, d.stalled, d.in_stage,
               CASE WHEN d.reached > 0 AND d.reached_next IS NOT NULL THEN 1 - d.reached_next / d.reached END
                   AS drop_off_rate
        FROM stage_daily d LEFT JOIN journey_maps m USING (journey_id, stage)
        WHERE d.channel = '*' AND d.segment = '*'
        ORDER BY d.journey_id, d.date, d.stage_index""",
    "stalled_now": """
        -- customers stuck in a stage past its max_time_in_stage, as of each journey's latest
        -- run, with the contact handles the identity map knows; contactable customers first
        WITH latest AS (SELECT journey_id, max(as_of_date) AS as_of_date FROM journeys GROUP BY journey_id),
        handles AS (
            SELECT partition_date, customer_id,
                   min(value) FILTER (identity_key = 'user_id') AS user_id,
                   min(value) FILTER (identity_key = 'email') AS email,
                   min(value) FILTER (identity_key = 'phone') AS phone
            FROM identities WHERE partition_date IN (SELECT as_of_date FROM latest)
            GROUP BY ALL)
        SELECT j.journey_id, j.as_of_date, j.customer_id, j.segment, j.current_stage AS stage,
               j.current_stage_entered_at AS since, j.last_event_at AS last_contact_at,
               j.last_channel AS last_contact_channel, j.identified, h.user_id, h.email, h.phone,
               date_diff('microsecond', j.current_stage_entered_at, j.as_of_at) / 3.6e9 AS hours_in_stage
        FROM journeys j JOIN latest USING (journey_id, as_of_date)
        LEFT JOIN handles h ON h.partition_date = j.as_of_date AND h.customer_id = j.customer_id
        WHERE j.status = 'stalled'
        ORDER BY j.journey_id, (h.user_id IS NOT NULL OR h.email IS NOT NULL OR h.phone IS NOT NULL) DESC,
                 j.identified DESC, since, j.customer_id""",
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
        -- real sequences, most frequent first, beside the intended one: the stages in the order
        -- customers entered them, with the moves the map does not allow ('back to X' for a
        -- backtrack, 'skipped X' for a stage jumped over, 'late X' for a stage out of order);
        -- follows_map: no such move
        WITH latest AS (SELECT journey_id, max(as_of_date) AS as_of_date FROM journey_stages GROUP BY journey_id),
        steps AS (
            SELECT s.journey_id, s.customer_id, s.stage AS step, s.entered_at AS happened_at, s.stage_index AS tie, false AS deviates
            FROM journey_stages s JOIN latest USING (journey_id, as_of_date)
            UNION ALL
            SELECT d.journey_id, d.customer_id,
                   CASE d.kind WHEN 'backtrack' THEN 'back to ' WHEN 'out_of_order' THEN 'late ' ELSE 'skipped ' END
                       || d.stage, d.ts, 1000, true
            FROM deviations d JOIN latest USING (journey_id, as_of_date)
            WHERE d.kind IN ('backtrack', 'skipped_stage', 'out_of_order')),
        paths AS (
            SELECT journey_id, customer_id, string_agg(step, ' > ' ORDER BY happened_at, tie, step) AS path, bool_or(deviates) AS deviates
            FROM steps GROUP BY journey_id, customer_id),
        intended AS (
            SELECT journey_id, string_agg(stage || CASE WHEN optional THEN ' (optional)' ELSE '' END, ' > '
                                          ORDER BY stage_index) AS intended_path
            FROM journey_maps GROUP BY journey_id)
        SELECT p.journey_id, p.path, count(*) AS customers,
               count(*) / sum(count(*)) OVER (PARTITION BY p.journey_id) AS share,
               NOT any_value(p.deviates) AS follows_map, any_value(i.intended_path) AS intended_path
        FROM paths p LEFT JOIN intended i USING (journey_id)
        GROUP BY p.journey_id, p.path
        ORDER BY p.journey_id, customers DESC, p.path""",
}


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    for name, sql in VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
