"""Detection quality, the small version of benchmarks/detection.py (which runs 20 incident and
20 clean seeds): a generated incident (customers entering verify drop out twice as often from
day 21) is alerted for verify within 2 nights of its onset and nowhere before it, and a clean
sample of the same size raises nothing. Everything runs as in production: `journeys backfill`
(the Prefect flow, on a temporary server of its own), one pipeline run and publish per
night, the alert reaching a webhook on loopback through Apprise, and `journeys alerts`. The
two samples' backfills run at the same time, as two processes. The incident is the
generator's, not read back from the pipeline's output."""
from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from flows.cli import main
from generator.generate import GenerateConfig, generate
from generator.simulate import Incident
from journey_defs.loader import BUILTIN_JOURNEYS
from tests.conftest import webhook

CUSTOMERS, ONSET, NIGHTS = 10_000, 21, 23
INCIDENT = Incident("verify", ONSET, 2.0)
JOURNEYS = str(Path(sys.executable).with_name("journeys"))


def journey_file(folder: Path) -> str:
    """The subscription map with a 14-day baseline, so 23 nights hold a full one before day 21."""
    text = BUILTIN_JOURNEYS["subscription"].read_text()
    assert "baseline_window: 28d" in text
    path = folder / "subscription.yaml"
    path.write_text(text.replace("baseline_window: 28d", "baseline_window: 14d"))
    return str(path)


def backfill_sample(root: Path, journey: str, incident, seed: int, url: str) -> dict:
    config = GenerateConfig(customers=CUSTOMERS, days=NIGHTS, seed=seed, incident=incident)
    generate(root, config, progress=lambda _: None)
    last = config.start + timedelta(days=NIGHTS - 1)
    done = subprocess.run([JOURNEYS, "backfill", "--from", config.start.isoformat(), "--to", last.isoformat(),
                           "--data", str(root), "--journey", journey, "--buckets", "2", "--notify", url],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    nights = [line.split(":", 1)[0] for line in done.stdout.splitlines() if re.match(r"\d{4}-\d\d-\d\d: ", line)]
    assert nights == [(config.start + timedelta(days=d)).isoformat() for d in range(NIGHTS)]
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        alerts = con.execute("SELECT stage, dimension, dimension_value, opened_date, recent_drop_rate, "
                             "baseline_drop_rate FROM alerts ORDER BY opened_date").fetchall()
    return {"start": config.start, "alerts": alerts, "root": root}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Both samples backfilled at once: (incident, clean), each with the webhook bodies it sent."""
    root = tmp_path_factory.mktemp("detection")
    journey = journey_file(root)
    with ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        hooks = [stack.enter_context(webhook()) for _ in range(2)]
        runs = [pool.submit(backfill_sample, root / "incident", journey, INCIDENT, 101, hooks[0][0]),
                pool.submit(backfill_sample, root / "clean", journey, None, 1, hooks[1][0])]
        results = [run.result() for run in runs]
        for result, (_, received) in zip(results, hooks):
            result["received"] = list(received)
    return results


def test_an_incident_is_alerted_within_two_nights_and_notified(samples, capsys):
    incident = samples[0]
    alerts, received = incident["alerts"], incident["received"]
    onset = incident["start"] + timedelta(days=ONSET)
    assert all(opened >= onset for *_, opened, _, _ in alerts), alerts  # no false alarm before the incident
    whole = [a for a in alerts if a[:3] == ("verify", "*", "*")]
    assert whole and whole[0][3] <= onset + timedelta(days=1), alerts
    opened, recent, baseline = whole[0][3:]
    assert recent >= 1.25 * baseline
    new = [r for r in received if f"on {opened}" in r["title"]]
    assert len(new) == 1 and "[NEW] subscription: verify: heading for" in new[0]["message"]
    assert len(received) == len({a[3] for a in alerts})  # one notification per night with changes, no repeats
    capsys.readouterr()
    assert main(["alerts", "--data", str(incident["root"])]) == 0
    listed = capsys.readouterr().out
    assert "verify: heading for" in listed and str(opened) in listed


def test_a_clean_sample_raises_no_alert(samples):
    clean = samples[1]
    assert clean["alerts"] == [] and clean["received"] == []
