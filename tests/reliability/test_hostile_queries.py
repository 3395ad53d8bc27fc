"""The query path is sealed: every statement that would write or read a file, attach a
database, load an extension or change a setting is refused by `journeys query` with one
line and exit 2, and the warehouse, the lake and the disk are byte for byte as before (no
file appears either). What an analyst may do — SELECT, temp tables of their own — still works;
the report and alerts read through the same sealed connection."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from warehouse.query import open_readonly


@pytest.fixture
def data(tmp_path):
    """A data folder: a warehouse with a table and a view, and a lake with a committed part."""
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("CREATE TABLE events AS SELECT range AS n, 'web' AS channel FROM range(5)")
    con.execute("CREATE VIEW web AS SELECT * FROM events WHERE channel = 'web'")
    con.close()
    part = tmp_path / "lake" / "_runs" / "r1" / "events" / "date=2026-01-05" / "source=web" / "part-a.parquet"
    part.parent.mkdir(parents=True)
    pq.write_table(pa.table({"n": [1, 2]}), part)
    (tmp_path / "lake" / "_state.json").write_text("{}")
    return tmp_path


def everything(root: Path) -> dict[str, str]:
    """Every file's hash and every folder under root: a new empty folder counts as a change too."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


HOSTILE = {
    "overwrite the warehouse": "COPY (SELECT 42 AS x) TO '{root}/warehouse.duckdb'",
    "plant a lake part": "COPY (SELECT 'forged' AS event_id) TO "
                         "'{root}/lake/_runs/r1/events/date=2026-01-05/source=web/part-x.parquet' (FORMAT parquet)",
    "write a new file": "COPY events TO '{root}/out.csv'",
    "export the database": "EXPORT DATABASE '{root}/export'",
    "import a database": "IMPORT DATABASE '{root}'",
    "read a system file": "SELECT * FROM read_text('/etc/passwd')",
    "read a system file as csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read raw bytes": "SELECT * FROM read_blob('/etc/hostname')",
    "list the disk": "SELECT * FROM glob('/*')",
    "read the lake": "SELECT * FROM read_parquet('{root}/lake/**/*.parquet')",
    "a path in FROM": "SELECT * FROM '{root}/lake/_runs/r1/events/date=2026-01-05/source=web/part-a.parquet'",
    "attach a new database": "ATTACH '{root}/other.duckdb' AS other",
    "install an extension": "INSTALL httpfs",
    "load an extension": "LOAD httpfs",
    "turn file access back on": "SET enable_external_access = true",
    "change a setting": "SET threads = 1",
    "unlock the configuration": "RESET lock_configuration",
    "profile into a file": "PRAGMA enable_profiling",
    "name a profile file": "SET profiling_output = '{root}/profile.json'",
    "a secret written to disk": "CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "hidden behind a harmless statement": "SELECT 1; COPY events TO '{root}/second.csv'",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_query_is_refused_in_one_line_and_changes_nothing(data, capsys, name):
    before = everything(data)
    code = main(["query", HOSTILE[name].format(root=data), "--warehouse", str(data / "warehouse.duckdb")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("journeys query: refused: ")
    assert everything(data) == before
    assert main(["query", "SELECT count(*) AS n FROM web", "--warehouse", str(data / "warehouse.duckdb")]) == 0
    assert "5" in capsys.readouterr().out


def test_refusals_say_why_and_how_to_export(data, capsys):
    main(["query", f"COPY events TO '{data}/out.csv'", "--warehouse", str(data / "warehouse.duckdb")])
    err = capsys.readouterr().err
    assert "refused: the query path cannot read or write files or change settings" in err
    assert f'{data}/out.csv' in err and "--format csv|json|parquet --out FILE" in err


def test_what_an_analyst_needs_still_works(data):
    con = open_readonly(data / "warehouse.duckdb")
    try:
        con.execute("CREATE TEMP TABLE mine AS SELECT n * 2 AS m FROM events")
        assert con.execute("SELECT sum(m) FROM mine").fetchone()[0] == 20
    finally:
        con.close()


def booby_trap(data: Path, view: str) -> None:
    """Replace `view` in the warehouse by one that reads a system file: a sealed reader is
    refused, an unsealed one would read it."""
    con = duckdb.connect(str(data / "warehouse.duckdb"))
    con.execute(f"CREATE VIEW {view} AS SELECT column0 AS stage FROM read_csv('/etc/hostname', header = false)")
    con.close()


def test_the_report_reads_through_the_sealed_connection(data, capsys):
    from datetime import date

    from warehouse.query import REFUSED, QueryError
    from warehouse.report_data import load_report_data

    booby_trap(data, "journey_maps")
    with pytest.raises(QueryError, match=f"^{REFUSED} \\(Permission Error: .*/etc/hostname"):
        load_report_data(data / "warehouse.duckdb", "subscription", date(2026, 1, 5))
    before = everything(data)
    code = main(["report", "--journey", "subscription", "--date", "2026-01-05",
                 "--warehouse", str(data / "warehouse.duckdb")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith(f"journeys report: {REFUSED}")
    assert everything(data) == before


def test_alerts_read_through_the_sealed_connection(data, capsys):
    booby_trap(data, "alerts")
    assert main(["alerts", "--warehouse", str(data / "warehouse.duckdb")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("journeys alerts: refused:")


MISTAKES = {
    "a typo": ("SELEC 1", 'syntax error at or near "SELEC" (LINE 1: SELEC 1)'),
    "an unknown table": ("SELECT * FROM event", "Table with name event does not exist! (Did you mean"),
    "an unknown column": ("SELECT chanel FROM events", 'Referenced column "chanel" not found'),
    "a bad cast": ("SELECT 'a'::INT", "Could not convert string 'a' to INT32 (LINE 1:"),
    "a write": ("DELETE FROM events", "read-only mode"),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_every_other_error_is_one_line_too(data, capsys, name):
    sql, says = MISTAKES[name]
    assert main(["query", sql, "--warehouse", str(data / "warehouse.duckdb")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("journeys query: ") and says in err
    assert "^" not in err and "refused" not in err


def test_a_file_that_is_not_a_warehouse_is_one_line(tmp_path, capsys):
    (tmp_path / "warehouse.duckdb").write_text("not a database\n")
    assert main(["query", "SELECT 1", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a valid DuckDB database file" in err


def test_the_installed_command_refuses_with_exit_2(data):
    before = everything(data)
    done = subprocess.run([str(Path(sys.executable).with_name("journeys")), "query",
                           f"COPY (SELECT 42 AS x) TO '{data}/warehouse.duckdb'", "--data", str(data)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert everything(data) == before
