"""The one atomic write: a reader sees the old file or the complete new one, never half of one.

Content is written to a hidden temporary file with a unique name in the destination's own
directory (so two writers never share a temporary file, and the rename never crosses a file
system), then renamed over the destination. On any failure the temporary file is removed and
the destination is untouched. ``durable=True`` also flushes the file and its directory to disk
(``fsync``) so the new content survives a crash of the machine: use it for what is delivered or
what marks work as done; scratch files inside a workspace do without.

Hidden temporary names start with ``.`` and end with ``.tmp``: listings of products skip them.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path
from typing import Iterator


_TEMP = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")


def temp_name(dest: Path) -> Path:
    """A unique hidden temporary path beside ``dest``."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of :func:`temp_name`'s temporaries."""
    return bool(_TEMP.fullmatch(name))


def remove_stale_temps(directory) -> list[Path]:
    """Remove the temporaries an earlier, killed writer left in ``directory`` (not below it).
    Only for a directory the caller alone writes (a stage's own output directory, at its start)."""
    directory = Path(directory)
    gone = []
    if directory.is_dir():
        for p in directory.iterdir():
            if is_temp_name(p.name) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                gone.append(p)
    return gone


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(dest, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``dest``'s new content to (by any means: a library
    writing a zip, a tar, a FITS file...); it replaces ``dest`` when the block ends normally."""
    dest = Path(dest)
    tmp = temp_name(dest)
    try:
        yield tmp
        if durable:
            _fsync_path(tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if durable:
        _fsync_path(dest.parent, directory=True)


@contextlib.contextmanager
def atomic_open(dest, mode: str = "wb", durable: bool = False, **kwargs):
    """``open()`` of a temporary file that replaces ``dest`` when the block ends normally."""
    with atomic_path(dest, durable) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def write_bytes(dest, data: bytes, durable: bool = False) -> Path:
    with atomic_open(dest, "wb", durable) as fh:
        fh.write(data)
    return Path(dest)


def write_text(dest, text: str, durable: bool = False, encoding: str = "utf-8") -> Path:
    return write_bytes(dest, text.encode(encoding), durable)
