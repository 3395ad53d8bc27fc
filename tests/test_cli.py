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


@pytest.mark.parametrize("text, expected", [
    ("2012-06-30", "2012-06-30"),
    ("2012-06-30T14:00:00Z", "2012-06-30 14:00:00+00:00"),
    ("2012-06-30T14:00:00", "2012-06-30 14:00:00+00:00"),          # no offset: UTC
    ("2012-06-30T23:30:00-02:00", "2012-06-30 23:30:00-02:00"),    # its UTC day is 07-01
])
def test_as_of_takes_a_date_or_an_instant(text, expected):
    args = _parser().parse_args(["run", "--as-of", text, "--data", "d", "--journey", "helpdesk"])
    assert str(args.as_of) == expected and args.date is None


def test_as_of_errors_are_one_line(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "--as-of", "yesterday", "--data", "d", "--journey", "helpdesk"])
    assert "'yesterday' is neither a date (YYYY-MM-DD) nor an ISO timestamp" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "--as-of", "2012-06-30", "--date", "2012-06-30", "--data", "d",
                              "--journey", "helpdesk"])
    assert "not allowed with argument" in capsys.readouterr().err
