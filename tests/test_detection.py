"""Detection quality, the small version of benchmarks/detection.py (which runs 20 incident and
20 clean seeds): a generated incident (customers entering verify drop out twice as often from
day 21) is alerted for verify within 2 nights of its onset and nowhere before it, and a clean
sample of the same size raises nothing. Everything runs as in production: the backfill flow
through Prefect (its test harness), one pipeline run and publish per night, the alert reaching
a webhook on loopback through Apprise and `journeys alerts`. The incident is the generator's,
not read back from the pipeline's output."""
from __future__ import annotations

from datetime import timedelta

import duckdb
import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.cli import main
from flows.nightly import backfill
from flows.options import NightOptions
from generator.generate import GenerateConfig, generate
from generator.simulate import Incident
from journey_defs.loader import BUILTIN_JOURNEYS

CUSTOMERS, ONSET, NIGHTS = 10_000, 21, 23
INCIDENT = Incident("verify", ONSET, 2.0)


@pytest.fixture(scope="module", autouse=True)
def prefect():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def journey_file(tmp_path_factory):
    """The subscription map with a 14-day baseline, so 23 nights hold a full one before day 21."""
    text = BUILTIN_JOURNEYS["subscription"].read_text()
    assert "baseline_window: 28d" in text
    path = tmp_path_factory.mktemp("maps") / "subscription.yaml"
    path.write_text(text.replace("baseline_window: 28d", "baseline_window: 14d"))
    return str(path)


def backfill_sample(root, journey_file, incident, seed, notify):
    config = GenerateConfig(customers=CUSTOMERS, days=NIGHTS, seed=seed, incident=incident)
    generate(root, config, progress=lambda _: None)
    options = NightOptions(data_dir=str(root), journeys=(journey_file,), n_buckets=2, retry_delay_seconds=0.5,
                           notify=tuple(notify))
    nights = backfill(config.start, config.start + timedelta(days=NIGHTS - 1), options)
    assert [n["date"] for n in nights] == [(config.start + timedelta(days=d)).isoformat() for d in range(NIGHTS)]
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        alerts = con.execute("SELECT stage, dimension, dimension_value, opened_date, recent_drop_rate, "
                             "baseline_drop_rate FROM alerts ORDER BY opened_date").fetchall()
    return config.start, alerts


def test_an_incident_is_alerted_within_two_nights_and_notified(tmp_path, journey_file, receiver, capsys):
    url, received = receiver
    start, alerts = backfill_sample(tmp_path / "incident", journey_file, INCIDENT, seed=101, notify=[url])
    onset = start + timedelta(days=ONSET)
    assert all(opened >= onset for *_, opened, _, _ in alerts), alerts  # no false alarm before the incident
    whole = [a for a in alerts if a[:3] == ("verify", "*", "*")]
    assert whole and whole[0][3] <= onset + timedelta(days=1), alerts
    opened, recent, baseline = whole[0][3:]
    assert recent >= 1.25 * baseline
    new = [r for r in received if f"on {opened}" in r["title"]]
    assert len(new) == 1 and "[NEW] subscription: verify: heading for" in new[0]["message"]
    assert len(received) == len({a[3] for a in alerts})  # one notification per night with changes, no repeats
    capsys.readouterr()
    assert main(["alerts", "--data", str(tmp_path / "incident")]) == 0
    listed = capsys.readouterr().out
    assert "verify: heading for" in listed and str(opened) in listed


def test_a_clean_sample_raises_no_alert(tmp_path, journey_file, receiver):
    url, received = receiver
    _, alerts = backfill_sample(tmp_path / "clean", journey_file, None, seed=1, notify=[url])
    assert alerts == [] and received == []
