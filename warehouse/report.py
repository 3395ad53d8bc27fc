"""The journey report: a terminal summary and a self-contained HTML page (inline SVG and
CSS, no scripts, no network) drawing the intended map as a subway line with what real
customers did at each station; PNG through headless Chromium."""
from __future__ import annotations

import html
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from warehouse.report_data import ReportData, Station

STATION_GAP = 190
LINE_Y = 90


def render_text(data: ReportData) -> str:
    lines = [f"journey {data.journey_id} v{data.journey_version} as of {data.as_of}: {data.customers:,} customers "
             f"({', '.join(f'{k} {v:,}' for k, v in data.statuses.items())})",
             f"  {'stage':<18}{'reached':>9}{'next':>9}{'drop-off':>10}{'stalled':>9}{'p50 h':>8}{'p90 h':>8}"]
    for s in data.stations:
        lines.append(f"  {s.stage + (' (opt)' if s.optional else ''):<18}{s.reached:>9,}{_n(s.reached_next):>9}"
                     f"{_pct(s.drop_off_rate):>10}{s.stalled:>9,}{_h(s.p50_hours):>8}{_h(s.p90_hours):>8}")
    top = data.top_drop_off
    if top:
        lines.append(f"top drop-off: {top.stage} loses {_pct(top.drop_off_rate)} before any later stage "
                     f"({top.reached:,} reached, {top.reached_next:,} went on)")
    if data.off_map:
        lines.append("off-map: " + ", ".join(f"{c}/{t} {n:,}" for c, t, n in data.off_map[:3]))
    lines.append(f"open alerts: {len(data.alerts)}")
    for a in data.alerts:
        lines.append(f"  {a['status']} since {a['opened_date']}: {a['message']}")
        lines += [f"    {breakdown_line(s)}" for s in a["slices"]]
    lines += [f"data quality warning: {check}: {seen}" for check, seen in data.quality_warnings]
    if not_run := _gate_not_run(data):
        lines.append(not_run)
    return "\n".join(lines) + "\n"


def render_html(data: ReportData) -> str:
    title = f"Journey {data.journey_id} as of {data.as_of}"
    top = data.top_drop_off
    summary = (f"{data.customers:,} customers · " + " · ".join(f"{k} {v:,}" for k, v in data.statuses.items()))
    headline = (f"Biggest drop-off: <b>{_e(top.name)}</b> loses {_pct(top.drop_off_rate)} before the next stage"
                if top else "No drop-off measured yet")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2733; background: #fff; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }} h2 {{ font-size: 16px; margin: 28px 0 8px; }}
.muted {{ color: #5b6878; }} table {{ border-collapse: collapse; }}
td, th {{ padding: 4px 10px; border-bottom: 1px solid #e3e8ee; text-align: left; }}
td.n, th.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
svg text {{ font-family: system-ui, sans-serif; }}
</style></head>
<body>
<h1>{_e(title)}</h1>
<p class="muted">map version {_e(data.journey_version)} · {_e(summary)}</p>
<p id="headline">{headline}</p>
<h2>The intended map, and what real customers did</h2>
{_subway(data.stations)}
<h2>Drop-off trend per stage ({_runs(data)})</h2>
{_trend_table(data.stations)}
<h2>Top deviations</h2>
{_rows_table(("kind", "stage", "customers"), data.deviations, "No deviations.")}
<h2>Events the map does not know (off-map)</h2>
{_rows_table(("channel", "event type", "events"), data.off_map, "Every event matched the map.")}
<h2>Open alerts</h2>
{_alerts(data.alerts)}
<h2>Data quality warnings of this run</h2>
{_warnings(data)}
</body></html>
"""


def _subway(stations: tuple[Station, ...]) -> str:
    width = 120 + STATION_GAP * max(len(stations) - 1, 0) + 120
    parts = [f'<svg id="subway" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{LINE_Y + 150}" '
             f'viewBox="0 0 {width} {LINE_Y + 150}" role="img" aria-label="journey map">']
    xs = [120 + STATION_GAP * i for i in range(len(stations))]
    for a, b, s in zip(xs, xs[1:], stations):
        parts.append(f'<line x1="{a}" y1="{LINE_Y}" x2="{b}" y2="{LINE_Y}" stroke="#2f6fde" stroke-width="10"/>')
    for x, s, nxt in zip(xs, stations, (*stations[1:], None)):
        if nxt is not None and s.drop_off_rate is not None:
            # the funnel's own figure: the share of this station's customers who went on to no later stage
            change = f"−{s.drop_off_rate:.0%}" if s.drop_off_rate else "0%"
            parts.append(f'<text x="{x + STATION_GAP / 2}" y="{LINE_Y - 14}" text-anchor="middle" '
                         f'font-size="13" fill="#b42318" class="leg">{change}</text>')
        ring = ' stroke-dasharray="5 4"' if s.optional else ""
        parts.append(f'<circle cx="{x}" cy="{LINE_Y}" r="17" fill="#fff" stroke="#1d2733" stroke-width="5"{ring}/>')
        parts.append(f'<text x="{x}" y="{LINE_Y - 48}" text-anchor="middle" font-size="15" font-weight="600" '
                     f'class="station-name">{_e(s.name)}{" (optional)" if s.optional else ""}</text>')
        details = [f"reached {s.reached:,}", f"stalled {s.stalled:,}",
                   f"drop-off {_pct(s.drop_off_rate)}", f"p50 in stage {_hours(s.p50_hours)}", f"p90 in stage {_hours(s.p90_hours)}"]
        for i, text in enumerate(details):
            parts.append(f'<text x="{x}" y="{LINE_Y + 42 + 18 * i}" text-anchor="middle" font-size="12.5" '
                         f'class="station-{i}" data-stage="{_e(s.stage)}">{_e(text)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _trend_table(stations: tuple[Station, ...]) -> str:
    rows = []
    for s in stations:
        rates = [r for _, r in s.trend if r is not None]
        latest = rates[-1] if rates else None
        rows.append(f"<tr><td>{_e(s.name)}</td><td>{_sparkline(rates)}</td><td class='n'>{_pct(latest)}</td>"
                    f"<td class='n'>{_pct(min(rates)) if rates else '–'} – {_pct(max(rates)) if rates else '–'}</td></tr>")
    return ("<table id='trend'><tr><th>stage</th><th>drop-off by day</th><th class='n'>latest</th>"
            "<th class='n'>range</th></tr>" + "".join(rows) + "</table>")


def _sparkline(rates: list[float], width: int = 160, height: int = 28) -> str:
    if len(rates) < 2:
        return "<span class='muted'>not enough runs</span>"
    low, high = min(rates), max(rates)
    span = (high - low) or 1.0
    points = " ".join(f"{i * (width - 4) / (len(rates) - 1) + 2:.1f},{height - 3 - (r - low) / span * (height - 6):.1f}"
                      for i, r in enumerate(rates))
    return (f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
            f'<polyline points="{points}" fill="none" stroke="#b42318" stroke-width="2"/></svg>')


def _rows_table(header: tuple[str, ...], rows, empty: str) -> str:
    if not rows:
        return f"<p class='muted'>{_e(empty)}</p>"
    head = "".join(f"<th{' class=n' if i == len(header) - 1 else ''}>{_e(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td>{_e(str(v))}</td>" for v in r[:-1]) + f"<td class='n'>{r[-1]:,}</td></tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _alerts(alerts) -> str:
    """One item per alert (its message names the stage), its breakdown under it."""
    if not alerts:
        return "<p class='muted'>No open alerts.</p>"
    items = []
    for a in alerts:
        breakdown = "".join(f"<li>{_e(breakdown_line(s))}</li>" for s in a["slices"])
        items.append(f"<li><b>{_e(a['status'])}</b> since {a['opened_date']}: {_e(a.get('message') or '')}"
                     + (f"<ul class='breakdown'>{breakdown}</ul>" if breakdown else "") + "</li>")
    return "<ul id='alerts'>" + "".join(items) + "</ul>"


def breakdown_line(s: dict) -> str:
    """One row of an alert's breakdown."""
    return (f"{s['dimension']} {s['dimension_value']}: heading for {s['recent_drop_rate']:.1%} drop-off vs "
            f"{s['baseline_drop_rate']:.1%} ({s['relative_rise']:+.0%}); {s['moved_on']:,} of "
            f"{s['recent_entrants']:,} moved on, {s['expected_moved_on']:,.1f} expected")


def _gate_not_run(data: ReportData) -> str | None:
    """The line saying the quality gate did not run (--no-gate), for the day or some of its runs."""
    if not data.gate_ran:
        return "quality gate: not run (--no-gate): no check ran for this day's run"
    if data.ungated_runs:
        return f"quality gate: not run (--no-gate) for run {', '.join(data.ungated_runs)}"
    return None


def _warnings(data: ReportData) -> str:
    not_run = _gate_not_run(data)
    head = f"<p id='gate-not-run'><b>{_e(not_run)}</b></p>" if not_run else ""
    if not data.gate_ran:
        return head
    if not data.quality_warnings:
        return head + f"<p class='muted'>None: every check {'that ran ' if not_run else ''}passed.</p>"
    return head + "<ul id='quality'>" + "".join(f"<li><b>{_e(check)}</b>: {_e(seen)}</li>"
                                                for check, seen in data.quality_warnings) + "</ul>"


def export_png(html_path: Path, png_path: Path, width: int = 1400, height: int = 1100) -> Path:
    """Screenshot of the report in headless Chromium, with networking off."""
    browser = find_chromium()
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run([browser, *chromium_flags(profile), f"--window-size={width},{height}",
                                 f"--screenshot={png_path}", Path(html_path).resolve().as_uri()],
                                capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not png_path.is_file():
        raise RuntimeError(f"Chromium could not render {html_path}: {result.stderr.strip()[-500:]}")
    return png_path


def find_chromium() -> str:
    for name in (os.environ.get("JOURNEYS_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise FileNotFoundError("PNG export needs Chromium (Debian: apt-get install chromium, or set JOURNEYS_CHROMIUM)")


def chromium_flags(profile_dir: str) -> list[str]:
    """Headless, sandbox off (CI runs as root), and no network at all: the page must not
    need any."""
    return ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-quic", "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={profile_dir}"]


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _pct(rate: float | None) -> str:
    return "–" if rate is None else f"{rate:.1%}"


def _h(hours: float | None) -> str:
    return "–" if hours is None else f"{hours:,.1f}"


def _hours(hours: float | None) -> str:
    return "–" if hours is None else f"{hours:,.1f} h"


def _runs(data: ReportData) -> str:
    runs = max((len(s.trend) for s in data.stations), default=0)
    return f"{runs} published run{'s' if runs != 1 else ''} in the window"


def _n(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"
