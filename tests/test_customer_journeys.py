"""BuildJourneys on a real Beam runner: a customer's events split over several input tables
and buckets still form one journey, joined with the customer's CRM segment."""
from __future__ import annotations

from datetime import date

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from journey_defs.loader import BUILTIN_JOURNEYS, load_journey
from tests.helpers import canonical_events
from transforms.customer_journeys import BuildJourneys

RUNNER = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])
JOURNEY = load_journey(BUILTIN_JOURNEYS["subscription"])


def web(customer, ts, event_type, page=None):
    return {"customer_id": customer, "anonymous_id": f"a-{customer}", "channel": "web", "event_type": event_type,
            "ts": ts, "page": page}


def test_events_in_several_tables_make_one_journey_per_customer():
    first = canonical_events([web("C1", "2026-01-05 10:00", "page_view", "/pricing"),
                              web("C2", "2026-01-05 11:00", "page_view", "/")])
    second = canonical_events([web("C1", "2026-01-06 09:00", "signup_completed"),
                               web("C3", "2026-01-06 12:00", "video_played")]).set_column(
        0, "event_id", pa.array(["e100", "e101"]))
    crm = pa.table({"customer_id": ["C1", "C2"], "email": ["a@x", "b@x"], "phone": [None, None],
                    "segment": ["digital_native", "bargain_hunter"]})
    with BeamTestPipeline(options=RUNNER) as p:
        events = p | "Events" >> beam.Create([first, second])
        segments = p | "CRM" >> beam.Create([crm])
        built = (events, segments) | BuildJourneys((JOURNEY,), date(2026, 1, 6), n_buckets=3)
        journeys = built.journeys | beam.FlatMap(
            lambda kv: [(r["customer_id"], r["segment"], r["current_stage"], r["status"]) for r in kv[1].to_pylist()])
        assert_that(journeys, equal_to([("C1", "digital_native", "sign_up", "in_progress"),
                                        ("C2", "bargain_hunter", "discover", "in_progress")]), label="Journeys")
        sessions = built.sessions | "SessionCount" >> beam.Map(lambda kv: kv[1].num_rows) | beam.CombineGlobally(sum)
        assert_that(sessions, equal_to([4]), label="SessionsOfAllCustomers")  # C3 has a session but no journey
