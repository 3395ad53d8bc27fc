"""Parquet files and folders of the lake, through Beam's FileSystems, so a local path,
gs:// or s3:// work unchanged."""
from __future__ import annotations

import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems


def is_remote(path: str) -> bool:
    return "://" in path


def normalize_root(root: str) -> str:
    """A lake root as every path in it is spelled: absolute for a local one, no trailing /."""
    return root.rstrip("/") if is_remote(root) else os.path.abspath(root)


def join(root: str, *parts: str) -> str:
    return FileSystems.join(root, *parts)


def write_table(path: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    with FileSystems.create(path) as out:
        out.write(buffer.getvalue())


def read_table(path: str, columns: list[str] | None = None) -> pa.Table:
    with FileSystems.open(path) as stream:
        return pq.read_table(io.BytesIO(stream.read()), columns=columns)


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as stream:
        return stream.read()


def files_under(folder: str, pattern: str = "**") -> list[str]:
    """Files below `folder` (every level), sorted; [] when it does not exist."""
    if not is_remote(folder) and not os.path.isdir(folder):
        return []
    found = FileSystems.match([FileSystems.join(folder, pattern)])[0].metadata_list
    return sorted(m.path for m in found)


def delete(paths: list[str]) -> None:
    """Delete files or folders that exist (others are ignored)."""
    present = [p for p in paths if FileSystems.exists(p)]
    if present:
        FileSystems.delete(present)


def fsync_path(path) -> None:
    """Flush a local file, or a folder's entries (after a rename into it), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
