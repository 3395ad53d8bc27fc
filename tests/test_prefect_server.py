"""The flows against a real `prefect server start` on loopback, started by the test: a
`journeys nightly` run is recorded there as completed, and `journeys serve` registers the
02:00 deployment (time zone, one run at a time) whose triggered run completes."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.warehouse_sample import DAYS
from tests.prefect_client import api, wait_for

REPO = Path(__file__).resolve().parents[1]
JOURNEYS = [sys.executable, "-m", "flows.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect_home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    base = f"http://127.0.0.1:{port}/api"
    try:
        wait_for(lambda: api(base, "/health") is True, 120, "the Prefect server")
        yield base, {**env, "PREFECT_API_URL": base}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def copy_sample(sample, tmp_path) -> str:
    data, _ = sample
    target = tmp_path / "data"
    shutil.copytree(data, target, ignore=shutil.ignore_patterns("lake", "validation", "warehouse.duckdb*"))
    return str(target)


def flow_runs(base: str) -> list[dict]:
    return api(base, "/flow_runs/filter", {"sort": "EXPECTED_START_TIME_DESC", "limit": 50})


def test_a_nightly_run_is_recorded_by_the_real_server(server, sample, tmp_path):
    base, env = server
    data = copy_sample(sample, tmp_path)
    done = subprocess.run([*JOURNEYS, "nightly", "--date", DAYS[0].isoformat(), "--data", data,
                           "--journey", "subscription", "--buckets", "4"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = [r for r in flow_runs(base) if (r["parameters"].get("options") or {}).get("data_dir") == data]
    assert [r["state_type"] for r in runs] == ["COMPLETED"]


def test_serve_registers_the_schedule_and_runs_what_it_is_asked(server, sample, tmp_path):
    base, env = server
    data = copy_sample(sample, tmp_path)
    serving = subprocess.Popen([*JOURNEYS, "serve", "--data", data, "--journey", "subscription", "--buckets", "4",
                                "--timezone", "Europe/Berlin", "--name", "test-nightly"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deployment = wait_for(lambda: next(iter(api(base, "/deployments/filter",
                                                    {"deployments": {"name": {"any_": ["test-nightly"]}}})), None),
                              120, "the served deployment")
        [schedule] = deployment["schedules"]
        assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == ("0 2 * * *", "Europe/Berlin")
        assert deployment["global_concurrency_limit"]["limit"] == 1
        run = api(base, f"/deployments/{deployment['id']}/create_flow_run",
                  {"parameters": {"run_date": DAYS[0].isoformat()}})
        final = wait_for(lambda: (r := api(base, f"/flow_runs/{run['id']}"))["state_type"] in
                         ("COMPLETED", "FAILED", "CRASHED") and r, 300, "the triggered run")
        assert final["state_type"] == "COMPLETED", final["state"].get("message")
        assert (Path(data) / "warehouse.duckdb").is_file()
    finally:
        os.killpg(serving.pid, signal.SIGTERM)
        serving.wait(60)


def test_prefect_yaml_deploys_the_nightly_schedule(server, tmp_path):
    base, env = server
    env = {**env, "JOURNEYS_HOME": str(REPO), "JOURNEYS_DATA": str(tmp_path / "data"), "JOURNEYS_TZ": "Europe/Berlin"}
    prefect = [sys.executable, "-m", "prefect"]
    subprocess.run([*prefect, "work-pool", "create", "journeys", "--type", "process"], cwd=REPO, env=env,
                   capture_output=True, text=True, timeout=120, check=True)
    done = subprocess.run([*prefect, "--no-prompt", "deploy", "--all"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [deployment] = api(base, "/deployments/filter", {"deployments": {"name": {"any_": ["journeys-nightly"]}}})
    [schedule] = deployment["schedules"]
    assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == ("0 2 * * *", "Europe/Berlin")
    assert deployment["parameters"]["options"]["data_dir"] == str(tmp_path / "data")
    assert deployment["global_concurrency_limit"]["limit"] == 1 and deployment["work_pool_name"] == "journeys"
