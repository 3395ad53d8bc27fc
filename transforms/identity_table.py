"""The CRM/identity table and the normalisation of the identities it maps (email, phone).

Why this module exists: identity stitching resolves emails and phone numbers through the CRM
export, so the CRM's values must be normalised exactly like the events' values. Both use the
SQL macros of sql_session; this module reads the identity source with the same format
readers as events and exposes the normalisation for Arrow arrays too.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from journey_defs.canonical import IDENTITY_TABLE_SCHEMA
from journey_defs.source_spec import SourceSpec
from transforms.raw_files import read_raw
from transforms.raw_records import read_records
from transforms.sql_session import connect

log = logging.getLogger(__name__)


def read_identity_table(spec: SourceSpec, path: str | Path) -> pa.Table:
    """The CRM/identity table, normalised (IDENTITY_TABLE_SCHEMA). Rows that are malformed or
    have no customer id carry no usable mapping; they are skipped with a warning."""
    if spec.kind != "identity":
        raise ValueError(f"source '{spec.name}' is not an identity source")
    records = read_records(spec, read_raw(path))
    cols = {key: f"f_{i}" for i, key in enumerate(spec.referenced_fields())}
    mapping = spec.identity_map
    pick = {k: (f"_nz({cols[mapping[k]]})" if k in mapping else "NULL::VARCHAR") for k in IDENTITY_TABLE_SCHEMA.names}
    con = connect()
    try:
        con.register("src", records.table)
        out = con.sql(
            f"""SELECT {pick['customer_id']} AS customer_id, _email({pick['email']}) AS email,
                       _phone({pick['phone']}) AS phone, {pick['segment']} AS segment
                FROM ({records.relation}) WHERE pre_reason IS NULL"""
        ).to_arrow_table()
    finally:
        con.close()
    kept = out.filter(pc.is_valid(out["customer_id"]))
    if kept.num_rows < records.table.num_rows:
        skipped = records.table.num_rows - kept.num_rows
        log.warning("%s: %d identity rows skipped (malformed or without customer_id)", path, skipped)
    return kept.cast(IDENTITY_TABLE_SCHEMA)


def normalize_email(values) -> pa.Array:
    """Emails trimmed and lower-cased; empty -> null."""
    return _normalize(values, "_email")


def normalize_phone(values) -> pa.Array:
    """Phones as '+' and digits only ('+44 (20) 7946-0001' -> '+442079460001'); no digits -> null."""
    return _normalize(values, "_phone")


def _normalize(values, macro: str) -> pa.Array:
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, pa.string())
    con = connect()
    try:
        con.register("a", pa.table({"v": arr}))
        out = con.sql(f"SELECT {macro}(v) AS v FROM a").to_arrow_table()["v"]
    finally:
        con.close()
    return out.combine_chunks().cast(pa.string())
