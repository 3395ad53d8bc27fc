"""Errors a person can act on: a broken disk, a wrong path, impossible dates, a day without
raw files, a map or spec `run` would reject — each one line naming the path or the value,
exit 2, before anything starts (no pipeline, no Prefect server), and never retried; broken
input at ingest (a file missing a column its spec needs) fails the run naming the file and
the column, and compressed raw files are read, not skipped."""
from __future__ import annotations

import gzip
import shutil
import time

import duckdb
import pytest

from lake.crash import FAIL_ENV
from tests.reliability.harness import (
    DAYS, copy_tree, generate_sample, journeys, lake_content, run_day, uncommitted_leftovers,
)

DAY = DAYS[0]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return generate_sample(tmp_path_factory.mktemp("errors"))


def one_line(done, code: int = 2) -> str:
    assert done.returncode == code, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("errno_name, cause", [("ENOSPC", "No space left on device"),
                                               ("EROFS", "Read-only file system")])
def test_a_full_or_read_only_disk_is_one_line_naming_the_path(sample, tmp_path, errno_name, cause):
    data = copy_tree(sample, tmp_path / "data")
    line = one_line(run_day(data, DAY, env={FAIL_ENV: f"staging:{errno_name}"}))
    assert line.startswith(f"journeys run: {data}/lake/_runs/") and line.endswith(f".parquet: {cause}")
    assert lake_content(data / "lake") == {}  # nothing committed, and the failed run's folder is gone
    assert uncommitted_leftovers(data / "lake") == []


def test_debug_shows_the_whole_trace(sample, tmp_path):
    data = copy_tree(sample, tmp_path / "data")
    done = journeys("--debug", "run", "--date", DAY.isoformat(), "--data", str(data), "--journey", "subscription",
                    env={FAIL_ENV: "staging:ENOSPC"})
    assert done.returncode == 1 and "Traceback" in done.stderr and "No space left on device" in done.stderr


def test_a_lake_that_is_a_file_is_one_line_before_anything_runs(sample, tmp_path):
    (tmp_path / "not-a-folder").write_text("x")
    began = time.monotonic()
    line = one_line(journeys("run", "--date", DAY.isoformat(), "--data", str(sample), "--journey", "subscription",
                             "--lake", str(tmp_path / "not-a-folder")))
    assert line == f"journeys run: --lake {tmp_path / 'not-a-folder'}: not a directory"
    assert time.monotonic() - began < 10  # refused before Beam or GX start


@pytest.mark.parametrize("command", [
    ["backfill", "--from", "2026-01-07", "--to", "2026-01-06"],
    ["run", "--date", "2026-01-06", "--from", "2026-01-07"],
    ["publish", "--date", "2026-01-06", "--from", "2026-01-07"],
])
def test_a_range_that_ends_before_it_starts_is_one_line(sample, command):
    began = time.monotonic()
    line = one_line(journeys(*command, "--data", str(sample), *(["--journey", "subscription"]
                                                             if command[0] != "publish" else [])))
    assert "2026-01-07 is after" in line and "2026-01-06" in line
    assert time.monotonic() - began < 10  # no Prefect server was started


@pytest.mark.parametrize("command", ["run", "nightly"])
def test_a_day_without_raw_files_is_one_line_before_anything_starts(sample, command):
    began = time.monotonic()
    line = one_line(journeys(command, "--date", "2031-01-01", "--data", str(sample), "--journey", "subscription"))
    assert line.startswith(f"journeys {command}: no raw files for 2031-01-01 under {sample} (")
    assert "web/2031-01-01/*.jsonl" in line
    assert time.monotonic() - began < 10


def look_ahead_map(tmp_path) -> str:
    from tests.reliability.harness import REPO

    text = (REPO / "journey_defs" / "subscription.yaml").read_text()
    assert 'page: {prefix: "/verify"}' in text
    path = tmp_path / "lookahead.yaml"
    path.write_text(text.replace('page: {prefix: "/verify"}', 'page: {regex: "^/verify(?=/)"}'))
    return str(path)


@pytest.mark.parametrize("command", [["check"], ["run", "--date", "2026-01-05"], ["nightly", "--date", "2026-01-05"]])
def test_a_regex_duckdb_cannot_compile_is_refused_by_check_run_and_nightly_alike(sample, tmp_path, command):
    """check used to pass it; run then died in Beam (162 lines) and nightly retried it twice."""
    mapped = look_ahead_map(tmp_path)
    args = [*command, mapped] if command == ["check"] else [*command, "--data", str(sample), "--journey", mapped]
    began = time.monotonic()
    line = one_line(journeys(*args))
    assert "lookahead.yaml:" in line and "is not a pattern DuckDB's RE2 accepts" in line
    assert time.monotonic() - began < 10  # refused at load: no pipeline, no server, no retries


def test_check_rejects_a_source_spec_with_an_unknown_key_as_run_does(sample, tmp_path):
    from tests.reliability.harness import REPO

    specs = tmp_path / "specs"
    specs.mkdir()
    text = (REPO / "journey_defs" / "sources" / "phone.yaml").read_text()
    (specs / "phone.yaml").write_text(text + "colour: blue\n")
    check = one_line(journeys("check", "subscription", "--sources-dir", str(specs)))
    run = one_line(journeys("run", "--date", DAY.isoformat(), "--data", str(sample), "--journey", "subscription",
                            "--sources-dir", str(specs)))
    assert "colour" in check and "colour" in run


def test_a_gzipped_raw_file_is_read_and_published(sample, tmp_path):
    data = copy_tree(sample, tmp_path / "data")
    [plain] = (data / "web" / DAY.isoformat()).glob("*.jsonl")
    with open(plain, "rb") as f, gzip.open(str(plain) + ".gz", "wb") as out:
        shutil.copyfileobj(f, out)
    lines = sum(1 for line in plain.read_bytes().splitlines() if line.strip())
    plain.unlink()
    (plain.parent / "notes.txt").write_text("exported by hand\n")  # no source reads it: listed, not lost
    done = run_day(data, DAY)
    assert done.returncode == 0, done.stderr[-3000:]
    con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    try:
        records, events, bad, dups, status = con.execute(
            "SELECT records, events, bad_rows, duplicates, status FROM run_files WHERE source_file = ?",
            [f"web/{DAY}/{plain.name}.gz"]).fetchall()[0]
        published = con.execute("SELECT count(*) FROM events WHERE source_file = ?",
                                [f"web/{DAY}/{plain.name}.gz"]).fetchall()[0][0]
        skipped = con.execute("SELECT status, reason FROM run_files WHERE source_file = ?",
                              [f"web/{DAY}/notes.txt"]).fetchall()
        run = con.execute("SELECT skipped_files, warning_details FROM runs").fetchall()
    finally:
        con.close()
    assert (records, status) == (lines, "read") and records == events + bad + dups and published == events > 0
    assert skipped == [("skipped", "matches no source path: expected web/{date}/*.jsonl")]
    assert run[0][0] == 1 and f"web/{DAY}/notes.txt: matches no source path" in run[0][1]


def test_a_csv_missing_its_id_column_fails_the_run_naming_file_and_column(sample, tmp_path):
    data = copy_tree(sample, tmp_path / "data")
    [calls] = (data / "phone" / DAY.isoformat()).glob("*.csv")
    rows = calls.read_text().splitlines()
    header = rows[0].split(",")
    at = header.index("call_id")
    calls.write_text("\n".join(",".join(v for i, v in enumerate(r.split(",")) if i != at) for r in rows) + "\n")
    done = run_day(data, DAY)
    assert done.returncode == 1
    assert f"phone/{DAY}/{calls.name}: failed: no column 'call_id' (the phone spec's event_id)" in done.stderr
    assert not (data / "warehouse.duckdb").exists() and lake_content(data / "lake") == {}
