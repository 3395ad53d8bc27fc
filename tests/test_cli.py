"""The `journeys` command's argument handling (the commands themselves are tested end to end
elsewhere): one options object per night, paths kept as strings."""
from __future__ import annotations

import pytest

from flows.cli import _options, _parser
from flows.options import default_lake


def test_remote_data_and_lake_paths_reach_the_pipeline_unchanged():
    args = _parser().parse_args(["run", "--date", "2026-02-03", "--data", "gs://bucket/raw/",
                                 "--lake", "s3://bucket/lake", "--journey", "subscription"])
    assert (args.data, args.lake) == ("gs://bucket/raw/", "s3://bucket/lake")
    assert default_lake(args.data) == "gs://bucket/raw/lake"
    assert default_lake("data") == "data/lake"
    options = _options(args)
    assert options.lake_root == "s3://bucket/lake"
    with pytest.raises(ValueError, match="is not local: give the path for warehouse.duckdb explicitly"):
        options.warehouse_path


def test_every_night_command_builds_the_same_options():
    common = ["--data", "d", "--journey", "subscription", "--journey", "helpdesk", "--buckets", "4",
              "--lock-timeout", "none"]
    run = _options(_parser().parse_args(["run", "--date", "2026-02-03", *common]))
    nightly = _options(_parser().parse_args(["nightly", "--date", "2026-02-03", *common]))
    backfill = _options(_parser().parse_args(["backfill", "--from", "2026-02-01", "--to", "2026-02-03", *common]))
    assert run == nightly == backfill
    assert run.journeys == ("subscription", "helpdesk") and run.lock_timeout is None
    assert (run.lake_root, run.warehouse_path, run.validation_path) == ("d/lake", "d/warehouse.duckdb", "d/validation")
