"""The `journeys` command's argument handling (the commands themselves are tested end to end
elsewhere)."""
from __future__ import annotations

from flows.cli import _parser, default_lake


def test_remote_data_and_lake_paths_reach_the_pipeline_unchanged():
    args = _parser().parse_args(["run", "--date", "2026-02-03", "--data", "gs://bucket/raw/",
                                 "--lake", "s3://bucket/lake", "--journey", "subscription"])
    assert (args.data, args.lake) == ("gs://bucket/raw/", "s3://bucket/lake")
    assert default_lake(args.data) == "gs://bucket/raw/lake"
    assert default_lake("data") == "data/lake"
