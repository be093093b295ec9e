"""Deterministic tar streams of directories, written straight into a sink.

A MeasurementSet or a caltable is a directory; the object store holds one object per product, so
directories travel as tar streams. The stream is produced in one pass with no temporary file and
is byte-identical for identical trees (sorted entries, numeric owner 0, no user/group names), so a
re-push can recognise an unchanged product by its SHA-256.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from casaflow.archive import iter_tree, normalise, tar_writer


def write_tar(root: Path, sink) -> None:
    """Write ``root`` as an uncompressed tar stream into ``sink`` (anything with ``write`` and ``tell``)."""
    with tar_writer(sink) as tar:
        for path, arcname in iter_tree(root):
            tar.add(str(path), arcname=arcname, recursive=False, filter=normalise)


class HashingSink:
    """Counts and hashes what passes through, then hands it to ``emit`` in ``part_size`` pieces.

    ``emit(data: bytes)`` is called with full parts while writing and with the remainder on
    :meth:`close`. With ``part_size=None`` every write is forwarded as it comes.

    SHA-256 is the most expensive step of a push (~4 s per GiB on a CPU without SHA
    extensions), so it runs in a helper thread, overlapping the reads and writes of the calling
    thread (hashlib releases the GIL on large updates). At most one block waits to be hashed,
    which keeps memory bounded.
    """

    def __init__(self, emit: Callable[[bytes], None], part_size: int | None = None):
        self.emit = emit
        self.part_size = part_size
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        self._pending: Future | None = None
        self._buf = bytearray()

    def _hash(self, data: bytes) -> None:
        if self._pending is not None:
            self._pending.result()
        self._pending = self._hasher.submit(self._sha256.update, data)

    def write(self, data) -> int:
        n = len(data)
        if not n:
            return 0
        data = bytes(data)  # the hashing thread must see the block as it was written
        self._hash(data)
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

    def tell(self) -> int:
        """Bytes written so far (what a tar writer needs to know of its output)."""
        return self.size

    def close(self) -> None:
        """Emit what is left and finish hashing."""
        if self._buf:
            self.emit(bytes(self._buf))
            self._buf = bytearray()
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        self._hasher.shutdown()

    def hexdigest(self) -> str:
        """The SHA-256 of everything written; only after :meth:`close`."""
        if self._pending is not None:
            raise RuntimeError("HashingSink.hexdigest() before close()")
        return self._sha256.hexdigest()


def tree_sha256(root: Path) -> tuple[str, int]:
    """SHA-256 and size of the tar stream of ``root``, without writing it anywhere."""
    sink = HashingSink(lambda _data: None)
    write_tar(root, sink)
    sink.close()
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
