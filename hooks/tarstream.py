"""Deterministic tar streams of directories, written straight into a sink.

A MeasurementSet or a caltable is a directory; the object store holds one object per product, so
directories travel as tar streams. The stream is produced in one pass with no temporary file and
is byte-identical for identical trees (sorted entries, numeric owner 0, no user/group names), so a
re-push can recognise an unchanged product by its SHA-256.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path
from typing import Callable

from casaflow.archive import iter_tree, normalise


def write_tar(root: Path, sink) -> None:
    """Write ``root`` as an uncompressed tar stream into ``sink`` (anything with ``write``)."""
    # Stream mode writes in `bufsize` records; the default (10 KiB) means ~100k sink calls per GB.
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=1 << 20) as tar:
        for path, arcname in iter_tree(root):
            tar.add(str(path), arcname=arcname, recursive=False, filter=normalise)


class HashingSink:
    """Counts and hashes what passes through, then hands it to ``emit`` in ``part_size`` pieces.

    ``emit(data: bytes)`` is called with full parts while writing and with the remainder on
    :meth:`close`. With ``part_size=None`` every write is forwarded as it comes.
    """

    def __init__(self, emit: Callable[[bytes], None], part_size: int | None = None):
        self.emit = emit
        self.part_size = part_size
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._buf = bytearray()

    def write(self, data) -> int:
        n = len(data)
        if not n:
            return 0
        self.sha256.update(data)
        self.size += n
        if self.part_size is None:
            self.emit(data)
            return n
        self._buf += data
        while len(self._buf) >= self.part_size:
            part = bytes(self._buf[: self.part_size])
            del self._buf[: self.part_size]
            self.emit(part)
        return n

    def close(self) -> None:
        if self._buf:
            self.emit(bytes(self._buf))
            self._buf = bytearray()

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


def tree_sha256(root: Path) -> tuple[str, int]:
    """SHA-256 and size of the tar stream of ``root``, without writing it anywhere."""
    sink = HashingSink(lambda _data: None)
    write_tar(root, sink)
    return sink.hexdigest(), sink.size


def file_sha256(path: Path, chunk: int = 8 << 20) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
            size += len(block)
    return h.hexdigest(), size
