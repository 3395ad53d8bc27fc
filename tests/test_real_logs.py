"""The real logs come from one configurable directory (JOURNEYS_REAL_LOGS, default
../shared/data): tests that need them are skipped, saying where they looked and which variable
to set, when it or their file is missing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """\
def test_helpdesk(helpdesk_csv, real_logs):
    print("HELPDESK", helpdesk_csv, real_logs)

def test_bpic(bpic2013_xes, real_logs):
    print("BPIC", bpic2013_xes, real_logs)
"""


def run_probe(tmp_path: Path, real_logs: str | None) -> subprocess.CompletedProcess:
    """pytest on a probe test file that uses the conftest's fixtures (loaded as a plugin),
    with JOURNEYS_REAL_LOGS set to `real_logs` (or unset)."""
    probe = tmp_path / "probe" / "test_probe.py"
    probe.parent.mkdir(exist_ok=True)
    probe.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "JOURNEYS_REAL_LOGS"}
    if real_logs is not None:
        env["JOURNEYS_REAL_LOGS"] = real_logs
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-rs", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--rootdir", str(probe.parent), "-c", os.devnull, str(probe)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_fixtures_read_the_real_logs_from_the_variables_directory(tmp_path):
    logs = tmp_path / "logs"
    (logs / "helpdesk").mkdir(parents=True)
    (logs / "helpdesk" / "helpdesk.csv").write_text("x\n")
    (logs / "bpic2013_incidents").mkdir()
    (logs / "bpic2013_incidents" / "bpic2013_incidents.xes.gz").write_bytes(b"")
    result = run_probe(tmp_path, str(logs))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"HELPDESK {logs}/helpdesk/helpdesk.csv {logs}" in result.stdout
    assert f"BPIC {logs}/bpic2013_incidents/bpic2013_incidents.xes.gz {logs}" in result.stdout
    assert "2 passed" in result.stdout


def test_a_missing_directory_skips_naming_it_and_the_variable(tmp_path):
    missing = tmp_path / "nowhere"
    result = run_probe(tmp_path, str(missing))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 skipped" in result.stdout
    skips = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 2 and all(f"no directory {missing}" in s and "JOURNEYS_REAL_LOGS" in s for s in skips), skips


def test_a_missing_file_skips_naming_the_file_the_directory_and_the_variable(tmp_path):
    logs = tmp_path / "logs"
    (logs / "helpdesk").mkdir(parents=True)
    (logs / "helpdesk" / "helpdesk.csv").write_text("x\n")
    result = run_probe(tmp_path, str(logs))
    assert "1 passed, 1 skipped" in result.stdout, result.stdout + result.stderr
    [skip] = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert "bpic2013_incidents/bpic2013_incidents.xes.gz" in skip and str(logs) in skip and "JOURNEYS_REAL_LOGS" in skip


def test_without_the_variable_the_default_is_shared_data_beside_the_repository(tmp_path):
    from tests.conftest import DEFAULT_REAL_LOGS

    assert DEFAULT_REAL_LOGS == REPO.parent / "shared" / "data"
    result = run_probe(tmp_path, None)
    if DEFAULT_REAL_LOGS.joinpath("helpdesk", "helpdesk.csv").is_file():
        assert f"HELPDESK {DEFAULT_REAL_LOGS}/helpdesk/helpdesk.csv" in result.stdout, result.stdout
    else:
        assert f"no directory {DEFAULT_REAL_LOGS}" in result.stdout or "not found" in result.stdout, result.stdout


def ci_run(tmp_path: Path, real_logs: Path) -> subprocess.CompletedProcess:
    """.ci/run with JOURNEYS_REAL_LOGS=real_logs and a PATH holding only `dirname`: should its
    check not stop it, it cannot go on to install Chromium or run `make test`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    dirname = subprocess.run(["bash", "-c", "command -v dirname"], capture_output=True, text=True).stdout.strip()
    if not (bin_dir / "dirname").exists():
        (bin_dir / "dirname").symlink_to(dirname)
    env = {"PATH": str(bin_dir), "JOURNEYS_REAL_LOGS": str(real_logs), "HOME": str(tmp_path)}
    bash = subprocess.run(["bash", "-c", "command -v bash"], capture_output=True, text=True).stdout.strip()
    return subprocess.run([bash, str(REPO / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)


def test_ci_fails_in_one_line_when_the_real_logs_are_missing(tmp_path):
    result = ci_run(tmp_path, tmp_path / "nowhere")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f".ci/run: the real logs are missing: no {tmp_path}/nowhere/helpdesk/helpdesk.csv "
        "(set JOURNEYS_REAL_LOGS to the directory holding helpdesk/ and bpic2013_incidents/)"]

    logs = tmp_path / "logs"
    (logs / "helpdesk").mkdir(parents=True)
    (logs / "helpdesk" / "helpdesk.csv").write_text("x\n")
    result = ci_run(tmp_path, logs)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert f"no {logs}/bpic2013_incidents/bpic2013_incidents.xes.gz" in result.stderr


def make_test(tmp_path: Path, path: str, **env) -> subprocess.CompletedProcess:
    """`make test` with PATH=path, its install step and its pytest disarmed (STAMP= BIN=/nonexistent):
    what the Chromium check lets through fails on a missing interpreter, it runs no test."""
    make = subprocess.run(["bash", "-c", "command -v make"], capture_output=True, text=True).stdout.strip()
    return subprocess.run([make, "-s", "-C", str(REPO), "test", "STAMP=", f"BIN={tmp_path}/nonexistent"],
                          env={"PATH": path, "HOME": str(tmp_path), **env}, capture_output=True, text=True, timeout=60)


def test_make_test_without_chromium_fails_saying_how_to_install_it(tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = make_test(tmp_path, str(empty))
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == (
        "make test: the report test needs Chromium: sudo apt-get install chromium (Debian/Ubuntu), "
        "or set JOURNEYS_CHROMIUM to a Chromium or Chrome binary")
    assert "nonexistent/python" not in result.stdout + result.stderr  # stopped before pytest

    fake = tmp_path / "bin" / "chromium"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    for path, env in ((str(fake.parent), {}), (str(empty), {"JOURNEYS_CHROMIUM": str(fake)})):
        result = make_test(tmp_path, path, **env)
        assert "needs Chromium" not in result.stderr and "nonexistent/python" in result.stderr, (path, env)
