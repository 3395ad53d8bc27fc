"""Calls to a Prefect server's REST API from tests, retried as Prefect's own client retries
them: a loaded 2-core machine makes the server answer 503 while its SQLite database is busy
(the serving runner and the server's services write at the same moment)."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

RETRYABLE = (429, 502, 503)  # what Prefect's own client retries: 503 is a busy (locked) server database


def api(base: str, path: str, body: dict | None = None, attempts: int = 6):
    """One API call (POST with `body`, else GET), retried on the answers marked retryable."""
    request = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"},
                                     method="POST" if body is not None else "GET")
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # a loaded 2-core machine can be slow
                return json.loads(response.read() or "null")
        except urllib.error.HTTPError as error:
            if error.code not in RETRYABLE or attempt == attempts - 1:
                raise
            time.sleep(2 ** attempt)


def wait_for(check, seconds: float, what: str):
    """The first truthy answer of `check()` within `seconds` (an unreachable server counts as no answer)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")
