"""A run replaces only what it owns: running journey B never changes journey A's rows, in
the lake or the warehouse, whichever runs first — for two maps over the same sources
(`subscription` and an unordered variant) and for a map over another source (`helpdesk`)."""
from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

from flows.night import run_night
from flows.options import NightOptions
from tests.reliability.harness import DAYS, REPO, copy_tree, generate_sample, lake_content, warehouse_content

DAY = DAYS[0]
QUIET = lambda _: None  # noqa: E731


def unordered_variant(folder: Path) -> str:
    text = (REPO / "journey_defs" / "subscription.yaml").read_text()
    path = folder / "subscription_unordered.yaml"
    path.write_text(text.replace("journey: subscription", "journey: subscription_unordered")
                    .replace("ordering: ordered", "ordering: unordered"))
    return str(path)


def run_in_order(data: Path, journeys: list[str]) -> None:
    for journey in journeys:
        run_night(NightOptions(data_dir=str(data), journeys=(journey,), n_buckets=2), DAY, progress=QUIET)


def test_two_journeys_on_one_day_both_survive_either_order(tmp_path):
    base = generate_sample(tmp_path / "base")
    (base / "helpdesk").mkdir()
    shutil.copy(REPO / "tests" / "fixtures" / "raw" / "helpdesk" / "helpdesk.csv", base / "helpdesk" / "helpdesk.csv")
    variant = unordered_variant(tmp_path)
    journeys = ["subscription", variant, "helpdesk"]
    forward = copy_tree(base, tmp_path / "forward" / "data")
    backward = copy_tree(base, tmp_path / "backward" / "data")
    run_in_order(forward, journeys)
    run_in_order(backward, journeys[::-1])

    assert lake_content(forward / "lake") == lake_content(backward / "lake")
    assert warehouse_content(forward / "warehouse.duckdb") == warehouse_content(backward / "warehouse.duckdb")
    con = duckdb.connect(str(forward / "warehouse.duckdb"), read_only=True)
    try:
        per_journey = dict(con.execute("SELECT journey_id, count(*) FROM journeys GROUP BY 1").fetchall())
        per_source = dict(con.execute("SELECT source, count(*) FROM events GROUP BY 1").fetchall())
        run_files = dict(con.execute("SELECT source, count(*) FROM run_files GROUP BY 1").fetchall())
    finally:
        con.close()
    assert set(per_journey) == {"subscription", "subscription_unordered", "helpdesk"} and min(per_journey.values()) > 0
    assert {"web", "email", "helpdesk"} <= set(per_source)
    assert set(run_files) == {p.parts[-3] for p in forward.glob(f"*/{DAY}/*")} | {"helpdesk"}  # every source read
    # the two maps over the same customers agree on how many there are: the later run kept the earlier's
    assert per_journey["subscription"] == per_journey["subscription_unordered"]
