"""The options of a night (`journeys run`, `nightly`, `backfill`, `serve`, the Prefect
deployment): one object with every default and every path derived in one place.

Paths are strings, joined as strings: `--data` and `--lake` may be gs:// or s3:// URLs, which
pathlib would fold into `gs:/`. The warehouse and the validation folder are written by
DuckDB and Great Expectations, which write local files only: with a remote `--data` they
must be given explicitly."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from typing import TYPE_CHECKING

from expectations.run_context import GateLimits
from journey_defs.loader import load_journey, resolve_journey
from journey_defs.model import JourneyMap
from journey_defs.source_spec import available_sources

if TYPE_CHECKING:
    from pipelines.journey_pipeline import RunConfig

DEFAULT_LOCK_TIMEOUT = 3600.0
RETRY_DELAY_SECONDS = 30.0


def default_lake(data_dir: str) -> str:
    """DATA/lake."""
    return data_dir.rstrip("/") + "/lake"


def local_beside(data_dir: str, name: str) -> str:
    """DATA/name for outputs that must be local files; a remote DATA needs an explicit path."""
    if "://" in data_dir:
        raise ValueError(f"--data {data_dir} is not local: give the path for {name} explicitly")
    return os.path.join(data_dir, name)


def default_warehouse(data_dir: str) -> str:
    return local_beside(data_dir, "warehouse.duckdb")


@dataclass(frozen=True)
class NightOptions:
    data_dir: str
    journeys: tuple[str, ...]                  # built-in names or YAML files
    lake: str | None = None                    # default DATA/lake
    warehouse: str | None = None               # default DATA/warehouse.duckdb
    validation_dir: str | None = None          # default DATA/validation
    sources_dirs: tuple[str, ...] = ()
    n_buckets: int = 16
    bad_row_threshold: float = 0.05
    off_map_threshold: float = 0.10
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT   # None: wait for the lake without limit
    retry_delay_seconds: float = RETRY_DELAY_SECONDS
    notify: tuple[str, ...] = ()               # Apprise URLs (JOURNEYS_NOTIFY adds more)
    gate: bool = True
    publish: bool = True
    runner_flags: tuple[str, ...] = ()        # Beam pipeline options; () = the in-memory DirectRunner

    @property
    def lake_root(self) -> str:
        return self.lake or default_lake(self.data_dir)

    @property
    def warehouse_path(self) -> str | None:
        """None when the night does not publish."""
        return (self.warehouse or default_warehouse(self.data_dir)) if self.publish else None

    @property
    def validation_path(self) -> str | None:
        """None when the night has no quality gate."""
        return (self.validation_dir or local_beside(self.data_dir, "validation")) if self.gate else None

    @cached_property
    def journey_maps(self) -> tuple[JourneyMap, ...]:
        known = available_sources(self.sources_dirs)
        return tuple(load_journey(resolve_journey(name), known_sources=known) for name in self.journeys)

    @property
    def gate_limits(self) -> GateLimits:
        return GateLimits(bad_row_threshold=self.bad_row_threshold, off_map_share=self.off_map_threshold)

    def run_config(self, as_of: date, ingest_days: tuple[date, ...] = (), as_of_at: datetime | None = None) -> RunConfig:
        from pipelines.journey_pipeline import DEFAULT_RUNNER_FLAGS, RunConfig  # Beam: only when a night runs

        return RunConfig(data_dir=self.data_dir, lake=self.lake_root, journeys=self.journey_maps, as_of=as_of,
                         ingest_days=ingest_days or (as_of,), sources_dirs=tuple(self.sources_dirs),
                         n_buckets=self.n_buckets, bad_row_threshold=self.bad_row_threshold,
                         runner_flags=tuple(self.runner_flags) or DEFAULT_RUNNER_FLAGS, as_of_at=as_of_at)
