"""`journeys summary`: read a data directory through the journey's source specs and show what
is in it — records, events, bad rows by reason, duplicates — and, for a generated sample,
how many customers reached each stage according to its ground truth."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from journey_defs.loader import load_journey, resolve_journey
from journey_defs.source_spec import available_sources, load_sources
from transforms.parse import dedupe, parse_files, read_identity_table, source_files

FILES_PER_BATCH = 8
"""Files parsed per query: amortises the fixed cost of a query, keeps memory bounded."""


def print_summary(data_dir: Path, journey_name: str, sources_dirs=(), out=print) -> dict:
    """Print the summary and return its numbers (used by tests)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory {data_dir} does not exist")
    journey = load_journey(resolve_journey(journey_name), known_sources=available_sources(sources_dirs))
    specs = load_sources(journey.sources, sources_dirs)
    out(f"Journey {journey.id} v{journey.version} ({journey.ordering}): {' → '.join(journey.stage_ids)}")
    out(f"Data: {data_dir}")
    out(f"{'source':<10}{'files':>7}{'records':>11}{'events':>11}{'bad rows':>10}{'duplicates':>12}")
    totals = {"records": 0, "events": 0, "bad_rows": 0, "duplicates": 0}
    reasons: Counter = Counter()
    for name, spec in specs.items():
        files = source_files(spec, data_dir)
        if spec.kind == "identity":
            rows = sum(read_identity_table(spec, path).num_rows for path, _ in files)
            out(f"{name:<10}{len(files):>7}{rows:>11,}  identity table (customers)")
            continue
        results = [parse_files(spec, files[i:i + FILES_PER_BATCH], data_dir=data_dir)
                   for i in range(0, len(files), FILES_PER_BATCH)]
        events = pa.concat_tables([r.events for r in results]) if results else None
        unique, duplicates = dedupe(events) if events is not None else (None, 0)
        records = sum(r.records_read for r in results)
        bad = sum(r.bad_rows.num_rows for r in results)
        for r in results:
            reasons.update(r.bad_rows.column("reason").to_pylist())
        n_events = unique.num_rows if unique is not None else 0
        out(f"{name:<10}{len(files):>7}{records:>11,}{n_events:>11,}{bad:>10,}{duplicates:>12,}")
        for key, value in (("records", records), ("events", n_events), ("bad_rows", bad), ("duplicates", duplicates)):
            totals[key] += value
    out(f"{'total':<17}{totals['records']:>11,}{totals['events']:>11,}{totals['bad_rows']:>10,}{totals['duplicates']:>12,}")
    if reasons:
        out("bad rows by reason: " + ", ".join(f"{r} {n:,}" for r, n in sorted(reasons.items())))
    summary = {"totals": totals, "bad_rows_by_reason": dict(reasons)}
    truth = data_dir / "ground_truth"
    if (truth / "summary.json").exists():
        summary["stages"] = _print_ground_truth_stages(truth, journey, out)
    return summary


def _print_ground_truth_stages(truth: Path, journey, out) -> dict:
    """Stage reach and status at the end of the period, from the generator's ground truth."""
    customers = pq.read_table(truth / "customers.parquet")
    facts = json.loads((truth / "summary.json").read_text())
    out(f"Customers reaching each stage (generator ground truth, {customers.num_rows:,} customers):")
    reached, previous = {}, None
    for stage in journey.stages:
        count = customers.num_rows - customers.column(f"entered_{stage.id}").null_count
        reached[stage.id] = count
        step = f"  ({count / previous:6.1%} of previous)" if previous else ""
        out(f"  {stage.name:<18}{count:>9,}{step}{'  optional' if stage.optional else ''}")
        previous = count if not stage.optional else previous
    out("status at end of period: " + ", ".join(f"{k} {v:,}" for k, v in sorted(facts["status_at_end"].items())))
    return reached
