"""Faults a real export contains, injected at a chosen rate and each recorded with the file,
the line and the reason a correct reader must give. Fault copies are extra records, so the
true event stream stays intact; late events are real records moved to a later day's file."""
from __future__ import annotations

import csv
import io
import json

import pyarrow as pa
import pyarrow.compute as pc

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
    """Collects each day's lines of one source: the real records in time order (an Arrow
    array) plus records inserted at random places; `finish` fixes the order, and so every
    record's line number. Only inserted records are handled one by one in Python."""

    def __init__(self, layout: SourceLayout, rng):
        self.layout, self.rng = layout, rng
        self._lines: dict[int, pa.Array] = {}
        self._inserts: dict[int, list[tuple[float, str, tuple]]] = {}

    def set_lines(self, day: int, lines: pa.Array) -> None:
        self._lines[day] = lines

    def insert(self, day: int, line: str, info: tuple) -> None:
        """Place `line` at a uniformly random position of `day`'s file."""
        self._inserts.setdefault(day, []).append((float(self.rng.random()), line, info))

    def finish(self):
        """Yield (day, text, [(line_number, info), ...]) for every file, in day order."""
        header = [self.layout.header] if self.layout.header else []
        for day in sorted(set(self._lines) | set(self._inserts)):
            base = self._lines.get(day, pa.array([], pa.string()))
            inserts = sorted(self._inserts.get(day, []), key=lambda x: x[0])
            pieces, numbered, taken, line_count = list(header), [], 0, len(header)
            for fraction, line, info in inserts:
                position = max(taken, int(fraction * (len(base) + 1)))
                if position > taken:
                    pieces.append(_joined(base.slice(taken, position - taken)))
                    line_count += position - taken
                numbered.append((line_count + 1, info))  # 1-based line number, header included
                pieces.append(line)
                line_count += 1
                taken = position
            if taken < len(base):
                pieces.append(_joined(base.slice(taken)))
            yield day, "\n".join(pieces) + "\n", numbered


def _joined(lines: pa.Array) -> str:
    """Lines joined by newlines, in Arrow (no Python string per line)."""
    as_list = pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines)
    return pc.binary_join(as_list, "\n")[0].as_py()
