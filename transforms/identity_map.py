"""The identity map as of a run: every identity value seen in the stitched events (new and
lookback) of each source with the customer it resolves to now. Events published on earlier nights keep the
customer id known then; this table says who an anonymous id, address or number is today."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from journey_defs.canonical import IDENTITY_KEYS
from journey_defs.outputs import IDENTITIES


def identity_rows(events: pa.Table) -> pa.Table:
    """Distinct (identity_key, value, customer_id, source) of one events table: per source, so
    a run that reads some sources replaces only their identity rows in the lake."""
    parts = []
    for key in IDENTITY_KEYS:
        present = events.filter(pc.is_valid(events.column(key)))
        parts.append(pa.table({
            "identity_key": pa.array([key] * present.num_rows, pa.string()),
            "value": present.column(key),
            "customer_id": present.column("customer_id"),
            "source": present.column("source"),
        }, schema=IDENTITIES))
    return _distinct(pa.concat_tables(parts))


def _distinct(table: pa.Table) -> pa.Table:
    return table.group_by(IDENTITIES.names, use_threads=False).aggregate([]).select(IDENTITIES.names)
