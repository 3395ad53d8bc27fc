"""Per customer: events (all channels, stitched) and the customer's CRM segment grouped by a
customer-hash bucket (a Beam join), then, per journey, touchpoint matching, sessions and the
journey instance with its stages, deviations and feedback — vectorized over the bucket."""
from __future__ import annotations

from datetime import date

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from journey_defs.canonical import CANONICAL_SCHEMA
from journey_defs.model import JourneyMap
from transforms.buckets import keyed_parts, unpack
from transforms.identity_map import identity_rows
from transforms.journeys import AsOf, build_journeys
from transforms.match import off_map_counts, with_matches
from transforms.sessions import sessionize

SEGMENTS = pa.schema([("customer_id", pa.string()), ("segment", pa.string())])

OUTPUTS = ("identities", "sessions", "journeys", "journey_stages", "deviations", "feedback", "off_map")


class KeyByCustomerBucket(beam.DoFn):
    """(bucket, rows of that bucket packed as Arrow IPC) for each customer bucket in a table:
    bytes cross the shuffle far cheaper than pickled tables."""

    def __init__(self, n_buckets: int, schema: pa.Schema):
        self.n_buckets, self.schema = n_buckets, schema

    def process(self, table: pa.Table):
        # One schema for every part, so a bucket's parts concatenate (nullability flags and
        # all-null columns differ between inputs otherwise).
        table = table.select(self.schema.names).cast(self.schema)
        yield from keyed_parts(table, table.column("customer_id"), self.n_buckets)


class BuildBucketJourneys(beam.DoFn):
    """All journeys of one bucket of customers; outputs keyed by a stable part name."""

    def __init__(self, journeys: tuple[JourneyMap, ...], as_of: AsOf):
        self.journeys, self.as_of = journeys, as_of
        self.customers = Metrics.counter("journeys", "journey_instances")

    def process(self, element, last_event=None):
        bucket, grouped = element
        as_of = self.as_of if last_event is None else self.as_of.with_clock(last_event)
        if not grouped["events"]:
            return
        events = unpack(grouped["events"])
        segments = unpack(grouped["segments"])
        # Each (identity, value, customer) row lives only in its customer's bucket, so the
        # bucket's distinct rows are the global ones: no separate pass over all events.
        yield beam.pvalue.TaggedOutput("identities", (f"{bucket:05d}", identity_rows(events)))
        for journey in self.journeys:
            part = f"{journey.id}-{bucket:05d}"
            matched = with_matches(events, journey)
            _, sessions = sessionize(events, journey.session_gap, journey.id)
            built = build_journeys(matched, journey, as_of, segments)
            self.customers.inc(built.journeys.num_rows)
            for name, table in (("sessions", sessions), ("journeys", built.journeys),
                                ("journey_stages", built.journey_stages), ("deviations", built.deviations),
                                ("feedback", built.feedback), ("off_map", off_map_counts(matched, journey))):
                yield beam.pvalue.TaggedOutput(name, (part, table))


class BuildJourneys(beam.PTransform):
    """Stitched events + CRM tables → the identity map, sessions, journeys, journey_stages,
    deviations, feedback and off-map counts, each a PCollection of (part name, Arrow table).
    `clock_at_last_event`: measure statuses at the last event that counts, over all buckets
    (a run over whole logs only: the log has ended, its clock does not run on to midnight)."""

    def __init__(self, journeys: tuple[JourneyMap, ...], as_of: AsOf | date, n_buckets: int,
                 clock_at_last_event: bool = False):
        super().__init__()
        self.journeys, self.n_buckets = journeys, n_buckets
        self.as_of = as_of if isinstance(as_of, AsOf) else AsOf.end_of(as_of)
        self.clock_at_last_event = clock_at_last_event

    def expand(self, inputs):
        events, crm = inputs
        keyed_events = events | "KeyEvents" >> beam.ParDo(KeyByCustomerBucket(self.n_buckets, CANONICAL_SCHEMA))
        keyed_segments = crm | "KeySegments" >> beam.ParDo(KeyByCustomerBucket(self.n_buckets, SEGMENTS))
        side = {}
        if self.clock_at_last_event:
            cutoff = self.as_of.cutoff
            side["last_event"] = beam.pvalue.AsSingleton(
                events | "LastEventTime" >> beam.Map(_last_before, cutoff)
                | "LastOfAll" >> beam.CombineGlobally(lambda times: max((t for t in times if t is not None), default=None)))
        return (
            {"events": keyed_events, "segments": keyed_segments}
            | "GroupByCustomerBucket" >> beam.CoGroupByKey()
            | "BuildPerBucket" >> beam.ParDo(BuildBucketJourneys(self.journeys, self.as_of), **side).with_outputs(*OUTPUTS)
        )


def _last_before(table: pa.Table, cutoff: int) -> int | None:
    """The latest event time (µs) before `cutoff` in a table of events, None if none."""
    ts = table.column("ts").cast(pa.int64())
    return pc.max(ts.filter(pc.less(ts, cutoff))).as_py()
