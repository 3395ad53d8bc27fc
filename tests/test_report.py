"""`journeys report` end to end: a published warehouse → terminal summary, a self-contained
HTML page that headless Chromium renders with no network (stage names and real reach counts
in the DOM, taken from the generator's ground truth), and a non-blank PNG."""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
import zlib

import duckdb
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from tests.warehouse_sample import DAYS, JOURNEY, LAST
from warehouse.publish import publish
from warehouse.report import chromium_flags, find_chromium


@pytest.fixture(scope="module")
def report(sample, tmp_path_factory):
    data, lake_dir = sample
    root = tmp_path_factory.mktemp("report")
    warehouse = root / "w.duckdb"
    publish(lake_dir, warehouse, DAYS, [JOURNEY], progress=lambda _: None)
    return data, warehouse, root


def truth_reached(data) -> dict[str, int]:
    customers = pq.read_table(data / "ground_truth" / "customers.parquet")
    return {s: customers.num_rows - customers[f"entered_{s}"].null_count for s in JOURNEY.stage_ids}


def test_report_writes_a_self_contained_page_and_a_summary(report, capsys):
    data, warehouse, root = report
    out = root / "r.html"
    assert main(["report", "--journey", "subscription", "--date", str(LAST), "--warehouse", str(warehouse),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    reached = truth_reached(data)
    for stage in JOURNEY.stages:
        assert re.search(rf"^  {stage.id}( \(opt\))?\s+{reached[stage.id]:,}\s", printed, re.M), stage.id
    assert "top drop-off: " in printed and f"report: {out}" in printed
    page = out.read_text()
    # each leg shows the funnel's drop-off of the station before it: never a gain, whatever is optional
    legs = re.findall(r'class="leg">([^<]*)<', page)
    customers = pq.read_table(data / "ground_truth" / "customers.parquet").to_pylist()
    ids = JOURNEY.stage_ids
    expected = []
    for k, stage in enumerate(ids[:-1]):
        reached_k = [c for c in customers if c[f"entered_{stage}"] is not None]
        went_on = sum(any(c[f"entered_{s}"] is not None and c[f"entered_{s}"] >= c[f"entered_{stage}"]
                          for s in ids[k + 1:]) for c in reached_k)
        drop = 1 - went_on / len(reached_k)
        expected.append(f"−{drop:.0%}" if drop else "0%")
    assert legs == expected
    assert not re.search(r"<script|<link|<img|<iframe|\bsrc=|\bhref=|url\(|@import", page, re.I)
    assert all(m == "http://www.w3.org/2000/svg" for m in re.findall(r"https?://[^\"' )]+", page))


def test_chromium_renders_the_stages_and_counts_offline(report, tmp_path):
    data, warehouse, root = report
    out, png = root / "c.html", tmp_path / "c.png"
    assert main(["report", "--journey", "subscription", "--date", str(LAST), "--warehouse", str(warehouse),
                 "--out", str(out), "--png", str(png)]) == 0
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([find_chromium(), *chromium_flags(profile), "--dump-dom", out.resolve().as_uri()],
                             capture_output=True, text=True, timeout=120, check=True).stdout
    reached = truth_reached(data)
    assert "quality gate: not run (--no-gate)" in dom and "every check passed" not in dom  # the sample ran ungated
    for stage in JOURNEY.stages:
        assert f">{stage.name}" in dom, stage.name
        assert f'data-stage="{stage.id}">reached {reached[stage.id]:,}<' in dom, stage.id
    width, height, pixels = read_png(png.read_bytes())
    assert (width, height) == (1400, 1100)
    ink = sum(1 for p in pixels if p[:3] != (255, 255, 255))
    assert ink > 0.01 * len(pixels), "the screenshot is blank"
    assert len({p[:3] for p in pixels}) > 20  # text, the blue line, the red legs: not a flat image


def test_a_day_without_a_published_run_is_a_clear_error(report, capsys):
    _, warehouse, _ = report
    assert main(["report", "--journey", "subscription", "--date", "2031-01-01", "--warehouse", str(warehouse)]) == 2
    assert f"no published run as of 2031-01-01 (latest: {LAST})" in capsys.readouterr().err
    assert main(["report", "--journey", "nope", "--date", str(LAST), "--warehouse", str(warehouse)]) == 2
    assert "journey 'nope' is not in the warehouse (published: subscription)" in capsys.readouterr().err


def test_a_report_of_an_ungated_run_says_the_gate_did_not_run(report, tmp_path, capsys):
    """The sample's runs were committed without a gate (as after --no-gate): no run_checks rows.
    The report must not claim that every check passed."""
    _, warehouse, _ = report
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM run_checks WHERE partition_date = ?", [LAST]).fetchone() == (0,)
        [(run_id,)] = con.execute("SELECT DISTINCT run_id FROM run_files WHERE partition_date = ?", [LAST]).fetchall()
    finally:
        con.close()

    def report_of(warehouse_file):
        out = tmp_path / f"{warehouse_file.stem}.html"
        assert main(["report", "--journey", "subscription", "--date", str(LAST), "--warehouse", str(warehouse_file),
                     "--out", str(out)]) == 0
        return capsys.readouterr().out, out.read_text()

    text, page = report_of(warehouse)
    line = "quality gate: not run (--no-gate): no check ran for this day's run"
    assert line in text.splitlines() and line.replace("'", "&#x27;") in page
    assert "every check passed" not in page + text

    # the same day with a gate that ran and passed: no such line
    def with_checks(name: str, of_run: str):
        copy = tmp_path / f"{name}.duckdb"
        shutil.copy(warehouse, copy)
        con = duckdb.connect(str(copy))
        try:
            con.execute("INSERT INTO run_checks BY NAME SELECT $r AS run_id, $d AS as_of_date, 'run_totals' AS suite, "
                        "'expect_x' AS expectation, 'n' AS columns, 'critical' AS severity, true AS success, "
                        "'ok' AS observed, 0 AS unexpected_count, $d AS partition_date", {"r": of_run, "d": LAST})
        finally:
            con.close()
        return copy

    text, page = report_of(with_checks("gated", run_id))
    assert "quality gate: not run" not in text + page and "None: every check passed." in page
    # checks of another run of the day only: this day's run is still named as ungated
    text, page = report_of(with_checks("partly", "another-run"))
    assert f"quality gate: not run (--no-gate) for run {run_id}" in text and "every check that ran passed" in page


def read_png(blob: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """Pixels of an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes)."""
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, header = 8, b"", None
    while at < len(blob):
        length, kind = struct.unpack(">I4s", blob[at:at + 8])
        chunk = blob[at + 8:at + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        at += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0
    channels = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa_, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa_ <= pb and pa_ <= pc else up if pb <= pc else corner)) & 255
        rows.append(line)
        previous = line
    pixels = [tuple(row[x * channels:(x + 1) * channels]) for row in rows for x in range(width)]
    return width, height, pixels
