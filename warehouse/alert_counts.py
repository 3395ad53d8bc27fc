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
from dataclasses import dataclass
from datetime import date

import duckdb
import numpy as np

DAY_US = 86_400 * 10**6
SLOTS = 6  # entry times of day compared apart (4 hours each): tonight's 23:00 entrant has had 1 hour
AGE_CAP = 21  # the oldest age compared: a horizon never reaches past three weeks
EPOCH = date(1970, 1, 1)

WHOLE = ("*", "*")
"""The (dimension, value) of a stage's own series; slices are ("channel", X), ("segment", X)."""


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


def read_counts(con: duckdb.DuckDBPyConnection, journey_id: str, final_stage: str, recent_days: int) -> Counts | None:
    """Everything alerting needs from the warehouse for one journey (None before any publish)."""
    nights = tuple(int(r[0]) for r in con.execute(
        "SELECT DISTINCT as_of_date - DATE '1970-01-01' FROM journey_stages WHERE journey_id = ? ORDER BY 1",
        [journey_id]).fetchall())
    if not nights:
        return None
    [(first_entry,)] = con.execute("SELECT min(epoch_us(entered_at)) // ? FROM journey_stages WHERE journey_id = ?",
                                   [DAY_US, journey_id]).fetchall()
    first_entry = int(first_entry)
    first, last = min(first_entry, nights[0] - AGE_CAP), nights[-1]
    rows = con.execute("""
        WITH s AS (
            SELECT as_of_date - DATE '1970-01-01' AS night, stage,
                   coalesce(entry_channel, '(unknown)') AS channel, coalesce(segment, '(unknown)') AS segment,
                   (as_of_date - DATE '1970-01-01') - epoch_us(entered_at) // $day AS age,
                   epoch_us(entered_at) % $day // $slot AS slot, left_at
            FROM journey_stages WHERE journey_id = $journey AND stage <> $final),
        r AS (SELECT night - age AS entry_night, * FROM s WHERE age >= 0 AND age < $ages)
        SELECT entry_night, stage, '*' AS dimension, '*' AS value, age, slot, count(*) AS n, count(left_at) AS moved
        FROM r GROUP BY ALL
        UNION ALL SELECT entry_night, stage, 'channel', channel, age, slot, count(*), count(left_at) FROM r GROUP BY ALL
        UNION ALL SELECT entry_night, stage, 'segment', segment, age, slot, count(*), count(left_at) FROM r GROUP BY ALL""",
                       {"journey": journey_id, "final": final_stage, "ages": AGE_CAP, "day": DAY_US,
                        "slot": DAY_US // SLOTS}).fetchnumpy()
    series: dict[tuple, np.ndarray] = {}
    entry = rows["entry_night"].astype(int) - first
    inside = (entry >= 0) & (entry <= last - first)
    labels = np.char.add(np.char.add(np.char.add(rows["stage"].astype(str), "\x1f"),
                                     np.char.add(rows["dimension"].astype(str), "\x1f")), rows["value"].astype(str))
    names, which = np.unique(labels[inside], return_inverse=True)
    entry, age, slot = entry[inside], rows["age"].astype(int)[inside], rows["slot"].astype(int)[inside]
    values = np.stack([rows["n"][inside], rows["moved"][inside]], axis=1).astype(float)
    for index, name in enumerate(names):
        mine = which == index
        counts = np.zeros((last - first + 1, AGE_CAP, SLOTS, 2))
        counts[entry[mine], age[mine], slot[mine]] = values[mine]
        series[tuple(name.split("\x1f"))] = counts
    published = np.zeros(last - first + 1 + AGE_CAP, dtype=bool)
    published[np.array(nights) - first] = True
    entry = np.arange(last - first + 1)[:, None]
    known = published[entry + np.arange(AGE_CAP)[None, :]]
    sla = dict(con.execute("SELECT stage, max_time_in_stage_s FROM journey_maps WHERE journey_id = ?",
                           [journey_id]).fetchall())
    p90 = con.execute("""
        SELECT as_of_date - DATE '1970-01-01', stage, quantile_cont(epoch(left_at) - epoch(entered_at), 0.9)
        FROM journey_stages WHERE journey_id = ? AND stage <> ? AND left_at IS NOT NULL GROUP BY ALL""",
                      [journey_id, final_stage]).fetchall()
    seen = {(int(n), stage): s for n, stage, s in p90}
    horizons = {(n, stage): horizon(recent_days, seen.get((n, stage)), sla.get(stage))
                for n in nights for stage in {k[0] for k in series}}
    return Counts(first, first_entry, nights, known, series, horizons)
