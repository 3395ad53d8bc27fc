"""`flows.prefect_api.temporary_api`: a flow run inside it is recorded by our own server, not
by a Prefect temporary server of Prefect's; the server dies when its parent is SIGKILLed (and
the watchdog alone is enough for that); a configured API URL starts nothing; concurrent runs
each get their own database; a server that cannot start fails in one line naming its port.

Scripts run as subprocesses with PREFECT_HOME in a temporary directory, so a fallback to
Prefect's own server (and its ~/.prefect/prefect.db) shows up as a prefect.db there."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from flows.prefect_api import ApiServerFailed, _sweep_stale, temporary_api
from tests.prefect_client import api, wait_for

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from prefect import flow, get_client, task
    from prefect.server.api.server import SubprocessASGIServer
    from flows.prefect_api import temporary_api

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow
    def trivial(n: int) -> int:
        return sum(double(i) for i in range(n))

    @flow(name="served-trivial")
    def served(out: str) -> None:
        Path(out).write_text(json.dumps({"api": os.environ.get("PREFECT_API_URL"), "pid": os.getpid()}))

    if __name__ == "__main__":  # the Runner imports this file to run `served`
        mode = sys.argv[1]
        with temporary_api(progress=None) as api:
            report = {"pid": api.pid, "url": api.url, "env_url": os.environ.get("PREFECT_API_URL")}
            if mode in ("once", "sleep"):
                state = trivial(7, return_state=True)
                with get_client(sync_client=True) as client:
                    run = client.read_flow_run(state.state_details.flow_run_id)
                    tasks = client.read_task_runs()
                report.update(result=state.result(), recorded=run.state_type.value,
                              client_url=str(client.api_url), task_runs=len(tasks))
            report["prefect_servers"] = len(SubprocessASGIServer._instances)
            print(json.dumps(report), flush=True)
            if mode == "sleep":
                time.sleep(600)
            if mode == "serve":
                served.serve(name="served-trivial", global_limit=1)
""")


def start(tmp_path: Path, name: str, mode: str, profile: str | None = None, **env) -> tuple[subprocess.Popen, Path]:
    """The script in `mode`, in a PREFECT_HOME of its own (with `profile` as its profiles.toml),
    stderr to a file."""
    home = tmp_path / f"{name}-home"
    home.mkdir()
    if profile:
        (home / "profiles.toml").write_text(profile)
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    environment.update(PREFECT_HOME=str(home), PYTHONPATH=str(REPO), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                       DO_NOT_TRACK="1", **env)
    stderr = open(tmp_path / f"{name}.stderr", "w")
    process = subprocess.Popen([sys.executable, str(script), mode], cwd=REPO, env=environment,
                               stdout=subprocess.PIPE, stderr=stderr, text=True)
    stderr.close()
    return process, home


def report_of(process: subprocess.Popen, timeout: float, stderr: Path) -> dict:
    """The script's JSON line (it sleeps afterwards in "sleep" mode, so no communicate())."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if process.poll() is not None and lines.empty():
                break
            continue
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no report from the script (exit {process.poll()}): {stderr.read_text()[-3000:]}")


def running(pid: int) -> bool:
    """Exists and is not a zombie (an orphan's reaper may be slow or absent in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not running(pid)


def test_a_flow_runs_on_our_server_which_dies_when_its_parent_is_killed(tmp_path):
    script, home = start(tmp_path, "killed", "sleep")
    server = None
    try:
        report = report_of(script, 180, tmp_path / "killed.stderr")
        server = report["pid"]
        assert (report["result"], report["recorded"], report["task_runs"]) == (42, "COMPLETED", 7)
        assert report["client_url"].rstrip("/") == report["url"] == report["env_url"]
        assert report["prefect_servers"] == 0  # Prefect never started a temporary server of its own
        assert children(script.pid) == [server]
        assert healthy(report["url"])
        database = dict(line.split("=", 1) for line in Path(f"/proc/{server}/environ").read_text().split("\0")
                        if "=" in line)["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
        run_dir = Path(database.removeprefix("sqlite+aiosqlite:///")).parent
        assert run_dir.name.startswith(f"journeys-prefect-{script.pid}-") and (run_dir / "prefect.db").is_file()
        assert not (home / "prefect.db").exists()

        script.send_signal(signal.SIGKILL)
        script.wait(10)
        assert gone_within(server, 10), f"server {server} outlived its SIGKILLed parent"
        assert not healthy(report["url"])
        assert run_dir.exists()  # nobody left to remove it ...
        _sweep_stale()
        assert not run_dir.exists()  # ... until the next temporary_api() does
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
        if server and running(server):
            os.kill(server, signal.SIGKILL)


WATCHED = textwrap.dedent("""
    import subprocess, sys, time
    if sys.argv[1] == "middle":
        child = subprocess.Popen([sys.executable, __file__, "watched", str(__import__("os").getpid())])
        print(child.pid, flush=True)
        time.sleep(600)
    else:
        import flows.prefect_api as api
        sys.platform = "darwin"  # no PR_SET_PDEATHSIG: the watchdog thread alone
        api._die_with(int(sys.argv[2]))
        time.sleep(600)
""")


def test_the_watchdog_alone_ends_the_server_when_its_parent_is_killed(tmp_path):
    script = tmp_path / "watched.py"
    script.write_text(WATCHED)
    middle = subprocess.Popen([sys.executable, str(script), "middle"], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    watched = int(middle.stdout.readline())
    try:
        time.sleep(1.0)  # the watched process has set up its watchdog
        assert running(watched)
        middle.kill()
        middle.wait()
        assert gone_within(watched, 5)
    finally:
        if running(watched):
            os.kill(watched, signal.SIGKILL)


@pytest.mark.parametrize("where", ["environment", "profile"])
def test_a_configured_api_url_starts_nothing(tmp_path, where):
    url = "http://127.0.0.1:9/api"  # never contacted: a "configured" run does not call the API
    if where == "environment":
        script, home = start(tmp_path, where, "configured", PREFECT_API_URL=url)
    else:
        script, home = start(tmp_path, where, "configured",
                             profile=f'active = "remote"\n[profiles.remote]\nPREFECT_API_URL = "{url}"\n')
    report = report_of(script, 60, tmp_path / f"{where}.stderr")
    assert script.wait(30) == 0
    assert (report["pid"], report["url"], report["prefect_servers"]) == (None, url, 0)
    assert list(home.iterdir()) in ([], [home / "profiles.toml"])


def test_concurrent_runs_each_complete_on_their_own_server(tmp_path):
    scripts = [start(tmp_path, name, "once") for name in ("first", "second")]
    try:
        reports = [report_of(script, 240, tmp_path / f"{name}.stderr")
                   for (script, _), name in zip(scripts, ("first", "second"))]
        for script, _ in scripts:
            assert script.wait(60) == 0
    finally:
        for script, _ in scripts:
            if script.poll() is None:
                script.kill()
                script.wait()
    assert [(r["result"], r["recorded"], r["task_runs"], r["prefect_servers"]) for r in reports] == \
        [(42, "COMPLETED", 7, 0)] * 2
    assert reports[0]["url"] != reports[1]["url"]
    assert not any(running(r["pid"]) for r in reports)  # stopped on leaving the block
    for name in ("first", "second"):
        assert "database is locked" not in (tmp_path / f"{name}.stderr").read_text()


def test_a_served_flow_runs_in_a_runner_subprocess_against_our_server(tmp_path):
    script, home = start(tmp_path, "serve", "serve")
    server = None
    try:
        report = report_of(script, 180, tmp_path / "serve.stderr")
        base, server = report["url"], report["pid"]
        deployment = wait_for(lambda: next(iter(api(base, "/deployments/filter",
                                                    {"deployments": {"name": {"any_": ["served-trivial"]}}})), None),
                              120, "the served deployment")
        out = tmp_path / "run.json"
        run = api(base, f"/deployments/{deployment['id']}/create_flow_run", {"parameters": {"out": str(out)}})
        final = wait_for(lambda: (r := api(base, f"/flow_runs/{run['id']}"))["state_type"] in
                         ("COMPLETED", "FAILED", "CRASHED") and r, 120, "the triggered run")
        assert final["state_type"] == "COMPLETED", final["state"].get("message")
        ran = json.loads(out.read_text())
        assert ran["api"] == base and ran["pid"] not in (script.pid, server)  # a subprocess, told where the API is
        assert not (home / "prefect.db").exists()
    finally:
        script.terminate()  # the Runner's graceful shutdown, then the block's exit stops the server
        try:
            script.wait(60)
        except subprocess.TimeoutExpired:
            script.kill()
            script.wait()
        if server:
            assert gone_within(server, 10)


@pytest.fixture
def no_configured_api(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield monkeypatch


def test_a_server_that_cannot_start_fails_in_one_line_naming_its_port(no_configured_api):
    no_configured_api.setenv("PREFECT_SERVER_DATABASE_TIMEOUT", "not-a-number")  # the child's settings fail
    with pytest.raises(ApiServerFailed) as failed:
        with temporary_api(progress=None):
            pytest.fail("entered the block without a server")
    message = str(failed.value)
    assert message.startswith("temporary Prefect server on 127.0.0.1:") and "exited with code" in message
    assert "not-a-number" in message and "\n" not in message


def test_a_server_too_slow_to_start_fails_and_is_stopped(no_configured_api):
    before = set(children(os.getpid()))
    with pytest.raises(ApiServerFailed, match=r"on 127\.0\.0\.1:\d+ did not answer /api/health within 0.5 s"):
        with temporary_api(progress=None, timeout=0.5):
            pytest.fail("entered the block without a server")
    assert set(children(os.getpid())) <= before
