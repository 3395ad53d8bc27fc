"""Identity stitching: every event gets its `customer_id`, and exact duplicates are removed.

Why this module exists: one customer shows up under a web anonymous id, a user id, an
email address and a phone number; every later step (sessions, journeys) needs them as one
customer. An event's customer is, in priority order:
  1. its `user_id`;
  2. the user its `anonymous_id` is linked to: an anonymous id is linked when some event
     carries it together with a user id (earlier anonymous events join the customer who
     logged in later); with several user ids the smallest wins, counted as a conflict;
  3. the CRM customer with its `email`, then 4. with its `phone` (several: smallest id,
     counted);
  5. else it stays its own unresolved customer: `anonymous_id:<v>`, else `email:<v>`,
     else `phone:<v>`. Never dropped, always counted.
An empty string counts as absent, like null. Among events with the same `event_id` the
first by (source_date, nulls first; source_file; source_line) is kept; the others are
duplicates, counted per source file of the dropped copy.

The pure functions below do each step on Arrow tables (`stitch` composes them in memory,
the reference the Beam transform is tested against); `StitchIdentities` runs them as a Beam
join that scales past one worker's memory. See the class for the shuffles it does.
"""
from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from journey_defs.canonical import CANONICAL_SCHEMA, IDENTITY_KEYS, unresolved_customer_id
from journey_defs.outputs import DUPLICATES as DUPLICATES_SCHEMA
from transforms.buckets import keyed_parts, pack, unpack

__all__ = [
    "RESOLUTIONS", "LOOKUPS", "CONFLICTS", "STATS", "DUPLICATES_SCHEMA", "TUPLE_KEYS", "TUPLES_SCHEMA",
    "Stitched", "stitch", "link_pairs", "resolve_links", "crm_index", "index_of", "identity_tuples", "lookup",
    "finish_tuples", "assign_customers", "drop_duplicates", "StitchResult", "StitchIdentities",
]

RESOLUTIONS = ("user_id", "linked_anonymous", "crm_email", "crm_phone",
               "unresolved_anonymous_id", "unresolved_email", "unresolved_phone")
"""How an event got its customer_id (stats count events, after dedupe, by these)."""

LOOKUPS = (("anonymous_id", "linked_anonymous", "link_conflicts"),
           ("email", "crm_email", "crm_email_conflicts"),
           ("phone", "crm_phone", "crm_phone_conflicts"))
"""(key, resolution, conflicts stat) of the lookups after user_id, in priority order.
Conflicts: anonymous ids linked to several user ids; emails / phones of several CRM customers."""

CONFLICTS = tuple(conflicts for _, _, conflicts in LOOKUPS)

STATS = RESOLUTIONS + CONFLICTS + ("duplicates",)
"""Every name the stats output carries (0 when nothing happened)."""

TUPLE_KEYS = ("anonymous_id", "email", "phone")
"""The identity of an event without user_id; `identity_tuples` rows are distinct on these."""

TUPLES_SCHEMA = pa.schema([(name, pa.string()) for name in (*TUPLE_KEYS, "customer_id", "resolution")])
"""Identity tuples ('' = absent) and, once looked up and finished, their customer."""

_NAMESPACE = "identity"


class Stitched(NamedTuple):
    """In-memory result: events with customer_id, duplicates per file, STATS counts."""

    events: pa.Table
    duplicates: pa.Table
    stats: dict[str, int]


# --- pure functions -------------------------------------------------------------------
def _identity_frame(table: pa.Table, keys=IDENTITY_KEYS) -> pa.Table:
    """The identity columns with '' for absent: joins and group-bys then need no null logic."""
    return pa.table({k: pc.fill_null(table[k], "") for k in keys})


def _bucket_key(frame: pa.Table) -> pa.ChunkedArray:
    """First present identity of each row (user_id, anonymous_id, email, phone): the same
    for an event, its copies and its `identity_tuples` row, so they meet in one bucket."""
    names = [k for k in IDENTITY_KEYS if k in frame.column_names]
    key = frame[names[-1]]
    for name in reversed(names[:-1]):
        key = pc.if_else(pc.not_equal(frame[name], ""), frame[name], key)
    return key


def _replace(table: pa.Table, **columns) -> pa.Table:
    """`table` with the named columns' values replaced (same fields)."""
    for name, values in columns.items():
        index = table.schema.get_field_index(name)
        table = table.set_column(index, table.schema.field(index), values)
    return table


def _distinct(table: pa.Table, keys) -> pa.Table:
    return table.group_by(list(keys), use_threads=False).aggregate([])


def link_pairs(events: pa.Table) -> pa.Table:
    """Distinct (anonymous_id, user_id) carried together by an event."""
    frame = _identity_frame(events, ("anonymous_id", "user_id"))
    both = pc.and_(pc.not_equal(frame["anonymous_id"], ""), pc.not_equal(frame["user_id"], ""))
    return _distinct(frame.filter(both), ["anonymous_id", "user_id"])


def _smallest_per_key(table: pa.Table, key: str, value: str) -> tuple[pa.Table, int]:
    """(key, customer_id = smallest value) per key, and how many keys had several values."""
    grouped = table.group_by(key).aggregate([(value, "min"), (value, "count_distinct")])
    conflicts = int(pc.sum(pc.greater(grouped[f"{value}_count_distinct"], 1)).as_py() or 0)
    return pa.table({key: grouped[key], "customer_id": grouped[f"{value}_min"]}), conflicts


def resolve_links(pairs: pa.Table) -> tuple[pa.Table, int]:
    """Link pairs -> (anonymous_id, customer_id = smallest user_id), and the conflict count."""
    return _smallest_per_key(pairs, "anonymous_id", "user_id")


def crm_index(crm: pa.Table, key: str) -> tuple[pa.Table, int]:
    """CRM rows -> (key, customer_id = smallest) for key 'email' or 'phone', and how many
    values belong to several customers."""
    return _smallest_per_key(_crm_rows(crm, key), key, "customer_id")


def _crm_rows(crm: pa.Table, key: str) -> pa.Table:
    """(key, customer_id) of the CRM rows that have a `key`."""
    return crm.filter(pc.not_equal(pc.fill_null(crm[key], ""), "")).select([key, "customer_id"])


def index_of(rows: pa.Table, key: str) -> tuple[pa.Table, int]:
    """The (key, customer_id) index of a LOOKUPS key from its rows (link pairs for
    anonymous_id, CRM rows for email and phone), and its conflict count."""
    return resolve_links(rows) if key == "anonymous_id" else crm_index(rows, key)


def identity_tuples(events: pa.Table) -> pa.Table:
    """Distinct (anonymous_id, email, phone) of events without user_id ('' = absent), with
    customer_id and resolution still null: what `lookup` and `finish_tuples` fill."""
    frame = _identity_frame(events)
    tuples = _distinct(frame.filter(pc.equal(frame["user_id"], "")), TUPLE_KEYS)
    unknown = pa.nulls(tuples.num_rows, pa.string())
    return tuples.append_column("customer_id", unknown).append_column("resolution", unknown).cast(TUPLES_SCHEMA)


def lookup(tuples: pa.Table, index: pa.Table, key: str, resolution: str) -> pa.Table:
    """Fill customer_id (and resolution) of still-unresolved tuples whose `key` is in
    `index` (key, customer_id). Row order is not kept."""
    found = index.rename_columns([key, "_found"])
    joined = tuples.join(found, keys=key, join_type="left outer", use_threads=False)
    fill = pc.and_(pc.is_null(joined["customer_id"]), pc.is_valid(joined["_found"]))
    return _replace(joined.drop_columns("_found"),
                    customer_id=pc.if_else(fill, joined["_found"], joined["customer_id"]),
                    resolution=pc.if_else(fill, pa.scalar(resolution), joined["resolution"]))


def finish_tuples(tuples: pa.Table) -> pa.Table:
    """Give each still-unresolved tuple its own customer: `anonymous_id:<v>`, else
    `email:<v>`, else `phone:<v>`. A tuple with no identity at all is an error (parse
    rejects such records)."""
    customer = tuples["customer_id"].to_pylist()
    resolution = tuples["resolution"].to_pylist()
    values = {k: tuples[k].to_pylist() for k in TUPLE_KEYS}
    for i in (i for i, c in enumerate(customer) if c is None):
        key = next((k for k in TUPLE_KEYS if values[k][i]), None)
        if key is None:
            raise ValueError("an event has no identity at all (no user_id, anonymous_id, email or phone)")
        customer[i], resolution[i] = unresolved_customer_id(key, values[key][i]), f"unresolved_{key}"
    return _replace(tuples, customer_id=pa.array(customer, pa.string()), resolution=pa.array(resolution, pa.string()))


def assign_customers(events: pa.Table, tuples: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """Events with customer_id set: their user_id, else their identity tuple's customer from
    finished `tuples` (which must hold every tuple of `events`); and events per resolution."""
    frame = _identity_frame(events)
    has_user = pc.not_equal(frame["user_id"], "").to_numpy()
    counts = dict.fromkeys(RESOLUTIONS, 0)
    counts["user_id"] = int(has_user.sum())
    customer = pc.if_else(pa.array(has_user), events["user_id"], pa.scalar(None, pa.string())).combine_chunks()
    rows = np.flatnonzero(~has_user)
    if len(rows):
        keys = frame.take(pa.array(rows)).select(TUPLE_KEYS).append_column("_row", pa.array(rows))
        found = keys.join(tuples.select([*TUPLE_KEYS, "customer_id", "resolution"]), keys=list(TUPLE_KEYS),
                          join_type="left outer", use_threads=False).sort_by("_row")
        if found.num_rows != len(rows) or found["customer_id"].null_count:
            raise RuntimeError("identity tuples are missing or repeated for some events")
        customer = pc.replace_with_mask(customer, pa.array(~has_user), found["customer_id"].combine_chunks())
        kinds = pc.value_counts(found["resolution"])
        counts.update(zip(kinds.field("values").to_pylist(), kinds.field("counts").to_pylist()))
    return _replace(events, customer_id=customer), counts


def drop_duplicates(events: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Keep the first event per event_id by (source_date nulls first, source_file,
    source_line), input order kept; the dropped copies counted per source_file
    (DUPLICATES_SCHEMA). Exact: the same record always has the same event_id."""
    ids = events["event_id"]
    per_id = pa.table({"event_id": ids}).group_by("event_id").aggregate([([], "count_all")])
    repeated = per_id.filter(pc.greater(per_id["count_all"], 1))["event_id"]
    if len(repeated) == 0:
        return events, DUPLICATES_SCHEMA.empty_table()
    rows = np.flatnonzero(pc.is_in(ids, value_set=repeated.combine_chunks()).to_numpy(zero_copy_only=False))
    copies = events.select(["event_id", "source_date", "source_file", "source_line"]).take(pa.array(rows))
    copies = copies.append_column("_row", pa.array(rows)).sort_by([
        ("source_date", "ascending", "at_start"), ("source_file", "ascending", "at_end"),
        ("source_line", "ascending", "at_end"), ("_row", "ascending", "at_end"),
    ])
    first = copies.group_by("event_id", use_threads=False).aggregate([("_row", "first")])["_row_first"]
    dropped = np.setdiff1d(rows, first.to_numpy())
    keep = np.ones(events.num_rows, dtype=bool)
    keep[dropped] = False
    per_file = pc.value_counts(events["source_file"].take(pa.array(dropped)))
    duplicates = pa.table({"source_file": per_file.field("values"), "n_duplicates": per_file.field("counts")})
    return events.filter(pa.array(keep)), duplicates.sort_by("source_file").cast(DUPLICATES_SCHEMA)


def stitch(events: pa.Table, crm: pa.Table) -> Stitched:
    """All of it in memory: the reference `StitchIdentities` equals (for tests and small inputs)."""
    stats = dict.fromkeys(STATS, 0)
    rows = {"anonymous_id": link_pairs(events), "email": crm, "phone": crm}
    tuples = identity_tuples(events)
    for key, resolution, conflicts in LOOKUPS:
        index, stats[conflicts] = index_of(rows[key], key)
        tuples = lookup(tuples, index, key, resolution)
    kept, duplicates = drop_duplicates(events)
    out, counts = assign_customers(kept, finish_tuples(tuples))
    stats.update(counts, duplicates=events.num_rows - kept.num_rows)
    return Stitched(out, duplicates, stats)


# --- Beam -----------------------------------------------------------------------------
class StitchResult(NamedTuple):
    """`events`: Arrow tables (CANONICAL_SCHEMA) with customer_id, duplicates removed;
    `duplicates`: one Arrow table (DUPLICATES_SCHEMA); `stats`: (name, count) for every
    name in STATS."""

    events: beam.PCollection
    duplicates: beam.PCollection
    stats: beam.PCollection


def _count(name: str, n: int) -> beam.pvalue.TaggedOutput:
    """Bump the Metrics counter `name` and emit the same count as a stats row."""
    Metrics.counter(_NAMESPACE, name).inc(n)
    return beam.pvalue.TaggedOutput("stats", (name, n))


class _SplitEvents(beam.DoFn):
    """Event batch (a table or a packed one) -> main: (bucket of first present identity,
    packed events), the one shuffle of full events; 'pairs': (bucket of anonymous_id, packed
    distinct link pairs); 'tuples': its packed `identity_tuples`. One pass, one unpack.
    Batches from different readers (parse, the lake) may differ in nullability flags or
    metadata, and a bucket concatenates them: each is made canonical."""

    def __init__(self, n_buckets: int):
        self.n_buckets = n_buckets

    def process(self, batch):
        events = unpack([batch]) if isinstance(batch, bytes) else batch
        if not events.schema.equals(CANONICAL_SCHEMA, check_metadata=True):
            events = events.select(CANONICAL_SCHEMA.names).cast(CANONICAL_SCHEMA)
        yield from keyed_parts(events, _bucket_key(_identity_frame(events)), self.n_buckets)
        pairs = link_pairs(events)
        for keyed in keyed_parts(pairs, pairs["anonymous_id"], self.n_buckets):
            yield beam.pvalue.TaggedOutput("pairs", keyed)
        tuples = identity_tuples(events)
        if tuples.num_rows:
            yield beam.pvalue.TaggedOutput("tuples", pack(tuples))


class _KeyCrm(beam.DoFn):
    """CRM batch -> (bucket of email or phone, packed (key, customer_id) rows that have one)."""

    def __init__(self, key: str, n_buckets: int):
        self.key, self.n_buckets = key, n_buckets

    def process(self, crm: pa.Table):
        rows = _crm_rows(crm, self.key)
        yield from keyed_parts(rows, rows[self.key], self.n_buckets)


class _RouteTuples(beam.DoFn):
    """Packed tuples still unresolved that have `key` -> (bucket of key, packed tuples) for
    the join; the others pass by, packed, on the 'skip' output."""

    def __init__(self, key: str, n_buckets: int):
        self.key, self.n_buckets = key, n_buckets

    def process(self, payload: bytes):
        tuples = unpack([payload])
        join = pc.and_(pc.is_null(tuples["customer_id"]), pc.not_equal(tuples[self.key], ""))
        joining = tuples.filter(join)
        yield from keyed_parts(joining, joining[self.key], self.n_buckets)
        if joining.num_rows < tuples.num_rows:
            yield beam.pvalue.TaggedOutput("skip", pack(tuples.filter(pc.invert(join))))


class _Lookup(beam.DoFn):
    """(bucket, {tuples, index}) -> the bucket's distinct tuples looked up in its index
    (link pairs or CRM rows), packed; counts the index's conflicts (a key lives in one
    bucket, so it is counted once)."""

    def __init__(self, key: str, resolution: str, conflicts: str):
        self.key, self.resolution, self.conflicts = key, resolution, conflicts

    def process(self, element):
        _, grouped = element
        rows = unpack(grouped["index"])
        index = None
        if rows is not None:
            index, conflicts = index_of(rows, self.key)
            if conflicts:
                yield _count(self.conflicts, conflicts)
        tuples = unpack(grouped["tuples"])
        if tuples is not None:
            tuples = _distinct_tuples(tuples)
            yield pack(tuples if index is None else lookup(tuples, index, self.key, self.resolution))


def _distinct_tuples(tuples: pa.Table) -> pa.Table:
    """Copies of one tuple from several batches, resolved alike, kept once."""
    return tuples.group_by(list(TUPLE_KEYS), use_threads=False).aggregate(
        [("customer_id", "first"), ("resolution", "first")]).rename_columns(TUPLES_SCHEMA.names)


class _KeyFinishedTuples(beam.DoFn):
    """Packed looked-up tuples -> finished, keyed like their events (`_SplitEvents`)."""

    def __init__(self, n_buckets: int):
        self.n_buckets = n_buckets

    def process(self, payload: bytes):
        finished = finish_tuples(unpack([payload]))
        yield from keyed_parts(finished, _bucket_key(finished.select(TUPLE_KEYS)), self.n_buckets)


class _AssignAndDedupe(beam.DoFn):
    """(bucket, {events, tuples}) -> the bucket's events deduplicated, with customer_id;
    (source_file, n) duplicates and resolution counts on side outputs."""

    def process(self, element):
        _, grouped = element
        events = unpack(grouped["events"])
        if events is None:
            return
        kept, duplicates = drop_duplicates(events)
        out, counts = assign_customers(kept, unpack(grouped["tuples"], TUPLES_SCHEMA))
        yield out
        if duplicates.num_rows:
            yield _count("duplicates", events.num_rows - kept.num_rows)
            for source_file, n in zip(duplicates["source_file"].to_pylist(), duplicates["n_duplicates"].to_pylist()):
                yield beam.pvalue.TaggedOutput("duplicates", (source_file, n))
        for name, n in counts.items():
            if n:
                yield _count(name, n)


def _duplicates_table(per_file: list[tuple[str, int]]) -> pa.Table:
    per_file = sorted(per_file)
    return pa.table({"source_file": [f for f, _ in per_file], "n_duplicates": [n for _, n in per_file]},
                    schema=DUPLICATES_SCHEMA)


class StitchIdentities(beam.PTransform):
    """PCollection of event tables (CANONICAL_SCHEMA; plain or packed) -> StitchResult, resolved through the
    PCollection of CRM tables `crm` (IDENTITY_TABLE_SCHEMA), with `n_buckets` keys per shuffle.

    A join, not a side input: no worker holds all identities. Narrow distinct tables move
    through three joins, one per key kind (CoGroupByKey by bucket of the key): the distinct
    identity tuples of events without user_id meet the link pairs by anonymous_id, then the
    still-unresolved ones the CRM by email, then by phone; resolved tuples skip later joins.
    Full events move once: keyed by bucket of their first present identity, they meet their
    finished tuples there, get customer_id and are deduplicated in the same bucket (copies
    of an event are the same record, so they carry the same identities). Tables cross the
    shuffles packed as Arrow IPC bytes. More buckets spread the work over more workers but
    cost per part (each input batch is cut into up to n_buckets parts per shuffle).
    """

    def __init__(self, crm: beam.PCollection, n_buckets: int):
        super().__init__()
        if n_buckets < 1:
            raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
        self.crm, self.n_buckets = crm, n_buckets

    def expand(self, events):
        n = self.n_buckets
        split = events | "Split events" >> beam.ParDo(_SplitEvents(n)).with_outputs("pairs", "tuples", main="events")
        index_rows = {
            "anonymous_id": split.pairs,
            "email": self.crm | "Key CRM by email" >> beam.ParDo(_KeyCrm("email", n)),
            "phone": self.crm | "Key CRM by phone" >> beam.ParDo(_KeyCrm("phone", n)),
        }
        tuples = split.tuples
        stats = []
        for key, resolution, conflicts in LOOKUPS:
            routed = tuples | f"Route by {key}" >> beam.ParDo(_RouteTuples(key, n)).with_outputs("skip", main="join")
            looked_up = (
                {"tuples": routed.join, "index": index_rows[key]}
                | f"Join by {key}" >> beam.CoGroupByKey()
                | f"Look up {key}" >> beam.ParDo(_Lookup(key, resolution, conflicts)).with_outputs(
                    "stats", main="tuples")
            )
            stats.append(looked_up.stats)
            tuples = (looked_up.tuples, routed.skip) | f"After {key}" >> beam.Flatten()
        stitched = (
            {"events": split.events,
             "tuples": tuples | "Finish tuples" >> beam.ParDo(_KeyFinishedTuples(n))}
            | "Join events" >> beam.CoGroupByKey()
            | "Assign and dedupe" >> beam.ParDo(_AssignAndDedupe()).with_outputs("duplicates", "stats", main="events")
        )
        zeros = events.pipeline | "Zero stats" >> beam.Create([(name, 0) for name in STATS])
        return StitchResult(
            events=stitched.events,
            duplicates=(stitched.duplicates | "Sum per file" >> beam.CombinePerKey(sum)
                        | "All files" >> beam.combiners.ToList() | "As table" >> beam.Map(_duplicates_table)),
            stats=((*stats, stitched.stats, zeros) | "All stats" >> beam.Flatten()
                   | "Sum stats" >> beam.CombinePerKey(sum)),
        )
