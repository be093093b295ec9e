"""Extracting archives from outside without trusting them.

Every selected member is checked against tarfile's ``data`` filter (no absolute paths, no ``..``,
no links or devices pointing outside, no setuid bits) *before* anything is written, and the
extraction goes to a hidden directory that is moved into place only when complete: a corrupt or
hostile archive is rejected with nothing extracted.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tarfile
import uuid
from pathlib import Path

from .errors import InputError


def list_members(archive: Path) -> list[tarfile.TarInfo]:
    """All members; a file that is not a (complete, readable) tar archive is an input error."""
    archive = Path(archive)
    if not archive.is_file():
        raise InputError(f"archive {archive}: no such file")
    try:
        with tarfile.open(archive, "r:*") as tar:
            return tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(f"archive {archive}: not a readable tar archive ({exc})") from None


def extract(archive: Path, dest: Path, patterns: list[str] | None = None,
            skip: list[str] | None = None) -> list[str]:
    """Extract the members matching any of ``patterns`` (fnmatch; ``*`` crosses ``/``) and none
    of ``skip`` into ``dest``. Returns the member names extracted."""
    archive, dest = Path(archive), Path(dest)
    members = list_members(archive)
    chosen = [m for m in members
              if (patterns is None or any(fnmatch.fnmatch(m.name, p) for p in patterns))
              and not any(fnmatch.fnmatch(m.name, p) for p in (skip or []))]
    staging = dest / f".extract-{uuid.uuid4().hex[:8]}"
    for m in chosen:
        # The data filter would quietly strip a leading '/'; an archive that has one is refused.
        if m.name.startswith(("/", "\\")) or ".." in Path(m.name).parts:
            raise InputError(f"archive {archive}: member {m.name!r} refused (absolute or parent path); "
                             f"nothing extracted")
        try:
            tarfile.data_filter(m, str(staging))
        except tarfile.FilterError as exc:
            raise InputError(f"archive {archive}: member {m.name!r} refused ({exc}); nothing extracted") from None
    staging.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(staging, members=[tar.getmember(m.name) for m in chosen], filter="data")
        # Move top-level entries into place; an existing entry of the same name is replaced.
        for entry in sorted(os.listdir(staging)):
            target = dest / entry
            if target.is_dir() and not target.is_symlink():
                _merge_dir(staging / entry, target)
            else:
                os.replace(staging / entry, target)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(f"archive {archive}: extraction failed ({exc}); nothing extracted") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [m.name for m in chosen]


def _merge_dir(src: Path, dst: Path) -> None:
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            os.replace(Path(root) / f, dst / rel / f)
