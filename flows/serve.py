"""`journeys serve`: the nightly flow as a Prefect deployment served from this process on a
cron schedule (default 02:00) in a configurable time zone, at most one run at a time. Each
scheduled run processes the day before, in that time zone. Without PREFECT_API_URL Prefect
serves against its temporary local server; with it, against that server (whose UI shows the
schedule and the runs)."""
from __future__ import annotations

from dataclasses import asdict
from zoneinfo import ZoneInfo

from prefect.schedules import Cron

from flows.nightly import nightly
from flows.options import NightOptions

DEPLOYMENT = "journeys-nightly"


def serve_nightly(options: NightOptions, cron: str = "0 2 * * *", timezone: str = "UTC",
                  name: str = DEPLOYMENT) -> None:
    try:
        ZoneInfo(timezone)  # an unknown zone fails here, clearly, not at 02:00
    except (KeyError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r} (expected an IANA name such as Europe/Berlin)") from None
    nightly.serve(name=name, schedule=Cron(cron, timezone=timezone), global_limit=1,
                  parameters={"run_date": None, "options": asdict(options), "timezone": timezone})
