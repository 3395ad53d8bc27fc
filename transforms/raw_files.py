"""A raw file's bytes as its readers need them: decompressed when its name says so.

Why its own module: the events readers (transforms.parse) and the identity (CRM) reader
(transforms.identity_table) both read raw files, compressed or not, the same way."""
from __future__ import annotations

import bz2
import gzip
import lzma
import os
import zlib
from pathlib import Path

import zstandard
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.raw_records import FileFailure

COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".deflate", ".xz", ".lzma")
"""Name suffixes (any case) Beam's CompressionTypes.detect_compression_type recognises; a raw
file may carry one and is decompressed on reading."""


def read_raw(path: str | Path) -> bytes:
    """A raw file's bytes, decompressed when its name ends in a compression suffix (the
    codecs Beam's FileSystems uses for it). Read through FileSystems as stored and
    decompressed whole here: Beam's AUTO decompression returns what came before a truncation
    without a word; here a truncated or corrupt file is a FileFailure, and so is a dangling
    symbolic link. An empty file is empty."""
    path = str(path)
    if "://" not in path and os.path.islink(path) and not os.path.exists(path):
        raise FileFailure(f"a symbolic link to a missing file ({os.readlink(path)})")
    kind = CompressionTypes.detect_compression_type(path)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        data = stream.read()
    if kind == CompressionTypes.UNCOMPRESSED or not data:
        return data
    try:
        return _DECOMPRESS[kind](data)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise FileFailure(f"cannot decompress as {kind}: {exc}") from None


def _zstd(data: bytes) -> bytes:
    """Every frame, each to its end (a frame cut short raises)."""
    out = []
    while data:
        frame = zstandard.ZstdDecompressor(max_window_size=2**31).decompressobj()
        out.append(frame.decompress(data))
        if not frame.eof:
            raise EOFError("compressed data ended before the end of its frame")
        data = frame.unused_data
    return b"".join(out)


_DECOMPRESS = {
    CompressionTypes.GZIP: gzip.decompress,
    CompressionTypes.BZIP2: bz2.decompress,
    CompressionTypes.LZMA: lzma.decompress,  # .xz and legacy .lzma, as Beam's LZMADecompressor
    CompressionTypes.DEFLATE: zlib.decompress,  # zlib-wrapped, as Beam's zlib.decompressobj()
    CompressionTypes.ZSTD: _zstd,
}
