"""The commit record: which run's folder is current for each (table, day, scope).

Why a record: a run writes every table into its own folder (`_runs/<run id>/…`), which
nobody reads until one small file, `_state.json`, written last and renamed into place in
one step, names the run as current for the partitions it owns. A crash at any instant leaves
either the previous record or the new one, so the tables of a run become visible together
or not at all; readers resolve partitions only through the record, never by listing tables.

On a local disk the rename is atomic (POSIX `rename`, after an fsync of the new record and
followed by one of the folder). On gs:// or s3:// the record is one object written in one
request: object stores make a whole object visible at once, and readers always see the
latest (both are strongly consistent for reads after writes). The lake's folders there are
never renamed, only written once and deleted when superseded."""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import pyarrow as pa

from lake import crash
from lake.files import delete, files_under, fsync_path, is_remote, join, normalize_root, read_bytes, read_table
from lake.tables import RUN, TABLES

STATE_FILE = "_state.json"
RUNS_DIR = "_runs"
FORMAT = 1


class LakeError(OSError):
    """The lake cannot be used as it is (a one-line reason naming the path)."""


class LakeConflict(RuntimeError):
    """The lake's record changed while a run was staging: another writer got in."""


@dataclass(frozen=True)
class RunFolder:
    """A run's own folder in the lake. Written by that run only; immutable once committed."""

    root: str
    run_id: str

    @property
    def path(self) -> str:
        return join(self.root, RUNS_DIR, self.run_id)

    def partition_dir(self, table: str, day: date, scope: str) -> str:
        kind = TABLES[table].scope
        return join(self.path, table, f"date={day.isoformat()}", f"{kind}={scope}")

    def part_path(self, table: str, day: date, scope: str, part: str) -> str:
        return join(self.partition_dir(table, day, scope), f"part-{part}.parquet")

    def files(self, table: str, day: date, scope: str | None = None) -> list[str]:
        """Part files of one partition of this run (of every scope when scope is None)."""
        folder = self.partition_dir(table, day, scope) if scope else join(self.path, table, f"date={day.isoformat()}")
        return [f for f in files_under(folder) if f.endswith(".parquet")]


@dataclass(frozen=True)
class LakeState:
    """A committed state. `partitions[table][day iso][scope] = run id`; a (table, day, scope) a
    run owns but left empty is recorded too, so a rerun with fewer rows clears the old ones."""

    version: int = 0
    runs: dict[str, dict] = field(default_factory=dict)
    partitions: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    def scopes(self, table: str, day: date) -> dict[str, str]:
        return dict(self.partitions.get(table, {}).get(day.isoformat(), {}))

    def has_day(self, day: date) -> bool:
        return any(self.scopes(table, day) for table in TABLES)

    def with_run(self, run_id: str, info: dict, owned: list[tuple[str, date, str]]) -> LakeState:
        """The state after committing `run_id`, which owns `owned` (table, day, scope). A run
        kept by nothing but its own run-scoped rows (its checks) is dropped with them."""
        partitions = {t: {d: dict(s) for d, s in days.items()} for t, days in self.partitions.items()}
        for table, day, scope in owned:
            partitions.setdefault(table, {}).setdefault(day.isoformat(), {})[scope] = run_id
        live = {run for t, days in partitions.items() if TABLES[t].scope != RUN
                for scopes in days.values() for run in scopes.values()} | {run_id}
        for t, days in partitions.items():
            if TABLES[t].scope == RUN:
                for scopes in days.values():
                    for scope in [s for s, run in scopes.items() if run not in live]:
                        del scopes[scope]
        runs = {r: i for r, i in self.runs.items() if r in live}
        runs[run_id] = info
        return LakeState(self.version + 1, runs, partitions)

    def current_dirs(self, root: str) -> set[str]:
        """The partition folders this state points at."""
        return {RunFolder(root, run).partition_dir(t, date.fromisoformat(d), scope)
                for t, days in self.partitions.items() for d, scopes in days.items() for scope, run in scopes.items()}

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": self.version, "runs": self.runs,
                           "partitions": self.partitions}, indent=1, sort_keys=True)


@dataclass(frozen=True)
class Snapshot:
    """The lake as of one committed state: what every reader reads through."""

    root: str
    state: LakeState

    def files(self, table: str, day: date, scopes=None) -> list[str]:
        """Part files of a committed partition (only the given scopes when named)."""
        current = self.state.scopes(table, day)
        wanted = sorted(current if scopes is None else set(scopes) & set(current))
        return [f for scope in wanted for f in RunFolder(self.root, current[scope]).files(table, day, scope)]

    def read(self, table: str, days, scopes=None, columns: list[str] | None = None) -> pa.Table:
        """Rows of a table's committed partitions of `days`, in the registry's schema."""
        schema = TABLES[table].schema
        if columns:
            schema = pa.schema([schema.field(c) for c in columns])
        parts = [read_table(f, columns) for d in sorted(set(days)) for f in self.files(table, d, scopes)]
        return pa.concat_tables([schema.empty_table(), *(p.select(schema.names).cast(schema) for p in parts)])


def state_path(root: str) -> str:
    return join(root, STATE_FILE)


def read_state(root: str) -> LakeState:
    """The committed state (an empty one for a lake nothing was committed to yet)."""
    path = state_path(root)
    if not _exists(path):
        _refuse_legacy(root)
        return LakeState()
    try:
        data = json.loads(read_bytes(path))
    except ValueError as exc:
        raise LakeError(f"{path}: the lake's commit record is not valid JSON ({exc})") from None
    if data.get("format") != FORMAT:
        raise LakeError(f"{path}: commit record format {data.get('format')!r}, this version reads {FORMAT}")
    return LakeState(int(data["version"]), data["runs"], data["partitions"])


def open_snapshot(root: str) -> Snapshot:
    root = normalize_root(root)
    return Snapshot(root, read_state(root))


def write_state(root: str, state: LakeState) -> None:
    """Make `state` the committed one in a single atomic step (see the module docstring)."""
    path, text = state_path(root), state.to_json().encode()
    if is_remote(root):
        crash.point("commit-record", path)
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(path) as out:
            out.write(text)
        crash.point("commit-renamed", path)
        return
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    crash.point("commit-record", temporary)
    os.replace(temporary, path)
    fsync_path(root)
    crash.point("commit-renamed", path)


def collect_garbage(root: str, state: LakeState, keep: tuple[str, ...] = ()) -> int:
    """Remove what no committed state points at: folders of runs that crashed or failed
    before their commit, partitions superseded by later runs, stray temporary records.
    Runs under the writer lock (readers hold it too), so nothing being read is removed.
    `keep`: run folders being written now. Returns the number of folders removed."""
    current = state.current_dirs(root)
    runs_dir = join(root, RUNS_DIR)
    dead: set[str] = set()
    for path in files_under(runs_dir):
        run_id = path[len(runs_dir) + 1:].split("/", 1)[0]
        if run_id in keep:
            continue
        if run_id not in state.runs:
            dead.add(join(runs_dir, run_id))
            continue
        partition = path.rsplit("/", 1)[0]
        if partition not in current:
            dead.add(partition)
    if not is_remote(root):
        dead |= {join(root, n) for n in os.listdir(root) if n.startswith(STATE_FILE + ".tmp-")} if os.path.isdir(root) else set()
        if os.path.isdir(runs_dir):  # empty folders of runs that died before writing a file
            dead |= {join(runs_dir, n) for n in os.listdir(runs_dir) if n not in state.runs and n not in keep}
    for i, folder in enumerate(sorted(dead)):
        delete([folder])
        if i == 0:
            crash.point("cleanup", folder)
    return len(dead)


def new_run_info(run_id: str, as_of: date, days, journeys, sources) -> dict:
    """What the record keeps about a run: what it covered, where and when it committed."""
    return {"as_of": as_of.isoformat(), "days": [d.isoformat() for d in sorted(set(days))],
            "journeys": sorted(journeys), "sources": sorted(sources), "host": socket.gethostname(), "pid": os.getpid(),
            "committed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _exists(path: str) -> bool:
    if is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.exists(path)
    return os.path.isfile(path)


def _refuse_legacy(root: str) -> None:
    """A lake from before commit records (tables straight under the root) is not read as empty."""
    if is_remote(root) or not os.path.isdir(root):
        return
    old = [t for t in TABLES if os.path.isdir(os.path.join(root, t))]
    if old:
        raise LakeError(f"{root}: a lake written by an earlier version (tables {', '.join(old)} without a commit "
                        "record); move it aside and rebuild it with `journeys backfill`")
