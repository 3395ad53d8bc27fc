"""What alerting reads from the published snapshots: each stage's entrants per entry night,
age and entry time of day, as known at each age, for the whole stage and for each entry
channel and segment; which nights were published; and each stage's horizon.

A customer's age in a stage is the number of nights since the night they entered it (0 =
tonight's). The counts at age a come from the snapshot published a nights after the entry
night, so events that arrive late and identities stitched later weigh the same for the
baseline's entrants and the recent ones. "Moved on" is the funnel's went-on: `left_at`, the
first entry of a later stage."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date

import duckdb
import numpy as np

from warehouse.tables import existing_tables

DAY_US = 86_400 * 10**6
SLOTS = 6  # entry times of day compared apart (4 hours each): tonight's 23:00 entrant has had 1 hour
AGE_CAP = 21  # the oldest age compared: a horizon never reaches past three weeks
EPOCH = date(1970, 1, 1)

WHOLE = ("*", "*")
"""The (dimension, value) of a stage's own series; slices are ("channel", X), ("segment", X)."""


def label(key: tuple) -> str:
    """A series key (stage, dimension, value) as one string (a JSON key, a sort key)."""
    return "\x1f".join(key)


def unlabel(text: str) -> tuple:
    return tuple(text.split("\x1f"))


@dataclass(frozen=True)
class Counts:
    """A journey's counts, nights as days since 1970."""

    first: int                          # the entry night of index 0
    first_entry: int                    # the night of the journey's first entry into any stage
    nights: tuple[int, ...]             # published nights, in order
    known: np.ndarray                   # [entry night - first, age]: the snapshot entry night + age is published
    series: dict[tuple, np.ndarray]     # (stage, dimension, value) -> [entry night - first, age, slot, (entrants, moved on)]
    horizons: dict[tuple[int, str], int]  # (night, stage) -> nights of age compared (see `horizon`)


def horizon(policy_days: int, p90_s: float | None, sla_s: float | None) -> int:
    """Ages compared for a stage: enough nights for 90% of its movers to have moved on (its
    observed p90 time in stage), or its SLA, whichever is longer; at least the journey's
    `recent_window`, at most AGE_CAP."""
    longest = max([s for s in (p90_s, sla_s) if s is not None and not math.isnan(s)], default=0.0)
    return int(min(AGE_CAP, max(policy_days, math.ceil(longest / 86_400) + 1)))


COUNTS_TABLE, STAGE_NIGHTS_TABLE = "alert_counts", "alert_stage_nights"
SUMMARY_TABLES = (COUNTS_TABLE, STAGE_NIGHTS_TABLE)
"""Per published night, what alerting reads of its `journey_stages` snapshot: written with the
night's partition (`summarize`), so a publish reads the nights' summaries, not every
snapshot's rows."""

_COUNTS_SQL = """
    WITH s AS (
        SELECT {key}, as_of_date - DATE '1970-01-01' AS night, stage,
               coalesce(entry_channel, '(unknown)') AS channel, coalesce(segment, '(unknown)') AS segment,
               (as_of_date - DATE '1970-01-01') - epoch_us(entered_at) // $day AS age,
               epoch_us(entered_at) % $day // $slot AS slot, left_at
        FROM {source}),
    r AS (SELECT night - age AS entry_night, * FROM s WHERE age >= 0 AND age < $ages)
    SELECT {key}, night, entry_night, stage, '*' AS dimension, '*' AS value, age, slot,
           count(*) AS n, count(left_at) AS moved FROM r GROUP BY ALL
    UNION ALL SELECT {key}, night, entry_night, stage, 'channel', channel, age, slot, count(*), count(left_at)
    FROM r GROUP BY ALL
    UNION ALL SELECT {key}, night, entry_night, stage, 'segment', segment, age, slot, count(*), count(left_at)
    FROM r GROUP BY ALL"""
"""Each stage's entrants per entry night, age and slot, and how many had moved on, as known
in each night's snapshot: the whole stage, each entry channel, each segment."""

_STAGE_NIGHTS_SQL = """
    SELECT {key}, as_of_date - DATE '1970-01-01' AS night, stage,
           quantile_cont(epoch(left_at) - epoch(entered_at), 0.9) FILTER (WHERE left_at IS NOT NULL) AS p90_s,
           min(epoch_us(entered_at)) // $day AS first_entry
    FROM {source} GROUP BY ALL"""
"""Per night and stage: the movers' p90 time in stage (the horizon) and the first entry night."""

_PARAMETERS = {"ages": AGE_CAP, "day": DAY_US, "slot": DAY_US // SLOTS}


def summarize(con: duckdb.DuckDBPyConnection, days: list[date] | None = None) -> None:
    """Write the summary tables' rows of the published `days` (every published day when None)
    from their `journey_stages` partitions, replacing what they held (the tables exist:
    warehouse.tables)."""
    where = "" if days is None else "WHERE partition_date IN (SELECT unnest($days::DATE[]))"
    chosen = {} if days is None else {"days": list(days)}
    source = f"(SELECT * FROM journey_stages {where})"
    for table, sql in ((COUNTS_TABLE, _COUNTS_SQL), (STAGE_NIGHTS_TABLE, _STAGE_NIGHTS_SQL)):
        _execute(con, f"DELETE FROM {table} {where}", chosen)
        _execute(con, f"INSERT INTO {table} BY NAME {sql.format(key='partition_date, journey_id', source=source)}",
                 chosen)


def unsummarized(con: duckdb.DuckDBPyConnection) -> list[date]:
    """Published days whose summaries are missing (a warehouse of an older version, or a
    generation it wrote, caught up with a newer one)."""
    return [d for d, in con.execute(f"SELECT DISTINCT partition_date FROM journey_stages EXCEPT "
                                    f"SELECT DISTINCT partition_date FROM {STAGE_NIGHTS_TABLE}").fetchall()]


def _execute(con: duckdb.DuckDBPyConnection, sql: str, parameters: dict) -> duckdb.DuckDBPyConnection:
    """Run with the named parameters the SQL uses (DuckDB refuses unused ones)."""
    values = {**_PARAMETERS, **parameters}
    return con.execute(sql, {name: values[name] for name in sorted(set(re.findall(r"\$(\w+)", sql)))})


def _sources(con: duckdb.DuckDBPyConnection) -> tuple[str, str]:
    """The summary tables, or (a database without them: a test's, an older warehouse opened
    read-only) the same summaries over every snapshot."""
    if set(SUMMARY_TABLES) <= existing_tables(con):
        return COUNTS_TABLE, STAGE_NIGHTS_TABLE
    return tuple(f"({sql.format(key='journey_id', source='journey_stages')})" for sql in (_COUNTS_SQL, _STAGE_NIGHTS_SQL))


def read_counts(con: duckdb.DuckDBPyConnection, journey_id: str, final_stage: str, recent_days: int,
                since: int | None = None, keys: tuple[tuple, ...] = ()) -> Counts | None:
    """Everything alerting needs from the warehouse for one journey (None before any publish).
    `since`: only the entry nights from this one on (a continued replay's window: `first`
    becomes it); `keys`: series to hold even without rows in that window."""
    counts_source, nights_source = _sources(con)
    stage_nights = _execute(con, f"SELECT night, stage, p90_s, first_entry FROM {nights_source} "
                                 "WHERE journey_id = $journey", {"journey": journey_id}).fetchall()
    if not stage_nights:
        return None
    nights = tuple(sorted({int(n) for n, *_ in stage_nights}))
    first_entry = int(min(f for *_, f in stage_nights if f is not None))
    first, last = min(first_entry, nights[0] - AGE_CAP), nights[-1]
    if since is not None:
        first = max(first, since)
    chosen = (f"FROM {counts_source} WHERE journey_id = $journey AND stage <> $final "
              "AND entry_night >= $first AND night >= $first")
    window = f"SELECT stage, dimension, value, entry_night, age, slot, sum(n) AS n, sum(moved) AS moved {chosen} GROUP BY ALL"
    parameters = {"journey": journey_id, "final": final_stage, "first": first}
    # the series numbered in SQL (in key order), so the rows come back as numbers only
    names = _execute(con, f"SELECT DISTINCT stage, dimension, value {chosen} ORDER BY ALL", parameters).fetchall()
    rows = _execute(con, f"""
        WITH r AS ({window}),
        k AS (SELECT *, row_number() OVER (ORDER BY stage, dimension, value) - 1 AS key
              FROM (SELECT DISTINCT stage, dimension, value FROM r))
        SELECT key, entry_night - $first AS entry, age, slot, n, moved FROM r JOIN k USING (stage, dimension, value)""",
                    parameters).fetchnumpy()
    series: dict[tuple, np.ndarray] = {key: np.zeros((last - first + 1, AGE_CAP, SLOTS, 2)) for key in keys}
    which, entry, age, slot = (rows[c].astype(np.int64) for c in ("key", "entry", "age", "slot"))
    values = np.stack([rows["n"], rows["moved"]], axis=1).astype(float)
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(len(names) + 1))
    for index, name in enumerate(names):
        mine = order[bounds[index]:bounds[index + 1]]
        counts = series.setdefault(tuple(name), np.zeros((last - first + 1, AGE_CAP, SLOTS, 2)))
        counts[entry[mine], age[mine], slot[mine]] = values[mine]
    series = dict(sorted(series.items(), key=lambda item: label(item[0])))
    published = np.zeros(last - first + 1 + AGE_CAP, dtype=bool)
    published[np.array([n for n in nights if n >= first]) - first] = True
    entry = np.arange(last - first + 1)[:, None]
    known = published[entry + np.arange(AGE_CAP)[None, :]]
    sla = dict(con.execute("SELECT stage, max_time_in_stage_s FROM journey_maps WHERE journey_id = ?",
                           [journey_id]).fetchall())
    seen = {(int(n), stage): p90 for n, stage, p90, _ in stage_nights if stage != final_stage}
    horizons = {(n, stage): horizon(recent_days, seen.get((n, stage)), sla.get(stage))
                for n in nights for stage in {k[0] for k in series}}
    return Counts(first, first_entry, nights, known, series, horizons)
