"""Writing archives and product directories the one way casaflow writes them: deterministic and
atomic.

Same inputs, same bytes (sorted entries, numeric owner 0, no user/group names, modes 0755/0644
whatever the writer's umask, gzip header time 0), so a re-run makes byte-identical products and a re-push recognises them by their SHA-256. The
archive is written through :mod:`casaflow.atomic` (a hidden temporary file renamed into place): a reader sees the old
archive or the complete new one, never half of one. Reading untrusted archives is
:mod:`casaflow.safetar`'s job.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import Iterable

from .atomic import atomic_open


def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Owner 0 without names, and modes that do not depend on who wrote the files or with what
    umask: 0755 for directories and executables, 0644 for other files (no setgid, no group write).
    A worker pod (umask 0002, setgid workspace directories) and local mode make the same bytes."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if info.isdir() or (info.isfile() and info.mode & 0o111):
        info.mode = 0o755
    elif info.isfile():
        info.mode = 0o644
    return info


# casacore's lock files: rewritten whenever a table is opened, even read-only; not data.
RUNTIME_FILES = frozenset({"table.lock"})


# File content is copied through in reads of this size.
COPY_BUFSIZE = 8 << 20


def tar_writer(fileobj) -> tarfile.TarFile:
    """A tar writer (PAX format) on ``fileobj``, which needs ``write`` and ``tell`` only.

    Not tarfile's stream mode ("w|"): that mode collects output in a ``bytes`` buffer and
    re-copies the whole buffer on every 16 KiB write, which cost ~4 s per GiB here. The plain
    mode never seeks when writing, so it streams just as well, and it copies file content
    straight through in ``COPY_BUFSIZE`` reads. Both modes write the same bytes.
    """
    return tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT, copybufsize=COPY_BUFSIZE)


def iter_tree(root: Path, arcroot: str | None = None, skip_names=frozenset()):
    """(path, arcname) of ``root`` and everything below it, sorted, directories before their
    content. ``arcroot`` names ``root`` in the archive (default: its basename); files named
    in ``skip_names`` are left out."""
    root = Path(root)
    base = arcroot if arcroot is not None else root.name
    yield root, base
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for name in sorted(dirnames) + sorted(f for f in filenames if f not in skip_names):
            arc = f"{base}/{name}" if rel == "." else f"{base}/{rel}/{name}"
            yield Path(dirpath) / name, arc


def write_tgz(dest: Path, entries: Iterable[tuple[Path, str]], compress: bool = True,
              skip_names=frozenset()) -> Path:
    """Write ``(path, arcname)`` entries (files or whole directories) to ``dest`` atomically.

    Directories are added recursively in sorted order. ``compress=False`` writes a plain tar.
    """
    dest = Path(dest)
    with atomic_open(dest, "wb") as raw:
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if compress else None
        try:
            with tar_writer(gz or raw) as tar:
                for path, arcname in sorted(entries, key=lambda e: e[1]):
                    for p, arc in iter_tree(Path(path), arcname, skip_names):
                        tar.add(str(p), arcname=arc, recursive=False, filter=normalise)
        finally:
            if gz is not None:
                gz.close()
    return dest


def replace_dir(staging: Path, target: Path) -> None:
    """Put the complete directory ``staging`` in place of ``target`` with renames only: a reader
    sees the old directory or the new one, whole, never a mix."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
