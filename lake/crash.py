"""Named points where a reliability test can make this process die or fail, deterministically.

`JOURNEYS_CRASH_AT=<point>` makes the process SIGKILL itself when it reaches that point (no
cleanup, no atexit: what a power cut or the OOM killer does); `JOURNEYS_FAIL_AT=<point>:<ERRNO>`
raises the OSError a full or read-only disk would (e.g. `staging:ENOSPC`). Unset, a point
costs one dictionary look-up. tests/reliability/ injects every point and checks that the lake
and the warehouse still hold their last committed state."""
from __future__ import annotations

import errno
import os
import signal
import sys

CRASH_ENV, FAIL_ENV = "JOURNEYS_CRASH_AT", "JOURNEYS_FAIL_AT"

POINTS = {
    "parse": "a batch of raw files parsed, the pipeline still running",
    "staging": "the first part file written into the run's folder",
    "staged": "the pipeline finished, its output staged, before the gate",
    "gate": "the gate passed, before the commit",
    "commit-record": "the new commit record written beside the current one, before the rename",
    "commit-renamed": "the commit record renamed into place, before superseded files are removed",
    "cleanup": "the first superseded or abandoned folder removed",
    "publish-copy": "the warehouse generation to write opened (the one before, or a copy), before it is caught up",
    "publish-written": "the generation's transaction committed and checkpointed, before the link is renamed",
    "publish-renamed": "the link renamed over the warehouse path, before older generations are removed",
}


def point(name: str, path: str | None = None) -> None:
    """Die or fail here if the environment names this point (see the module docstring)."""
    if os.environ.get(CRASH_ENV) == name:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    failing = os.environ.get(FAIL_ENV, "")
    if failing.partition(":")[0] == name:
        code = getattr(errno, failing.partition(":")[2] or "EIO")
        raise OSError(code, os.strerror(code), path)
