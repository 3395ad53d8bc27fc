"""The identity map as of a run: every identity value seen in the stitched events (new and
lookback) with the customer it resolves to now. Events published on earlier nights keep the
customer id known then; this table says who an anonymous id, address or number is today."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from journey_defs.canonical import IDENTITY_KEYS

IDENTITIES = pa.schema([("identity_key", pa.string()), ("value", pa.string()), ("customer_id", pa.string())])


def identity_rows(events: pa.Table) -> pa.Table:
    """Distinct (identity_key, value, customer_id) of one events table."""
    parts = []
    for key in IDENTITY_KEYS:
        present = events.filter(pc.is_valid(events.column(key)))
        parts.append(pa.table({
            "identity_key": pa.array([key] * present.num_rows, pa.string()),
            "value": present.column(key),
            "customer_id": present.column("customer_id"),
        }, schema=IDENTITIES))
    return _distinct(pa.concat_tables(parts))


def _distinct(table: pa.Table) -> pa.Table:
    return table.group_by(IDENTITIES.names, use_threads=False).aggregate([]).select(IDENTITIES.names)
