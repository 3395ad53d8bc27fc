"""A columnar collector for generated events: blocks of numpy arrays, one column per field.
Text columns hold integer codes into one vocabulary, so no Python string exists per event."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

TEXT = "text"
# column -> (numpy dtype or TEXT, fill value for blocks that do not set it)
COLUMNS = {
    "cust": (np.int64, -1),           # customer index; -1 for identities outside the population
    "ts": (np.float64, np.nan),       # µs since the epoch, UTC
    "source": (TEXT, None),
    "event_type": (TEXT, None),
    "role": (TEXT, None),             # stage | skip | filler | ignored | detour | backtrack | off_map | exit | feedback | noise
    "stage": (np.int64, -1),          # the stage the role refers to
    "page": (TEXT, None),
    "campaign": (TEXT, None),
    "queue": (TEXT, None),
    "topic": (TEXT, None),
    "disposition": (TEXT, None),
    "score": (np.float64, np.nan),
    "duration_s": (np.float64, np.nan),
    "device": (np.int64, 0),          # 0: first browser (anon id 1), 1: second device (anon id 2)
    "chat_email": (bool, False),      # the chat visitor typed an e-mail address
    "conversation": (np.int64, -1),
    "identity": (TEXT, None),         # raw identity of 'noise' events (unknown callers, bounces)
}


class Vocabulary:
    """Text <-> integer code; code -1 is null."""

    def __init__(self):
        self._codes: dict[str, int] = {}
        self._texts: list[str] = []

    def code(self, text: str | None) -> int:
        if text is None:
            return -1
        if text not in self._codes:
            self._codes[text] = len(self._texts)
            self._texts.append(text)
        return self._codes[text]

    def codes(self, texts) -> np.ndarray:
        return np.fromiter((self.code(t) for t in texts), dtype=np.int32, count=len(texts))

    def texts(self, codes: np.ndarray) -> pa.Array:
        """The texts of `codes` as an Arrow string array (decoded in Arrow, not Python)."""
        return self.dictionary(codes).cast(pa.string())

    def dictionary(self, codes: np.ndarray) -> pa.DictionaryArray:
        """`codes` as a dictionary-encoded Arrow array over this vocabulary."""
        codes = np.asarray(codes)
        indices = pa.array(np.maximum(codes, 0).astype(np.int32), mask=codes < 0)
        return pa.DictionaryArray.from_arrays(indices, pa.array(self._texts, pa.string()))


class EventCollector:
    """Collects event blocks; `add` broadcasts scalars so each block is one vectorized call."""

    def __init__(self):
        self._blocks: list[dict[str, np.ndarray]] = []
        self._next_id = 0
        self.vocab = Vocabulary()

    def new_ids(self, n: int) -> np.ndarray:
        """Fresh sequential ids (e.g. chat conversations), deterministic for a seed."""
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        return ids

    def pick(self, rng, options, n: int) -> np.ndarray:
        """Codes of `n` texts drawn uniformly from `options`."""
        return self.vocab.codes(list(options))[rng.integers(0, len(options), n)]

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
            if dtype == TEXT:
                block[name] = self._text_codes(value, n)
            else:
                block[name] = np.asarray(value, dtype=dtype) if np.ndim(value) else np.full(n, value, dtype=dtype)
        self._blocks.append(block)

    def _text_codes(self, value, n: int) -> np.ndarray:
        if value is None or isinstance(value, str):
            return np.full(n, self.vocab.code(value), dtype=np.int32)
        array = np.asarray(value)
        if array.dtype.kind in "iu":
            return array.astype(np.int32)
        return self.vocab.codes(array)

    def columns(self) -> dict[str, np.ndarray]:
        out = {}
        for name, (dtype, fill) in COLUMNS.items():
            dtype, fill = (np.int32, -1) if dtype == TEXT else (dtype, fill)
            parts = [b[name] if name in b else np.full(len(b["cust"]), fill, dtype=dtype) for b in self._blocks]
            out[name] = np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
        return out
