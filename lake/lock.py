"""One writer per lake: a lock held for a whole night (stage, gate, commit, publish).

Why a kernel lock and a holder file: the lock is `flock` on `<lake>/_lock`, which the kernel
releases when the holder dies however it dies (kill -9, OOM, power loss of the process), so a
stale lock never blocks the next run; the file's content says who holds it (pid, host,
start, command) for the message a waiting run prints, and lets the next holder say that the
previous one died without releasing. The lock is re-entrant within a process (a flow that
holds it calls publish, which takes it too). Publishing takes it as well: it reads a
committed state whose superseded files only a writer removes.

A gs:// or s3:// lake has no file to flock: its lock lives in a local folder
(`JOURNEYS_LOCK_DIR`, default ~/.cache/journeys/locks), so one host is one writer; running
writers of one remote lake from two hosts at once is not supported."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Callable, Iterator

from lake.files import is_remote, normalize_root

LOCK_FILE = "_lock"
_held: dict[str, list] = {}  # lock path -> [open file, depth]
_guard = threading.Lock()


class LakeBusy(TimeoutError):
    """Another process held the lake for longer than the lock timeout (transient)."""


def lock_path(root: str) -> str:
    root = normalize_root(root)
    if not is_remote(root):
        return os.path.join(root, LOCK_FILE)
    folder = os.environ.get("JOURNEYS_LOCK_DIR") or os.path.expanduser("~/.cache/journeys/locks")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, hashlib.sha1(root.encode()).hexdigest()[:16] + ".lock")


def holder(root: str) -> dict | None:
    """Who holds (or last held) the lake's lock, as written in the lock file."""
    try:
        with open(lock_path(root)) as f:
            text = f.read().strip()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def is_held_here(root: str) -> bool:
    return lock_path(root) in _held


@contextmanager
def writer_lock(root: str, timeout: float | None = 3600.0, progress: Callable[[str], None] = print,
                command: str = "journeys") -> Iterator[None]:
    """Hold the lake's writer lock for the block; wait for it up to `timeout` seconds (None:
    without limit), printing who holds it, then raise LakeBusy."""
    path = lock_path(root)
    with _guard:
        if path in _held:
            _held[path][1] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                _held[path][1] -= 1
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle = open(path, "a+")
    try:
        _acquire(handle, root, timeout, progress)
        previous = holder(root)
        if previous and not _alive(previous):
            progress(f"lake {root}: the previous writer (pid {previous.get('pid')} on {previous.get('host')}, started "
                     f"{previous.get('started')}) died without releasing the lock; its unfinished run is discarded")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                                 "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        handle.flush()
        with _guard:
            _held[path] = [handle, 1]
        try:
            yield
        finally:
            with _guard:
                del _held[path]
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def _acquire(handle, root: str, timeout: float | None, progress) -> None:
    began, told = time.monotonic(), False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if told:
                progress(f"lake {root}: lock acquired after {time.monotonic() - began:.0f} s")
            return
        except BlockingIOError:
            pass
        waited = time.monotonic() - began
        who = _describe(holder(root))
        if timeout is not None and waited >= timeout:
            raise LakeBusy(f"lake {root} is being written by {who} (waited {timeout:g} s; "
                           "raise --lock-timeout to wait longer)") from None
        if not told:
            limit = "without limit" if timeout is None else f"up to {timeout:g} s"
            progress(f"lake {root} is being written by {who}: waiting {limit}")
            told = True
        time.sleep(0.2)


def _describe(info: dict | None) -> str:
    if not info:
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')} ({info.get('command')})"


def _alive(info: dict) -> bool:
    """Whether a recorded holder still runs (only knowable on this host)."""
    if info.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(info["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError, TypeError):
        return False
    except PermissionError:
        return True
    return True
