"""A temporary Prefect API server that is this process's child and dies with it.

Prefect's own temporary server (started by `get_client` when no API URL is configured) is
`python -m uvicorn` stopped by atexit: a `kill -9` of its parent orphans it for good, and
every such server shares ~/.prefect/prefect.db, so concurrent runs make each other's server
answer 503 (database locked). `temporary_api()` starts one on a free loopback port with a
SQLite database in a fresh temporary directory, points this process (and the processes it
starts) at it, and stops it on exit. The server is `python -m flows.prefect_api`, which
arranges to die when its parent does, SIGKILL included: PR_SET_PDEATHSIG on Linux, and a
watchdog thread that notices the parent pid change anywhere.

The server runs Prefect's background services in full (as `prefect server start` does),
not the ephemeral subset: without the scheduler service a served deployment's cron
schedule never produces a run."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

HOST = "127.0.0.1"
PREFIX = "journeys-prefect-"
STOP_SECONDS = 5.0
WATCHDOG_SECONDS = 0.5


class ApiServerFailed(RuntimeError):
    """The temporary Prefect server exited or did not become healthy in time."""


@dataclass(frozen=True)
class Api:
    """The API this block's flows talk to; pid is None when it was configured, not started."""

    url: str
    pid: int | None = None


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment, the active profile or a prefect.toml/.env."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


@contextlib.contextmanager
def temporary_api(progress: Callable[[str], object] | None = print, timeout: float = 120.0) -> Iterator[Api]:
    """Run the block against a Prefect API: the configured one if any, else a server of our
    own that lives exactly as long as the block (or this process, if that ends first)."""
    url = configured_api_url()
    if url:
        yield Api(url)
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    _sweep_stale()
    home = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
    try:
        began = time.monotonic()
        server = _Server(home)
        try:
            server.wait_healthy(timeout)
            if progress:
                progress(f"Prefect API: temporary server {server.url} (pid {server.process.pid}, "
                         f"started in {time.monotonic() - began:.1f} s)")
            before = os.environ.get("PREFECT_API_URL")
            os.environ["PREFECT_API_URL"] = server.url  # for child processes started by other means than Prefect
            try:
                with temporary_settings(updates={PREFECT_API_URL: server.url}):
                    try:
                        yield Api(server.url, server.process.pid)
                    finally:
                        _drain_prefect_workers()
            finally:
                if before is None:
                    os.environ.pop("PREFECT_API_URL", None)
                else:
                    os.environ["PREFECT_API_URL"] = before
        finally:
            server.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)


class _Server:
    """The child process, its output's last lines, and the port it listens on."""

    def __init__(self, home: Path):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Bound here, listened on by the child: no other process can take the port between
            # choosing it and serving on it, and nothing connects before the app is ready.
            listener.bind((HOST, 0))
            self.port = listener.getsockname()[1]
            self.url = f"http://{HOST}:{self.port}/api"
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flows.prefect_api", "--parent", str(os.getpid()), "--fd",
                 str(listener.fileno())],
                env=_server_environment(home), cwd=Path(__file__).resolve().parents[1], pass_fds=(listener.fileno(),),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True)  # Ctrl-C reaches us, not the server our flow still needs to report to
        finally:
            listener.close()
        self.tail: deque[str] = deque(maxlen=20)
        self._ready = threading.Event()
        self._relay_thread = threading.Thread(target=self._relay, name="prefect-api-output", daemon=True)
        self._relay_thread.start()

    def _relay(self) -> None:
        """Keep the last lines for an error message; once serving, pass errors on to our stderr."""
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.tail.append(line)
            if self._ready.is_set():
                print(f"[prefect api] {line}", file=sys.stderr)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"exited with code {self.process.returncode} before answering /api/health")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                    if response.status == 200:
                        self._ready.set()
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self._fail(f"did not answer /api/health within {timeout:g} s")

    def _fail(self, what: str) -> None:
        self.stop()
        self._relay_thread.join(2)  # its last lines: the reason, usually
        tail = " | ".join(line for line in self.tail if line.strip())[-1500:]
        raise ApiServerFailed(f"temporary Prefect server on {HOST}:{self.port} {what}"
                              + (f"; its output: {tail}" if tail else ""))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()


def _server_environment(home: Path) -> dict[str, str]:
    """Ours and the current Prefect settings, then the server's own: its database, no UI, no
    telemetry, the block-registration memo beside the database instead of in ~/.prefect."""
    from prefect.settings import get_current_settings

    env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True)}
    env.pop("PREFECT_API_URL", None)
    env.update({
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_MEMO_STORE_PATH": str(home / "memo_store.toml"),
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    })
    for alias in ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_MEMO_STORE_PATH", "PREFECT_UI_ENABLED"):
        env.pop(alias, None)  # an old alias set by the user would compete with the setting above
    return env


def _drain_prefect_workers() -> None:
    """Send the logs and events still queued to the server before it stops (as Prefect's test
    harness does), instead of failing to reach it at interpreter exit."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return  # drain_all would hand back a coroutine nobody awaits; Prefect drains them at exit
    for worker in (APILogWorker, EventsWorker):
        quiet = logging.getLogger(worker.__name__)  # "Still processing items: 1" counts its own stop marker
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            worker.drain_all(timeout=10, at_exit=False)
        finally:
            quiet.setLevel(level)


def _sweep_stale() -> None:
    """Remove the temporary directories of earlier runs killed before they could (their owner's
    pid, in the name, no longer exists)."""
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        try:
            owner = int(path.name[len(PREFIX):].split("-", 1)[0])
            if path.stat().st_uid != os.getuid() or owner == os.getpid():
                continue
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, OSError):
            continue


def _die_with(parent: int) -> None:
    """SIGKILL when the parent goes (Linux: the kernel sends it, even after `kill -9` of the
    parent), and a watchdog for what that misses: a parent gone before prctl ran, other OSes.
    PDEATHSIG fires when the parent *thread* that started us exits; that thread is the one in
    the `temporary_api` block, which stops us when it leaves the block anyway."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCHDOG_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _serve(parent: int, fd: int) -> None:
    _die_with(parent)
    import uvicorn

    config = uvicorn.Config("prefect.server.api.server:create_app", factory=True, lifespan="on", log_level="error")
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prefect API server for temporary_api(): dies with --parent")
    parser.add_argument("--parent", type=int, required=True, help="pid whose exit ends this server")
    parser.add_argument("--fd", type=int, required=True, help="inherited socket, bound to the loopback port")
    args = parser.parse_args(argv)
    _serve(args.parent, args.fd)


if __name__ == "__main__":
    main()
