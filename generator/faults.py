"""Faults a real export contains, injected at a chosen rate and each recorded with the file,
the line and the reason a correct reader must give. Fault copies are extra records, so the
true event stream stays intact; late events are real records moved to a later day's file."""
from __future__ import annotations

import csv
import io
import json

import pyarrow as pa
import numpy as np

from journey_defs.canonical import BAD_ROW_REASONS
from generator.render import SourceLayout

COMMON_KINDS = ("malformed", "missing_timestamp", "bad_timestamp", "invalid_utf8", "clock_skew", "duplicate", "late")

EXPECTED_REASON = {kind: kind for kind in ("malformed", "missing_timestamp", "bad_timestamp", "invalid_utf8",
                                           "clock_skew", "unknown_event_type", "wrong_type")}
"""Fault kind -> bad-row reason a reader must report; duplicates and late events are not bad rows."""
assert set(EXPECTED_REASON.values()) <= set(BAD_ROW_REASONS)

INVALID_BYTES = "\udcff\udcfe"  # surrogate-escaped 0xFF 0xFE: written as raw invalid UTF-8


def fault_kinds(layout: SourceLayout) -> tuple[str, ...]:
    kinds = list(COMMON_KINDS)
    if layout.type_field:
        kinds.append("unknown_event_type")
    if layout.typed_int_field:
        kinds.append("wrong_type")
    return tuple(kinds)


def corrupt(layout: SourceLayout, line: str, kind: str, rng) -> str:
    """A broken copy of `line` with exactly one defect of `kind`."""
    if layout.format == "jsonl":
        return _corrupt_json(layout, line, kind, rng)
    return _corrupt_csv(layout, line, kind, rng)


def _corrupt_json(layout: SourceLayout, line: str, kind: str, rng) -> str:
    if kind == "malformed":
        return line[: max(5, len(line) // 2)]
    if kind == "invalid_utf8":
        cut = line.index('",')
        return line[:cut] + INVALID_BYTES + line[cut:]
    record = json.loads(line)
    if kind == "missing_timestamp":
        del record[layout.timestamp_field]
    elif kind == "bad_timestamp":
        record[layout.timestamp_field] = "not-a-date"
    elif kind == "unknown_event_type":
        record[layout.type_field] = layout.unknown_types[rng.integers(len(layout.unknown_types))]
    elif kind == "wrong_type":
        record[layout.typed_int_field] = "good"
    else:
        raise ValueError(f"no JSON corruption for {kind!r}")
    return json.dumps(record, separators=(",", ":"))


def _corrupt_csv(layout: SourceLayout, line: str, kind: str, rng) -> str:
    fields = next(csv.reader([line]))
    if kind == "malformed":
        fields = fields[:-2]
    elif kind == "invalid_utf8":
        fields[0] += INVALID_BYTES
    elif kind == "missing_timestamp":
        fields[layout.columns.index(layout.timestamp_field)] = ""
    elif kind == "bad_timestamp":
        fields[layout.columns.index(layout.timestamp_field)] = "not-a-date"
    elif kind == "wrong_type":
        fields[layout.columns.index(layout.typed_int_field)] = "five"
    else:
        raise ValueError(f"no CSV corruption for {kind!r}")
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


class FileAssembler:
    """Writes each day's file of one source: a range of real lines (rendered with their
    newline, in time order) minus the lines moved out (late records), plus records inserted at
    random places. Real lines go to disk straight from the Arrow buffer; only inserted
    records are handled one by one in Python."""

    def __init__(self, layout: SourceLayout, lines: pa.Array, rng):
        self.layout, self.rng = layout, rng
        self._lines = lines.cast(pa.large_string())
        _, offsets, _ = self._lines.buffers()
        self._offsets = np.frombuffer(offsets, dtype=np.int64)[self._lines.offset:self._lines.offset + len(self._lines) + 1] \
            if len(self._lines) else np.zeros(1, np.int64)
        self._data = memoryview(self._lines.buffers()[2]) if len(self._lines) else memoryview(b"")
        self._ranges: dict[int, tuple[int, int]] = {}
        self._excluded: dict[int, list[int]] = {}
        self._inserts: dict[int, list[tuple[float, bytes, tuple]]] = {}

    def set_range(self, day: int, start: int, stop: int) -> None:
        """Lines start..stop-1 belong to `day`'s file."""
        self._ranges[day] = (start, stop)

    def exclude(self, day: int, row: int) -> None:
        self._excluded.setdefault(day, []).append(row)

    def insert(self, day: int, line: str, info: tuple) -> None:
        """Place `line` (ending in a newline) at a uniformly random position of `day`'s file."""
        self._inserts.setdefault(day, []).append(
            (float(self.rng.random()), line.encode("utf-8", "surrogateescape"), info))

    def write(self, day: int, path) -> tuple[int, list[tuple[int, tuple]]]:
        """Write `day`'s file; return its record count and [(line_number, info)] of inserts."""
        start, stop = self._ranges.get(day, (0, 0))
        excluded = np.asarray(sorted(self._excluded.get(day, [])), dtype=np.int64)
        kept = np.setdiff1d(np.arange(start, stop), excluded, assume_unique=True)
        inserts = sorted(self._inserts.get(day, []), key=lambda x: x[0])
        positions = (np.array([f for f, _, _ in inserts]) * (len(kept) + 1)).astype(np.int64)
        before = np.append(kept, stop)[positions] if inserts else np.empty(0, np.int64)
        steps = sorted([(int(b), 0, i) for i, b in enumerate(before)] + [(int(x), 1, -1) for x in excluded])
        numbered, line_no, cursor = [], 1 if self.layout.header else 0, start
        with open(path, "wb") as out:
            if self.layout.header:
                out.write(self.layout.header.encode() + b"\n")
            for row, kind, i in steps:
                if row > cursor:
                    out.write(self._data[self._offsets[cursor]:self._offsets[row]])
                    line_no += row - cursor
                    cursor = row
                if kind == 0:
                    _, line, info = inserts[i]
                    out.write(line)
                    line_no += 1
                    numbered.append((line_no, info))
                else:
                    cursor = row + 1
            out.write(self._data[self._offsets[cursor]:self._offsets[stop]])
        return len(kept) + len(inserts), numbered

    def days(self) -> list[int]:
        return sorted(set(self._ranges) | set(self._inserts))
