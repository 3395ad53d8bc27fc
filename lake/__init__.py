"""The Parquet lake: the table registry, the run folders, the atomic commit record, the writer
lock and loading committed partitions into DuckDB. See lake/state.py for the layout."""
from lake.commit import commit, discard, owned_partitions
from lake.files import normalize_root, read_table, write_table
from lake.lock import LakeBusy, writer_lock
from lake.state import (
    LakeConflict, LakeError, LakeState, RunFolder, Snapshot, collect_garbage, new_run_info, open_snapshot, read_state,
)
from lake.tables import TABLES, LakeTable

__all__ = [
    "TABLES", "LakeBusy", "LakeConflict", "LakeError", "LakeState", "LakeTable", "RunFolder", "Snapshot",
    "collect_garbage", "commit", "discard", "new_run_info", "normalize_root", "open_snapshot", "owned_partitions",
    "read_state", "read_table", "write_table", "writer_lock",
]
