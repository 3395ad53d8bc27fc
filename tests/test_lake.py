"""The lake: partitions written through Beam FileSystems, committed by replacement."""
from __future__ import annotations

from datetime import date

import pyarrow as pa

from transforms import lake
from transforms.manifest import build_manifest, problems

DAY = date(2026, 1, 5)


def test_commit_replaces_owned_partitions_and_keeps_others(tmp_path):
    root, staging = str(tmp_path / "lake"), str(tmp_path / "staging")
    lake.write_table(lake.part_path(root, "events", DAY, "old1"), pa.table({"x": [1]}))
    lake.write_table(lake.part_path(root, "events", DAY, "old2"), pa.table({"x": [2]}))
    lake.write_table(lake.part_path(root, "journeys", DAY, "keep"), pa.table({"x": [3]}))
    lake.write_table(lake.part_path(root, "bad_rows", DAY, "stale"), pa.table({"x": [4]}))
    lake.write_table(lake.part_path(staging, "events", DAY, "new"), pa.table({"x": [5]}))
    lake.commit(staging, root, [("events", DAY), ("bad_rows", DAY)])
    assert lake.read_partition(root, "events", DAY).column("x").to_pylist() == [5]
    assert lake.partition_files(root, "bad_rows", DAY) == []  # owned by the run, now empty
    assert lake.read_partition(root, "journeys", DAY).column("x").to_pylist() == [3]
    assert not (tmp_path / "staging").exists()


def test_discard_leaves_the_lake_alone(tmp_path):
    root, staging = str(tmp_path / "lake"), str(tmp_path / "staging")
    lake.write_table(lake.part_path(root, "events", DAY, "a"), pa.table({"x": [1]}))
    lake.write_table(lake.part_path(staging, "events", DAY, "b"), pa.table({"x": [2]}))
    lake.discard(staging)
    assert lake.read_partition(root, "events", DAY).column("x").to_pylist() == [1]
    assert not (tmp_path / "staging").exists()


def test_manifest_balances_only_when_every_record_is_accounted_for():
    files = [pa.table({"source": ["web"] * 4, "source_file": ["a", "b", "c.txt", "d.csv"],
                       "source_date": pa.array([DAY] * 4), "records": [10, 5, 0, 3], "parsed_events": [9, 5, 0, 0],
                       "bad_rows": [1, 0, 0, 0], "status": ["read", "read", "skipped", "failed"],
                       "reason": [None, None, "matches no source path: expected web/{date}/*.jsonl",
                                  "no column 'call_id' (the phone spec's event_id); the header has caller_number"]})]
    dups = [pa.table({"source_file": ["a"], "n_duplicates": [2]})]
    written = [pa.table({"source_file": ["a", "b"], "n_events": [7, 4]})]
    table = build_manifest("r1", DAY, files, dups, written)
    manifest = table.to_pylist()
    assert [(m["source_file"], m["events"], m["duplicates"], m["balanced"], m["status"]) for m in manifest] == [
        ("a", 7, 2, True, "read"),
        ("b", 4, 0, False, "read"),  # b lost a record somewhere: flagged
        ("c.txt", 0, 0, True, "skipped"),  # listed with its reason, nothing to account for
        ("d.csv", 0, 0, False, "failed"),  # never balanced: the run must stop
    ]
    assert [m["reason"] for m in manifest][2:] == [files[0]["reason"][2].as_py(), files[0]["reason"][3].as_py()]
    assert problems(table) == [
        "d.csv: failed: no column 'call_id' (the phone spec's event_id); the header has caller_number",
        "b: 5 records != 4 events + 0 bad rows + 0 duplicates",
    ]
    assert problems(table.slice(0, 1)) == []
