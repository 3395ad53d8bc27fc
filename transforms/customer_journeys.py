"""Per customer: events (all channels, stitched) and the customer's CRM segment grouped by a
customer-hash bucket (a Beam join), then, per journey, touchpoint matching, sessions and the
journey instance with its stages, deviations and feedback — vectorized over the bucket."""
from __future__ import annotations

from datetime import date

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from journey_defs.model import JourneyMap
from transforms.buckets import bucket_of, split_by_bucket
from transforms.journeys import build_journeys
from transforms.match import off_map_counts, with_matches
from transforms.sessions import sessionize

OUTPUTS = ("sessions", "journeys", "journey_stages", "deviations", "feedback", "off_map")


class KeyByCustomerBucket(beam.DoFn):
    """(bucket, rows of that bucket) for each customer bucket present in a table."""

    def __init__(self, n_buckets: int):
        self.n_buckets = n_buckets

    def process(self, table: pa.Table):
        if table.num_rows:
            yield from split_by_bucket(table, bucket_of(table.column("customer_id"), self.n_buckets))


class BuildBucketJourneys(beam.DoFn):
    """All journeys of one bucket of customers; outputs keyed by a stable part name."""

    def __init__(self, journeys: tuple[JourneyMap, ...], as_of_date: date):
        self.journeys, self.as_of_date = journeys, as_of_date
        self.customers = Metrics.counter("journeys", "journey_instances")

    def process(self, element):
        bucket, grouped = element
        if not grouped["events"]:
            return
        events = pa.concat_tables(grouped["events"], promote_options="permissive")
        crm = grouped["segments"]
        segments = pa.concat_tables(crm).select(["customer_id", "segment"]) if crm else None
        for journey in self.journeys:
            part = f"{journey.id}-{bucket:05d}"
            matched = with_matches(events, journey)
            _, sessions = sessionize(events, journey.session_gap, journey.id)
            built = build_journeys(matched, journey, self.as_of_date, segments)
            self.customers.inc(built.journeys.num_rows)
            for name, table in (("sessions", sessions), ("journeys", built.journeys),
                                ("journey_stages", built.journey_stages), ("deviations", built.deviations),
                                ("feedback", built.feedback), ("off_map", off_map_counts(matched, journey))):
                yield beam.pvalue.TaggedOutput(name, (part, table))


class BuildJourneys(beam.PTransform):
    """Stitched events + CRM tables → sessions, journeys, journey_stages, deviations,
    feedback and off-map counts, each a PCollection of (part name, Arrow table)."""

    def __init__(self, journeys: tuple[JourneyMap, ...], as_of_date: date, n_buckets: int):
        super().__init__()
        self.journeys, self.as_of_date, self.n_buckets = journeys, as_of_date, n_buckets

    def expand(self, inputs):
        events, crm = inputs
        keyed_events = events | "KeyEvents" >> beam.ParDo(KeyByCustomerBucket(self.n_buckets))
        keyed_segments = (
            crm
            | "SegmentColumns" >> beam.Map(lambda t: t.select(["customer_id", "segment"]))
            | "KeySegments" >> beam.ParDo(KeyByCustomerBucket(self.n_buckets))
        )
        return (
            {"events": keyed_events, "segments": keyed_segments}
            | "GroupByCustomerBucket" >> beam.CoGroupByKey()
            | "BuildPerBucket" >> beam.ParDo(BuildBucketJourneys(self.journeys, self.as_of_date)).with_outputs(*OUTPUTS)
        )
