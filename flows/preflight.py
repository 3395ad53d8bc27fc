"""What is checked before a night starts anything (a Beam pipeline, a Prefect server): the
definitions load, the dates make sense, each day has raw files, and the lake, warehouse and
validation folders can be written. Each problem is one line naming the path or the value,
raised as ValueError (the command exits 2), so a typo costs a second, not a traceback."""
from __future__ import annotations

import os
from datetime import date, timedelta

from flows.options import NightOptions
from journey_defs.source_spec import load_sources
from transforms.parse import source_files


class SetupError(ValueError):
    """The night cannot start: one line saying what to fix."""


def days_between(first: date, last: date, what: str = "--from", until: str = "--to") -> list[date]:
    if first > last:
        raise SetupError(f"{what} {first} is after {until} {last}")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def check_ready(options: NightOptions, days: list[date]) -> None:
    """Raise SetupError (or ConfigError from the definitions) unless a night over `days` can run."""
    journeys = options.journey_maps
    specs = load_sources(sorted({s for j in journeys for s in j.sources}), options.sources_dirs)
    events = [spec for spec in specs.values() if spec.kind == "events"]
    for day in days:
        if not any(source_files(spec, options.data_dir, day) for spec in events):
            raise SetupError(f"no raw files for {day} under {options.data_dir} ("
                             + ", ".join(spec.path.replace("{date}", day.isoformat()) for spec in events)
                             + "): nothing to run")
    writable_folder(options.lake_root, "--lake")
    if options.warehouse_path:
        writable_folder(os.path.dirname(os.path.abspath(options.warehouse_path)), "--warehouse's folder")
        if os.path.isdir(options.warehouse_path):
            raise SetupError(f"--warehouse {options.warehouse_path}: is a directory, expected a DuckDB file")
    if options.validation_path:
        writable_folder(options.validation_path, "--validation-dir")


def writable_folder(path: str, what: str) -> None:
    """Create `path` if needed and prove it takes a file; remote (gs://, s3://) folders are
    left to the run, which reports their errors with the path."""
    if "://" in path:
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise SetupError(f"{what} {path}: not a directory")
    probe = os.path.join(path, f".journeys-probe-{os.getpid()}")
    try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise SetupError(f"{what} {exc.filename or path}: {exc.strerror or exc}") from None
