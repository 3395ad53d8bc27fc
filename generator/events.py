"""A columnar collector for generated events: blocks of numpy arrays, one column per field."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

# column -> (numpy dtype, fill value for blocks that do not set it)
COLUMNS = {
    "cust": (np.int64, -1),           # customer index; -1 for identities outside the population
    "ts": (np.float64, np.nan),       # µs since the epoch, UTC
    "source": (object, None),
    "event_type": (object, None),
    "role": (object, None),           # stage | skip | filler | ignored | detour | backtrack | off_map | exit | feedback | noise
    "stage": (np.int64, -1),          # the stage the role refers to
    "page": (object, None),
    "campaign": (object, None),
    "queue": (object, None),
    "topic": (object, None),
    "disposition": (object, None),
    "score": (np.float64, np.nan),
    "duration_s": (np.float64, np.nan),
    "device": (np.int64, 0),          # 0: first browser (anon id 1), 1: second device (anon id 2)
    "chat_email": (bool, False),      # the chat visitor typed an e-mail address
    "conversation": (np.int64, -1),
    "identity": (object, None),       # raw identity of 'noise' events (unknown callers, bounces)
}


class EventCollector:
    """Collects event blocks; `add` broadcasts scalars so each block is one vectorized call."""

    def __init__(self):
        self._blocks: list[dict[str, np.ndarray]] = []
        self._next_id = 0

    def new_ids(self, n: int) -> np.ndarray:
        """Fresh sequential ids (e.g. chat conversations), deterministic for a seed."""
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        return ids

    def add(self, cust, ts, **values) -> None:
        cust = np.asarray(cust, dtype=np.int64)
        n = len(cust)
        if n == 0:
            return
        block = {"cust": cust, "ts": np.asarray(ts, dtype=np.float64)}
        for name, value in values.items():
            if name not in COLUMNS:
                raise KeyError(f"unknown event column {name!r}")
            dtype = COLUMNS[name][0]
            block[name] = np.asarray(value, dtype=dtype) if np.ndim(value) else np.full(n, value, dtype=dtype)
        self._blocks.append(block)

    def columns(self) -> dict[str, np.ndarray]:
        out = {}
        for name, (dtype, fill) in COLUMNS.items():
            parts = [b[name] if name in b else np.full(len(b["cust"]), fill, dtype=dtype) for b in self._blocks]
            out[name] = np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
        return out


def to_arrow(columns: dict[str, np.ndarray]) -> pa.Table:
    arrays = {}
    for name, values in columns.items():
        if values.dtype == np.float64:
            arrays[name] = pa.array(values, from_pandas=True)  # NaN -> null
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)
