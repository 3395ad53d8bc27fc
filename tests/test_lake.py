"""The lake: partitions written through Beam FileSystems, committed by replacement."""
from __future__ import annotations

from datetime import date

import pyarrow as pa

from transforms import lake
from transforms.manifest import build_manifest

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
    files = [pa.table({"source": ["web", "web"], "source_file": ["a", "b"], "source_date": pa.array([DAY, DAY]),
                       "records": [10, 5], "parsed_events": [9, 5], "bad_rows": [1, 0]})]
    dups = [pa.table({"source_file": ["a"], "n_duplicates": [2]})]
    written = [pa.table({"source_file": ["a", "b"], "n_events": [7, 4]})]
    manifest = build_manifest("r1", DAY, files, dups, written).to_pylist()
    assert [(m["source_file"], m["events"], m["duplicates"], m["balanced"]) for m in manifest] == [
        ("a", 7, 2, True), ("b", 4, 0, False)]  # b lost a record somewhere: flagged
