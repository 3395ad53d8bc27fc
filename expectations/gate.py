"""The quality gate of a run: load the run's staged output, validate it with Great
Expectations checkpoints (one per suite, a file-backed GX project under the data directory
so results persist and data docs are built), and say whether it may be published.

A critical failure raises GateFailed with a summary naming each failed expectation, its
observed value and sample rows; warnings come back as check rows to record and report."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
import pyarrow as pa  # noqa: E402
from great_expectations.execution_engine import pandas_execution_engine  # noqa: E402
from great_expectations.core.run_identifier import RunIdentifier  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

from expectations.frames import as_json, drift_summary, load  # noqa: E402
from expectations.run_context import GateLimits, RunContext  # noqa: E402
from expectations.suites import CRITICAL, suites  # noqa: E402
from journey_defs.outputs import CHECKS  # noqa: E402

DATASOURCE = "journey_run"

# GX fingerprints every pandas batch under 1 GB by hashing all of it (a batch marker, not a
# check): 5 s of a 17 s gate on 5M events. Frames here are rebuilt per run and never looked
# up by fingerprint, so no frame is fingerprinted.
pandas_execution_engine.HASH_THRESHOLD = 0


class GateFailed(RuntimeError):
    """Critical expectations failed: the run must not be published."""

    def __init__(self, message: str, checks: pa.Table):
        super().__init__(message)
        self.checks = checks


@dataclass
class GateResult:
    checks: pa.Table
    seconds: float
    docs: Path

    @property
    def warnings(self) -> list[dict]:
        return [r for r in self.checks.to_pylist() if not r["success"] and r["severity"] != CRITICAL]


def run_gate(context: RunContext, validation_dir: str | Path, limits: GateLimits = GateLimits(),
             progress=print) -> GateResult:
    began = time.perf_counter()
    frames = load(context, limits)
    gx_context = _project(Path(validation_dir))
    source = gx_context.data_sources.add_or_update_pandas(DATASOURCE)
    rows, results = [], []
    for suite_name, (frame_name, expectations) in suites(context, limits).items():
        asset = next((a for a in source.assets if a.name == frame_name), None) or source.add_dataframe_asset(frame_name)
        batch = next((b for b in asset.batch_definitions if b.name == "whole"), None) or \
            asset.add_batch_definition_whole_dataframe("whole")
        suite = gx_context.suites.add_or_update(gx.ExpectationSuite(name=suite_name, expectations=expectations))
        definition = gx_context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=suite_name, data=batch, suite=suite))
        frame = frames.frames[frame_name]
        checkpoint = gx_context.checkpoints.add_or_update(gx.Checkpoint(
            name=suite_name, validation_definitions=[definition], result_format=_result_format(frame, limits)))
        outcome = checkpoint.run(batch_parameters={"dataframe": frame},
                                 run_id=RunIdentifier(run_name=context.run_id))
        results += list(outcome.run_results)
        for validation in outcome.run_results.values():
            summary = drift_summary(frame_name, frames.details.get(frame_name), limits)
            rows += [_check_row(context, suite_name, r, frames.details.get(frame_name), summary)
                     for r in validation.results]
    gx_context.build_data_docs(resource_identifiers=results)  # this run's pages (+ the index), not every night's
    checks = pa.Table.from_pylist(rows, schema=CHECKS)
    docs = Path(validation_dir) / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    seconds = time.perf_counter() - began
    _record(Path(validation_dir), context, checks, seconds)
    failed = [r for r in rows if not r["success"] and r["severity"] == CRITICAL]
    warned = [r for r in rows if not r["success"] and r["severity"] != CRITICAL]
    progress(f"gate {context.run_id}: {len(rows)} expectations, {len(failed)} critical failures, "
             f"{len(warned)} warnings in {seconds:.1f} s (data docs: {docs})")
    for r in warned:
        progress(f"  {_describe(r)}")
    if failed:
        raise GateFailed("critical expectations failed, nothing was published:\n" +
                         "\n".join(f"  {_describe(r)}" for r in failed), checks)
    return GateResult(checks, seconds, docs)


def _project(root: Path):
    """The file-backed GX project (created on first use), progress bars off."""
    root.mkdir(parents=True, exist_ok=True)
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="file", project_root_dir=str(root))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


IDENTIFYING = ("journey_id", "customer_id", "stage", "source", "source_file")
"""Columns that say who or what a failing row is about: a failure names them, not only values."""


def _result_format(frame, limits: GateLimits) -> dict:
    """BASIC, or SUMMARY with the frame's identifying columns beside each failing value."""
    named = [c for c in IDENTIFYING if c in frame.columns]
    if not named:
        return {"result_format": "BASIC", "partial_unexpected_count": limits.sample_rows}
    return {"result_format": "SUMMARY", "partial_unexpected_count": limits.sample_rows,
            "unexpected_index_column_names": named}


def _check_row(context: RunContext, suite: str, result, details, summary: str | None) -> dict:
    config = result.expectation_config
    kwargs = config.kwargs
    columns = ",".join(str(kwargs[k]) for k in ("column", "column_A", "column_B") if k in kwargs) or \
        ",".join(kwargs.get("column_list", []))
    found = result.result or {}
    error = (result.exception_info or {}).get("exception_message") if result.exception_info else None
    if error is None and isinstance(result.exception_info, dict):
        error = next((v.get("exception_message") for v in result.exception_info.values()
                      if isinstance(v, dict) and v.get("raised_exception")), None)
    unexpected = found.get("unexpected_count")
    observed = found.get("observed_value")
    if error:
        observed = f"error: {error}"
    elif summary and not result.success:
        observed = summary
    elif observed is None and unexpected is not None:
        observed = f"{unexpected} of {found.get('element_count')} rows unexpected"
    return {
        "run_id": context.run_id, "as_of_date": context.as_of, "suite": suite, "expectation": config.type,
        "columns": columns, "severity": str(getattr(config.severity, "value", config.severity)),
        "success": bool(result.success), "observed": None if observed is None else str(observed),
        "unexpected_count": unexpected, "sample": as_json(found.get("partial_unexpected_index_list") or found.get("partial_unexpected_list") or []),
        "details": as_json(details) if details else None,
    }


def _describe(row: dict) -> str:
    text = f"{row['severity']} {row['suite']}.{row['expectation']}({row['columns']}): {row['observed']}"
    sample = json.loads(row["sample"] or "[]")
    if sample:
        text += f"; e.g. {json.dumps(sample[:3], default=str)}"
    if row["details"]:
        text += f"; {row['details']}"
    return text


def _record(root: Path, context: RunContext, checks: pa.Table, seconds: float) -> None:
    """One JSON summary per run under the validation folder (failed runs too: they reach no
    warehouse, this is their record)."""
    runs = root / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    failed = [r for r in checks.to_pylist() if not r["success"]]
    summary = {"run_id": context.run_id, "as_of_date": context.as_of.isoformat(), "seconds": round(seconds, 2),
               "status": "failed" if any(r["severity"] == CRITICAL for r in failed) else "passed",
               "expectations": checks.num_rows, "failed": failed}
    (runs / f"{context.run_id}.json").write_text(json.dumps(summary, default=str, indent=1))
