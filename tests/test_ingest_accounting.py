"""Nothing lost at ingest: compressed raw files are read, every file of a day folder is read or
listed as skipped with its reason, and a file that cannot be read as its spec says (corrupt,
a column missing) is a failed file of the run's accounting, never silent NULLs, invented ids
or a crash of its batch."""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import uuid
import zlib
from collections import Counter
from dataclasses import replace
from datetime import date
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import zstandard
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from journey_defs.canonical import BAD_ROW_REASONS, BAD_ROW_SCHEMA, CANONICAL_SCHEMA
from journey_defs.outputs import FILE_COUNTS
from journey_defs.source_spec import load_sources
from transforms.ingest import ParseSources
from transforms.manifest import build_manifest, problems, rows_per_file
from transforms.parse import (
    COMPRESSION_SUFFIXES, FileFailure, parse_bytes, parse_contents, parse_files, read_raw, source_files,
    unmatched_day_files,
)

RAW = Path(__file__).parent / "fixtures" / "raw"
DAY = date(2026, 1, 5)
SPECS = load_sources()
RUNNER = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])
WEB_FILE = RAW / "web/2026-01-05/part-000.jsonl"  # 3 records, one without its id (a bad row)
PHONE_FILE = RAW / "phone/2026-01-05/calls.csv"
PHONE_HEADER = "call_id,caller_number,queue,started_at,ended_at,disposition,ivr_path,csat"

COMPRESS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".zst": zstandard.ZstdCompressor().compress,
    ".zstd": zstandard.ZstdCompressor().compress,
    ".deflate": zlib.compress,
    ".xz": lzma.compress,
    ".lzma": lambda data: lzma.compress(data, format=lzma.FORMAT_ALONE),
}

HELPDESK_XES = """<?xml version="1.0" encoding="UTF-8"?>
<log>
  <trace><string key="concept:name" value="Case1"/><string key="variant" value="Variant 1"/>
    <event><string key="concept:name" value="Insert ticket"/><string key="lifecycle:transition" value="complete"/>
      <string key="org:resource" value="Value 1"/><date key="time:timestamp" value="2012-06-01T09:00:00.000+02:00"/></event>
    <event><string key="concept:name" value="Closed"/><string key="lifecycle:transition" value="complete"/>
      <string key="org:resource" value="Value 3"/><date key="time:timestamp" value="2012-12-03T10:00:00.000+01:00"/></event>
  </trace>
</log>
"""


def put(root: Path, name: str, data: bytes) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def parsed_as(result, source_file: str) -> tuple[list[dict], list[dict]]:
    """(events, bad rows) as rows, with the file name replaced: what must not change."""
    rename = lambda rows: [{**r, "source_file": source_file} for r in rows]  # noqa: E731
    return rename(result.events.to_pylist()), rename(result.bad_rows.to_pylist())


def without_column(text: str, column: str) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    at = rows[0].index(column)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([r[:at] + r[at + 1:] for r in rows])
    return out.getvalue()


# --- compressed files -------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [*COMPRESSION_SUFFIXES, ".GZ"])
def test_each_compression_suffix_gives_exactly_the_events_of_the_uncompressed_file(tmp_path, suffix):
    plain = WEB_FILE.read_bytes()
    path = put(tmp_path, f"web/2026-01-05/events.jsonl{suffix}", COMPRESS[suffix.lower()](plain))
    assert CompressionTypes.detect_compression_type(str(path)) != CompressionTypes.UNCOMPRESSED
    assert read_raw(path) == plain == FileSystems.open(str(path)).read()  # as Beam's AUTO decompression
    assert source_files(SPECS["web"], tmp_path, DAY) == [(str(path), DAY)]
    result = parse_files(SPECS["web"], source_files(SPECS["web"], tmp_path, DAY), data_dir=tmp_path)
    expected = parse_bytes(SPECS["web"], plain, source_file=f"web/2026-01-05/events.jsonl{suffix}", file_date=DAY)
    assert (result.records_read, result.events.num_rows, result.bad_rows.num_rows) == (3, 2, 1)
    assert result.events.equals(expected.events) and result.bad_rows.equals(expected.bad_rows)
    assert set(result.events["source_file"].to_pylist()) == {f"web/2026-01-05/events.jsonl{suffix}"}


def test_gzipped_csv_xes_and_parquet_give_the_events_of_the_uncompressed_files(tmp_path):
    phone = put(tmp_path, "phone/2026-01-05/calls.csv.gz", gzip.compress(PHONE_FILE.read_bytes()))
    got = parse_files(SPECS["phone"], source_files(SPECS["phone"], tmp_path, DAY), data_dir=tmp_path)
    want = parse_files(SPECS["phone"], [(PHONE_FILE, DAY)], data_dir=RAW)
    assert parsed_as(got, "x") == parsed_as(want, "x") and got.events.num_rows == 2
    assert got.events["event_id"].to_pylist() == ["phone:K-000001", "phone:K-000002"]

    # whole-log sources with a literal path find the compressed file beside it
    csv_spec = SPECS["helpdesk"]
    put(tmp_path, "helpdesk/helpdesk.csv.bz2", bz2.compress((RAW / "helpdesk/helpdesk.csv").read_bytes()))
    xes_spec = replace(csv_spec, format="xes", path="helpdesk/helpdesk.xes")
    put(tmp_path, "helpdesk/helpdesk.xes.gz", gzip.compress(HELPDESK_XES.encode()))
    sink = io.BytesIO()
    pq.write_table(pacsv.read_csv(RAW / "helpdesk/helpdesk.csv"), sink)
    parquet_spec = replace(csv_spec, format="parquet", path="helpdesk/helpdesk.parquet")
    put(tmp_path, "helpdesk/helpdesk.parquet.gz", gzip.compress(sink.getvalue()))
    reference = parse_files(csv_spec, [(RAW / "helpdesk/helpdesk.csv", None)], data_dir=RAW).events
    columns = ["user_id", "event_type", "ts", "attributes"]  # lines (and so hashed ids) differ by format
    for spec, name, rows in ((csv_spec, "helpdesk.csv.bz2", [0, 1, 2]), (xes_spec, "helpdesk.xes.gz", [0, 2]),
                             (parquet_spec, "helpdesk.parquet.gz", [0, 1, 2])):
        assert source_files(spec, tmp_path) == [(str(tmp_path / "helpdesk" / name), None)]
        result = parse_files(spec, source_files(spec, tmp_path), data_dir=tmp_path)
        assert result.bad_rows.num_rows == 0, name
        assert result.events.select(columns).to_pylist() == reference.take(rows).select(columns).to_pylist(), name
        assert set(result.events["source_file"].to_pylist()) == {f"helpdesk/{name}"}


def test_real_bpic2013_log_is_read_from_its_gzipped_xes(bpic2013_xes, real_logs):
    bpic2013_dir = real_logs
    spec = replace(SPECS["helpdesk"], name="bpic2013", format="xes", path="bpic2013_incidents/bpic2013_incidents.xes",
                   attributes=(("lifecycle", "lifecycle:transition"),))
    files = source_files(spec, bpic2013_dir)  # the README beside it is no concern of a whole log
    assert files == [(str(bpic2013_dir / "bpic2013_incidents/bpic2013_incidents.xes.gz"), None)]
    result = parse_files(spec, files, data_dir=bpic2013_dir)
    events = result.events
    assert (result.records_read, events.num_rows, result.bad_rows.num_rows) == (65_533, 65_533, 0)
    assert len(set(events["user_id"].to_pylist())) == 7_554
    statuses = Counter(zip(events["event_type"].to_pylist(),
                           [json.loads(a)["lifecycle"] for a in events["attributes"].to_pylist()]))
    assert statuses == {  # the data set's README
        ("Accepted", "In Progress"): 30_239, ("Queued", "Awaiting Assignment"): 11_544,
        ("Completed", "Resolved"): 6_115, ("Completed", "Closed"): 5_716, ("Accepted", "Wait - User"): 4_217,
        ("Accepted", "Assigned"): 3_221, ("Completed", "In Call"): 2_035, ("Accepted", "Wait"): 1_533,
        ("Accepted", "Wait - Implementation"): 493, ("Accepted", "Wait - Vendor"): 313,
        ("Accepted", "Wait - Customer"): 101, ("Unmatched", "Unmatched"): 5, ("Completed", "Cancelled"): 1,
    }
    assert set(events["source_file"].to_pylist()) == {"bpic2013_incidents/bpic2013_incidents.xes.gz"}


@pytest.mark.parametrize("suffix", COMPRESSION_SUFFIXES)
def test_truncated_or_corrupt_compressed_file_is_a_file_failure(tmp_path, suffix):
    packed = COMPRESS[suffix](WEB_FILE.read_bytes() * 50)
    path = put(tmp_path, f"web/2026-01-05/events.jsonl{suffix}", packed[:len(packed) // 2])
    kind = CompressionTypes.detect_compression_type(str(path))
    with pytest.raises(FileFailure, match=f"^cannot decompress as {kind}: "):
        read_raw(path)
    put(tmp_path, f"web/2026-01-05/events.jsonl{suffix}", b"this is not compressed at all")
    with pytest.raises(FileFailure, match=f"^web/2026-01-05/events.jsonl{suffix}: cannot decompress as {kind}: "):
        parse_files(SPECS["web"], source_files(SPECS["web"], tmp_path, DAY), data_dir=tmp_path)


def test_gzip_failure_reasons_say_what_is_wrong(tmp_path):
    with pytest.raises(FileFailure, match=r"^cannot decompress as gzip: Not a gzipped file \(b'th'\)$"):
        read_raw(put(tmp_path, "a.gz", b"this is not gzip"))
    with pytest.raises(FileFailure) as caught:
        read_raw(put(tmp_path, "b.gz", gzip.compress(b"x" * 10_000)[:-8]))
    assert str(caught.value) == "cannot decompress as gzip: Compressed file ended before the end-of-stream marker was reached"
    assert read_raw(put(tmp_path, "empty.gz", b"")) == b""  # an empty file is empty, whatever its name


# --- a column the spec needs is missing -------------------------------------------------
@pytest.mark.parametrize("column, role", [
    ("call_id", "event_id"),
    ("caller_number", "identity.phone"),
    ("started_at", "timestamp and fields.duration_s"),
    ("queue", "fields.queue"),
    ("ivr_path", "attributes.ivr_path"),
])
def test_csv_missing_a_column_of_its_spec_is_a_failed_file_naming_it(column, role):
    text = without_column(PHONE_FILE.read_text(), column)
    header = [c for c in PHONE_HEADER.split(",") if c != column]
    reason = f"no column '{column}' (the phone spec's {role}); the header has {', '.join(header)}"
    result = parse_contents(SPECS["phone"], [("phone/2026-01-05/calls.csv", text.encode(), DAY),
                                              ("phone/2026-01-05/ok.csv", PHONE_FILE.read_bytes(), DAY)])
    assert {name: (str(f), f.records) for name, f in result.failed.items()} == {"phone/2026-01-05/calls.csv": (reason, 2)}
    assert result.events["source_file"].to_pylist() == ["phone/2026-01-05/ok.csv"] * 2  # the other file is parsed
    with pytest.raises(FileFailure, match="^phone/test: no column"):
        parse_bytes(SPECS["phone"], text.encode(), source_file="phone/test", file_date=DAY)


def test_csv_missing_several_columns_names_each_with_its_role():
    text = without_column(without_column(PHONE_FILE.read_text(), "call_id"), "queue")
    result = parse_contents(SPECS["phone"], [("calls.csv", text.encode(), DAY)])
    assert str(result.failed["calls.csv"]) == (
        "no columns 'call_id', 'queue' (the phone spec's event_id, fields.queue); "
        "the header has caller_number, started_at, ended_at, disposition, ivr_path, csat")


def _parquet(rows: list[dict]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def test_parquet_missing_a_column_or_struct_member_is_a_failed_file():
    phone = replace(SPECS["phone"], format="parquet")
    calls = [r for r in csv.DictReader(io.StringIO(PHONE_FILE.read_text()))]
    result = parse_contents(phone, [("calls.parquet", _parquet([{k: v for k, v in r.items() if k != "call_id"}
                                                                 for r in calls]), DAY)])
    assert result.events.num_rows == result.bad_rows.num_rows == result.records_read == 0
    assert (str(result.failed["calls.parquet"]), result.failed["calls.parquet"].records) == (
        "no column 'call_id' (the phone spec's event_id); "
        "the schema has caller_number, queue, started_at, ended_at, disposition, ivr_path, csat", 2)

    web = replace(SPECS["web"], format="parquet")
    record = {"message_id": "w-1", "type": "page", "event": "page_view", "anonymous_id": "a", "user_id": None,
              "timestamp": "2026-01-05T10:00:00Z", "properties": {"referrer": "r"}, "context": {"user_agent": "u"}}
    result = parse_contents(web, [("a.parquet", _parquet([record]), DAY),
                                  ("b.parquet", _parquet([{**record, "properties": {"page": "/", "referrer": "r"}}]), DAY),
                                  ("c.parquet", b"not parquet", DAY)])
    assert str(result.failed["a.parquet"]) == (
        "no column 'properties.page' (the web spec's fields.page); the schema has message_id, type, event, "
        "anonymous_id, user_id, timestamp, properties.referrer, context.user_agent")
    assert str(result.failed["c.parquet"]).startswith("not a readable Parquet file: ")
    assert result.events.select(["event_id", "page", "source_file"]).to_pylist() == [
        {"event_id": "web:w-1", "page": "/", "source_file": "b.parquet"}]


# --- a record without the id its spec names ---------------------------------------------
def test_record_without_the_specs_id_is_a_missing_event_id_bad_row_not_a_hashed_id():
    assert "missing_event_id" in BAD_ROW_REASONS
    ok = '{"message_id": "w-1", "event": "page_view", "anonymous_id": "a", "timestamp": "2026-01-05T10:00:00Z"}'
    no_id = '{"event": "page_view", "anonymous_id": "a", "timestamp": "2026-01-05T10:00:00Z"}'
    empty_id = no_id.replace("{", '{"message_id": " ", ', 1)
    result = parse_contents(SPECS["web"], [("web/a.jsonl", "\n".join([ok, no_id, empty_id]).encode(), DAY)])
    assert result.events["event_id"].to_pylist() == ["web:w-1"]
    assert result.bad_rows.select(["source_line", "reason", "detail", "raw_text"]).to_pylist() == [
        {"source_line": n, "reason": "missing_event_id", "detail": "event id field 'message_id' is missing or empty",
         "raw_text": raw} for n, raw in ((2, no_id), (3, empty_id))]

    # the same per record in XES (no header) and for an empty cell of a CSV that has the column
    xes_spec = replace(SPECS["helpdesk"], format="xes", event_id="identity:id")
    xes = HELPDESK_XES.replace('<event><string key="concept:name" value="Insert',
                               '<event><string key="identity:id" value="ev-1"/><string key="concept:name" value="Insert')
    xes_result = parse_contents(xes_spec, [("helpdesk/h.xes", xes.encode(), None)])
    assert xes_result.events["event_id"].to_pylist() == ["helpdesk:ev-1"]
    assert xes_result.bad_rows["reason"].to_pylist() == ["missing_event_id"]
    csv_text = PHONE_FILE.read_text().replace("K-000002", "")
    csv_result = parse_contents(SPECS["phone"], [("phone/c.csv", csv_text.encode(), DAY)])
    assert csv_result.events["event_id"].to_pylist() == ["phone:K-000001"]
    assert csv_result.bad_rows.select(["source_line", "reason"]).to_pylist() == [
        {"source_line": 3, "reason": "missing_event_id"}]


# --- day folders ------------------------------------------------------------------------
def test_day_folder_is_the_directory_holding_the_day_searched_recursively(tmp_path):
    for name in ("web/2026-01-05/a.jsonl", "web/2026-01-05/a.jsonl.gz", "web/2026-01-05/notes.txt",
                 "web/2026-01-05/deeper/b.jsonl", "web/2026-01-06/stray.txt", "web/eu/2026-01-05/c.jsonl",
                 "web/eu/2026-01-05/raw/d.jsonl", "web/eu/2026-01-05/e.csv", "web/README.md"):
        put(tmp_path, name, b"")
    rel = lambda paths: [Path(p).relative_to(tmp_path).as_posix() for p in paths]  # noqa: E731
    web = SPECS["web"]
    assert rel(unmatched_day_files(web, tmp_path, DAY)) == ["web/2026-01-05/deeper/b.jsonl", "web/2026-01-05/notes.txt"]
    assert rel(unmatched_day_files(replace(web, path="web/**/{date}/*.jsonl"), tmp_path, DAY)) == [
        "web/2026-01-05/deeper/b.jsonl", "web/2026-01-05/notes.txt",
        "web/eu/2026-01-05/e.csv", "web/eu/2026-01-05/raw/d.jsonl"]
    assert rel(unmatched_day_files(replace(web, path="web/eu/{date}/raw/*.jsonl"), tmp_path, DAY)) == []
    assert unmatched_day_files(replace(web, path="web/events-{date}.jsonl"), tmp_path, DAY) == []  # no day folder
    assert unmatched_day_files(web, tmp_path / "missing", DAY) == []


# --- through the Beam transform: the run's file accounting ------------------------------
def _keep(table: pa.Table, out: str, tag: str) -> None:
    pq.write_table(table, f"{out}/{tag}-{uuid.uuid4().hex}.parquet")


def ingest(specs, data_dir: Path, out: Path, days=(DAY,), per_batch: int = 8) -> dict[str, list[dict]]:
    """ParseSources on the DirectRunner; its outputs as rows, in a stable order."""
    out.mkdir()
    with BeamTestPipeline(options=RUNNER) as p:
        parsed = p | ParseSources(specs, str(data_dir), list(days), files_per_batch=per_batch)
        for tag in ("events", "bad_rows", "file_counts"):
            getattr(parsed, tag) | f"Keep_{tag}" >> beam.Map(_keep, str(out), tag)
    schemas = {"events": CANONICAL_SCHEMA, "bad_rows": BAD_ROW_SCHEMA, "file_counts": FILE_COUNTS}
    rows = {}
    for tag, schema in schemas.items():
        parts = [pq.read_table(p).cast(schema) for p in sorted(out.glob(f"{tag}-*.parquet"))]
        table = pa.concat_tables(parts) if parts else schema.empty_table()
        order = [("source_file", "ascending")] + ([("source_line", "ascending")] if tag != "file_counts" else [])
        rows[tag] = table.sort_by(order).to_pylist()
    return rows


def manifest_of(rows: dict[str, list[dict]]) -> pa.Table:
    """The run's manifest as the pipeline builds it (no duplicates here: every event is written)."""
    events = pa.Table.from_pylist(rows["events"], CANONICAL_SCHEMA)
    written = pa.table({"source_file": list(rows_per_file(events)), "n_events": list(rows_per_file(events).values())})
    return build_manifest("r", DAY, [pa.Table.from_pylist(rows["file_counts"], FILE_COUNTS)], [], [written])


def test_ingest_reads_compressed_files_and_accounts_for_them(tmp_path):
    data = tmp_path / "data"
    put(data, "web/2026-01-05/events.jsonl.gz", gzip.compress(WEB_FILE.read_bytes()))
    put(data, "web/2026-01-05/more.jsonl.zst", COMPRESS[".zst"]((RAW / "web/2026-01-05/part-001.jsonl").read_bytes()))
    put(data, "phone/2026-01-05/calls.csv.bz2", bz2.compress(PHONE_FILE.read_bytes()))
    specs = load_sources(["web", "phone"])
    rows = ingest(specs, data, tmp_path / "out", per_batch=1)
    want = {name: parse_files(specs[name.split("/")[0]], [(RAW / raw, DAY)], data_dir=RAW) for name, raw in (
        ("web/2026-01-05/events.jsonl.gz", WEB_FILE), ("web/2026-01-05/more.jsonl.zst", "web/2026-01-05/part-001.jsonl"),
        ("phone/2026-01-05/calls.csv.bz2", PHONE_FILE))}
    for name, result in want.items():
        events, bad = parsed_as(result, name)
        assert [e for e in rows["events"] if e["source_file"] == name] == events, name
        assert [b for b in rows["bad_rows"] if b["source_file"] == name] == bad, name
    assert [(c["source_file"], c["records"], c["parsed_events"], c["bad_rows"], c["status"], c["reason"])
            for c in rows["file_counts"]] == [
        ("phone/2026-01-05/calls.csv.bz2", 2, 2, 0, "read", None),
        ("web/2026-01-05/events.jsonl.gz", 3, 2, 1, "read", None),
        ("web/2026-01-05/more.jsonl.zst", 1, 1, 0, "read", None),
    ]
    assert problems(manifest_of(rows)) == []


def test_stray_files_of_a_day_folder_are_listed_as_skipped_and_change_nothing_else(tmp_path):
    clean, stray = tmp_path / "clean", tmp_path / "stray"
    for root in (clean, stray):
        put(root, "web/2026-01-05/events.jsonl", WEB_FILE.read_bytes())
        put(root, "helpdesk/helpdesk.csv", (RAW / "helpdesk/helpdesk.csv").read_bytes())
    put(stray, "web/2026-01-05/events.jsonl.zip", b"PK")
    put(stray, "web/2026-01-05/notes.txt", b"delivered late")
    put(stray, "web/2026-01-05/old/events.jsonl", WEB_FILE.read_bytes())
    put(stray, "web/2026-01-06/next.txt", b"another day: not this run's")
    put(stray, "helpdesk/README.md", b"a whole log's folder is not a day folder")
    specs = load_sources(["web", "helpdesk"])
    before, after = ingest(specs, clean, tmp_path / "out1"), ingest(specs, stray, tmp_path / "out2")
    assert after["events"] == before["events"] and after["bad_rows"] == before["bad_rows"]
    read = [c for c in after["file_counts"] if c["status"] == "read"]
    assert read == before["file_counts"]
    expected = "matches no source path: expected web/{date}/*.jsonl"
    assert [c for c in after["file_counts"] if c["status"] != "read"] == [
        {"source": "web", "source_file": name, "source_date": DAY, "records": 0, "parsed_events": 0, "bad_rows": 0,
         "status": "skipped", "reason": expected}
        for name in ("web/2026-01-05/events.jsonl.zip", "web/2026-01-05/notes.txt", "web/2026-01-05/old/events.jsonl")]
    manifest = manifest_of(after)
    assert all(manifest["balanced"].to_pylist()) and problems(manifest) == []


def test_a_file_read_by_another_source_of_the_run_is_not_skipped(tmp_path):
    """Two sources deliver into one day folder: each reads its own files, a stray is listed once."""
    data = tmp_path / "data"
    put(data, "drop/2026-01-05/events.jsonl", WEB_FILE.read_bytes())
    put(data, "drop/2026-01-05/calls.csv.gz", gzip.compress(PHONE_FILE.read_bytes()))
    put(data, "drop/2026-01-05/manifest.xml", b"<files/>")
    specs = {"web": replace(SPECS["web"], path="drop/{date}/*.jsonl"),
             "phone": replace(SPECS["phone"], path="drop/{date}/*.csv")}
    counts = ingest(specs, data, tmp_path / "out")["file_counts"]
    assert [(c["source"], c["source_file"], c["status"], c["reason"]) for c in counts] == [
        ("phone", "drop/2026-01-05/calls.csv.gz", "read", None),
        ("web", "drop/2026-01-05/events.jsonl", "read", None),
        ("phone", "drop/2026-01-05/manifest.xml", "skipped",
         "matches no source path: expected drop/{date}/*.csv or drop/{date}/*.jsonl"),
    ]


def test_failed_files_are_accounted_for_and_their_batch_goes_on(tmp_path):
    data = tmp_path / "data"
    put(data, "web/2026-01-05/a.jsonl", WEB_FILE.read_bytes())
    put(data, "web/2026-01-05/b.jsonl.gz", b"not gzip at all")
    put(data, "web/2026-01-05/c.jsonl.gz", gzip.compress(WEB_FILE.read_bytes())[:-12])
    put(data, "web/2026-01-05/d.jsonl", (RAW / "web/2026-01-05/part-001.jsonl").read_bytes())
    put(data, "phone/2026-01-05/calls.csv", without_column(PHONE_FILE.read_text(), "call_id").encode())
    put(data, "phone/2026-01-05/more.csv", PHONE_FILE.read_bytes().replace(b"K-0", b"K-1"))
    specs = load_sources(["web", "phone"])
    rows = ingest(specs, data, tmp_path / "out")  # one batch per source
    assert sorted({e["source_file"] for e in rows["events"]}) == [
        "phone/2026-01-05/more.csv", "web/2026-01-05/a.jsonl", "web/2026-01-05/d.jsonl"]
    no_call_id = ("no column 'call_id' (the phone spec's event_id); the header has caller_number, queue, "
                  "started_at, ended_at, disposition, ivr_path, csat")
    assert [(c["source_file"], c["records"], c["parsed_events"], c["bad_rows"], c["status"], c["reason"])
            for c in rows["file_counts"]] == [
        ("phone/2026-01-05/calls.csv", 2, 0, 0, "failed", no_call_id),
        ("phone/2026-01-05/more.csv", 2, 2, 0, "read", None),
        ("web/2026-01-05/a.jsonl", 3, 2, 1, "read", None),
        ("web/2026-01-05/b.jsonl.gz", 0, 0, 0, "failed", "cannot decompress as gzip: Not a gzipped file (b'no')"),
        ("web/2026-01-05/c.jsonl.gz", 0, 0, 0, "failed",
         "cannot decompress as gzip: Compressed file ended before the end-of-stream marker was reached"),
        ("web/2026-01-05/d.jsonl", 1, 1, 0, "read", None),
    ]
    manifest = manifest_of(rows)
    assert dict(zip(manifest["source_file"].to_pylist(), manifest["balanced"].to_pylist())) == {
        "phone/2026-01-05/calls.csv": False, "phone/2026-01-05/more.csv": True, "web/2026-01-05/a.jsonl": True,
        "web/2026-01-05/b.jsonl.gz": False, "web/2026-01-05/c.jsonl.gz": False, "web/2026-01-05/d.jsonl": True}
    assert problems(manifest) == [
        f"phone/2026-01-05/calls.csv: failed: {no_call_id}",
        "web/2026-01-05/b.jsonl.gz: failed: cannot decompress as gzip: Not a gzipped file (b'no')",
        "web/2026-01-05/c.jsonl.gz: failed: cannot decompress as gzip: "
        "Compressed file ended before the end-of-stream marker was reached",
    ]


def test_symlinked_raw_files_and_day_folders_are_read_under_their_names_in_the_data_dir(tmp_path):
    """A raw file (or a whole day folder) that is a symbolic link to elsewhere is read like a
    regular file and accounted for under the name it has in the source's folder; a stray link
    is skipped by that name, a dangling one fails naming it."""
    elsewhere, plain, linked = tmp_path / "elsewhere", tmp_path / "plain", tmp_path / "linked"
    put(elsewhere, "exports/web-05.jsonl", WEB_FILE.read_bytes())
    put(elsewhere, "exports/calls.csv.gz", gzip.compress(PHONE_FILE.read_bytes()))
    put(elsewhere, "day-06/events.jsonl", (RAW / "web/2026-01-05/part-001.jsonl").read_bytes())
    put(elsewhere, "day-06/notes.txt", b"a stray file of a linked day folder")
    put(plain, "web/2026-01-05/events.jsonl", WEB_FILE.read_bytes())
    put(plain, "phone/2026-01-05/calls.csv.gz", gzip.compress(PHONE_FILE.read_bytes()))
    put(plain, "web/2026-01-06/events.jsonl", (RAW / "web/2026-01-05/part-001.jsonl").read_bytes())
    put(plain, "web/2026-01-06/notes.txt", b"a stray file of a linked day folder")
    for name, target in (("web/2026-01-05/events.jsonl", "exports/web-05.jsonl"),
                         ("phone/2026-01-05/calls.csv.gz", "exports/calls.csv.gz"), ("web/2026-01-06", "day-06")):
        (linked / name).parent.mkdir(parents=True, exist_ok=True)
        (linked / name).symlink_to(elsewhere / target)
    specs = load_sources(["web", "phone"])
    days = (DAY, date(2026, 1, 6))
    want, got = ingest(specs, plain, tmp_path / "out1", days), ingest(specs, linked, tmp_path / "out2", days)
    assert got == want
    assert [(c["source_file"], c["status"]) for c in got["file_counts"]] == [
        ("phone/2026-01-05/calls.csv.gz", "read"), ("web/2026-01-05/events.jsonl", "read"),
        ("web/2026-01-06/events.jsonl", "read"), ("web/2026-01-06/notes.txt", "skipped")]
    assert {e["source_file"] for e in got["events"]} == {
        "phone/2026-01-05/calls.csv.gz", "web/2026-01-05/events.jsonl", "web/2026-01-06/events.jsonl"}

    (linked / "web/2026-01-05/gone.jsonl").symlink_to(elsewhere / "exports/deleted.jsonl")
    counts = ingest(specs, linked, tmp_path / "out3", days)["file_counts"]
    assert [(c["source_file"], c["status"], c["reason"]) for c in counts if c["status"] == "failed"] == [
        ("web/2026-01-05/gone.jsonl", "failed", f"a symbolic link to a missing file ({elsewhere}/exports/deleted.jsonl)")]
