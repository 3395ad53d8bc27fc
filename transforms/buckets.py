"""Stable hash buckets: the group an Arrow row is keyed by in a Beam grouping step.

Why this module exists: grouping steps (identity stitching, sessionizing) key Arrow tables
by bucket, and two rows meant to meet (an event and its identity, the copies of an event)
must land in the same bucket in every batch, process, machine and run. Python's `hash` is
salted per process and DuckDB's or Arrow's `hash()` may change between versions, so the
hash is defined here, on the value's UTF-8 bytes read as little-endian 64-bit words with
fixed constants, in numpy: ~8 M values/s and no fixed cost per call (DuckDB's md5_number
measured ~4x slower per batch, most of it ~2 ms of query overhead per call). Tests pin
its values.

Parts cross a shuffle as Arrow IPC bytes (`pack`/`unpack`), not as pickled tables: Beam
pickles objects it has no coder for, and pickling a table costs ~0.8 ms however small it
is (IPC: ~0.04 ms) and copies a slice's whole parent buffers (IPC writes the slice only).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pyarrow as pa

__all__ = ["stable_hash", "bucket_of", "split_by_bucket", "keyed_parts", "pack", "unpack"]

_U64 = np.uint64
_SEED, _K1, _K2 = _U64(0x94D049BB133111EB), _U64(0x9E3779B97F4A7C15), _U64(0xBF58476D1CE4E5B9)


def stable_hash(values: pa.Array | pa.ChunkedArray | pa.Table) -> np.ndarray:
    """uint64 hash of each value's text (null hashes as ''); of a table, each row's
    column hashes combined in column order."""
    if isinstance(values, pa.Table):
        combined = np.full(values.num_rows, _SEED, dtype=np.uint64)
        for column in values.columns:
            combined = _fmix((combined * _K1) ^ stable_hash(column))
        return combined
    return _text_hash(values)


def _text_hash(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per value: h = seed ^ length*K1; for each 8-byte little-endian word w (the last one
    zero-padded): h = (h ^ xorshift(w*K2)) * K1; then a murmur3 finaliser."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if not pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.large_string())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    data = arr.buffers()[2]
    text = np.zeros(offsets[-1] - offsets[0] + 8, dtype=np.uint8)  # +8: every word read stays inside
    if data is not None:
        text[:-8] = np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]]
    words = np.ndarray(shape=(len(text) - 7,), dtype="<u8", buffer=text, strides=(1,))  # a word at every byte
    starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
    if arr.null_count:
        lengths = np.where(arr.is_null().to_numpy(zero_copy_only=False), 0, lengths)
    with np.errstate(over="ignore"):
        h = _SEED ^ (lengths.astype(np.uint64) * _K1)
        rows, at = np.flatnonzero(lengths > 0), 0
        while len(rows):
            left = lengths[rows] - at
            w = words[starts[rows] + at]
            w = np.where(left < 8, w & ((_U64(1) << (_U64(8) * np.minimum(left, 7).astype(np.uint64))) - _U64(1)), w)
            w *= _K2
            w ^= w >> _U64(31)
            h[rows] = (h[rows] ^ w) * _K1
            rows, at = rows[left > 8], at + 8
        return _fmix(h)


def _fmix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: every input bit affects every output bit."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> _U64(33))
        h = h * _U64(0xFF51AFD7ED558CCD)
        h = h ^ (h >> _U64(33))
        h = h * _U64(0xC4CEB9FE1A85EC53)
        return h ^ (h >> _U64(33))


def bucket_of(values: pa.Array | pa.ChunkedArray | pa.Table, n_buckets: int) -> np.ndarray:
    """Bucket (0 .. n_buckets-1, int64) of each value or table row, from `stable_hash`."""
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
    return (stable_hash(values) % _U64(n_buckets)).astype(np.int64)


def split_by_bucket(table: pa.Table, buckets: np.ndarray) -> list[tuple[int, pa.Table]]:
    """(bucket, its rows in input order) for each bucket present, ascending. Each part is a
    compact copy, not a slice: a pickled slice would carry its parent's whole buffers."""
    order, parts = _bucket_runs(table, buckets)
    return [(b, table.take(pa.array(order[s:e]))) for b, s, e in parts]


def keyed_parts(table: pa.Table, key: pa.Array | pa.ChunkedArray | pa.Table, n_buckets: int) -> list[tuple[int, bytes]]:
    """(bucket, packed rows) of `table` by the bucket of `key` (one value per row): what a
    DoFn yields before a GroupByKey. Nothing for an empty table. One reordering copy, then
    slices (IPC writes only a slice's rows; a take per part costs ~0.1 ms each)."""
    if table.num_rows == 0:
        return []
    order, parts = _bucket_runs(table, bucket_of(key, n_buckets))
    ordered = table.take(pa.array(order))
    return [(b, pack(ordered.slice(s, e - s))) for b, s, e in parts]


def _bucket_runs(table: pa.Table, buckets: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Row order grouping the buckets (stable), and (bucket, start, end) in that order."""
    if len(buckets) != table.num_rows:
        raise ValueError(f"{len(buckets)} buckets for {table.num_rows} rows")
    order = np.argsort(buckets, kind="stable")
    present, starts = np.unique(buckets[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    return order, [(int(b), int(s), int(e)) for b, s, e in zip(present, starts, ends)]


_PACK_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


def pack(table: pa.Table) -> bytes:
    """A table as LZ4-compressed Arrow IPC stream bytes (Beam moves bytes without
    pickling). LZ4 packs event tables to ~30% of their size and is faster than writing them
    uncompressed (less to copy), and every shuffle buffer the runner holds shrinks alike."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_PACK_OPTIONS) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def unpack(payloads: Iterable[bytes], schema: pa.Schema | None = None) -> pa.Table | None:
    """The packed tables as one table of single-chunk columns (compute kernels and pickling
    pay per chunk, and a group gathers many parts); `schema`'s empty table, or None
    without one, when there are none."""
    tables = [pa.ipc.open_stream(pa.py_buffer(p)).read_all() for p in payloads]
    if not tables:
        return schema.empty_table() if schema is not None else None
    return pa.concat_tables(tables).combine_chunks()
