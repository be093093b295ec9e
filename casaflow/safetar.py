"""Extracting archives from outside without trusting them.

Before anything is written, every selected member is checked: no absolute name and no ``..``
(:mod:`casaflow.paths`), nothing below another member that is a link, no name twice, tarfile's
``data`` filter (no links or devices pointing outside, no special files, no setuid bits), and the
sizes the headers declare (at most ``max_bytes`` in all and ``max_members`` members, so a tar or
gzip bomb is refused while reading its headers, before its content is inflated). Failures name
the archive and the member.

The extraction goes to a hidden staging directory inside the destination, and its top-level
entries are then moved into place with every replaced file kept aside until the end: a failure at
any point (a hostile member, a full disk, an I/O error) leaves the destination exactly as it was.

Failure classes: a bad archive is an :class:`InputError`; a full disk or an I/O error (while
reading or writing) is a :class:`TransientError`, so the stage is retried, and a destination
without room for what the headers declare is refused as transient before extraction starts.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tarfile
import uuid
from pathlib import Path

from . import paths
from .errors import InputError, TransientError, is_transient_os_error

# Declared content of one extraction and its member count. Far above any real input (a PIMS of
# a few hundred GB, a weblog of tens of thousands of files); callers may lower them.
MAX_BYTES = 4 << 40
MAX_MEMBERS = 1_000_000


class ArchiveRefused(InputError):
    """A hostile, malformed or oversized archive (or one of its members)."""


def _os_failure(archive: Path, doing: str, exc: OSError) -> Exception:
    if is_transient_os_error(exc):
        return TransientError(f"archive {archive}: {doing} failed ({exc}); nothing extracted")
    return InputError(f"archive {archive}: {doing} failed ({exc}); nothing extracted")


def _scan(archive: Path, max_bytes: int, max_members: int) -> list[tarfile.TarInfo]:
    members, declared = [], 0
    with tarfile.open(archive, "r:*") as tar:
        # Header by header: a member that breaks a limit stops the read before its content
        # (or the next header) is decompressed.
        while (m := tar.next()) is not None:
            members.append(m)
            declared += max(m.size, 0)
            if len(members) > max_members:
                raise ArchiveRefused(f"archive {archive}: more than {max_members} members (an archive bomb?); "
                                     f"nothing extracted")
            if declared > max_bytes:
                raise ArchiveRefused(f"archive {archive}: member {m.name!r} brings the declared content to "
                                     f"{declared} bytes, over the limit of {max_bytes} (an archive bomb?); "
                                     f"nothing extracted")
    return members


def list_members(archive: Path, max_bytes: int = MAX_BYTES, max_members: int = MAX_MEMBERS) -> list[tarfile.TarInfo]:
    """All members; a file that is not a (complete, readable) tar archive is an input error."""
    archive = Path(archive)
    if not archive.is_file():
        raise InputError(f"archive {archive}: no such file")
    try:
        return _scan(archive, max_bytes, max_members)
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise ArchiveRefused(f"archive {archive}: not a readable tar archive ({exc})") from None
    except OSError as exc:
        if is_transient_os_error(exc):
            raise _os_failure(archive, "reading", exc) from None
        raise ArchiveRefused(f"archive {archive}: not a readable tar archive ({exc})") from None


def check_members(archive: Path, chosen: list[tarfile.TarInfo], staging: Path) -> None:
    """Refuse the whole archive if any chosen member is unsafe (see the module docstring)."""
    links = {m.name.rstrip("/") for m in chosen if m.issym() or m.islnk()}
    seen: set[str] = set()
    for m in chosen:
        what = f"archive {archive}: member {m.name!r}"
        try:
            # The data filter would quietly strip a leading '/'; an archive that has one is refused.
            name = paths.relative_name(m.name, what)
        except paths.PathEscapeError as exc:
            raise ArchiveRefused(f"{exc}; refused, nothing extracted") from None
        parts = name.split("/")
        through = next(("/".join(parts[:i]) for i in range(1, len(parts)) if "/".join(parts[:i]) in links), None)
        if through is not None:
            raise ArchiveRefused(f"{what} refused (it lies below the link member {through!r}); nothing extracted")
        if not m.isdir():
            if name in seen:
                raise ArchiveRefused(f"{what} refused (the name appears twice); nothing extracted")
            seen.add(name)
        try:
            tarfile.data_filter(m, str(staging))
        except tarfile.FilterError as exc:
            raise ArchiveRefused(f"{what} refused ({exc}); nothing extracted") from None


def extract(archive: Path, dest: Path, patterns: list[str] | None = None,
            skip: list[str] | None = None, max_bytes: int = MAX_BYTES,
            max_members: int = MAX_MEMBERS) -> list[str]:
    """Extract the members matching any of ``patterns`` (fnmatch; ``*`` crosses ``/``) and none
    of ``skip`` into ``dest``. Returns the member names extracted."""
    archive, dest = Path(archive), Path(dest)
    members = list_members(archive, max_bytes, max_members)
    chosen = [m for m in members
              if (patterns is None or any(fnmatch.fnmatch(m.name, p) for p in patterns))
              and not any(fnmatch.fnmatch(m.name, p) for p in (skip or []))]
    staging = dest / f".extract-{uuid.uuid4().hex[:8]}"
    check_members(archive, chosen, staging)
    need = sum(m.size for m in chosen if m.isfile())
    try:
        free = shutil.disk_usage(dest).free
    except OSError:
        free = None
    if free is not None and need > free:
        raise TransientError(f"archive {archive}: {need} bytes to extract, only {free} free in {dest}; "
                             f"nothing extracted")
    try:
        staging.mkdir(parents=True)
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(staging, members=[tar.getmember(m.name) for m in chosen], filter="data")
        _move_into_place(staging, dest)
    except tarfile.FilterError as exc:   # only reachable through links made during extraction
        raise ArchiveRefused(f"archive {archive}: refused during extraction ({exc}); nothing extracted") from None
    except (tarfile.TarError, EOFError) as exc:
        raise ArchiveRefused(f"archive {archive}: extraction failed ({exc}); nothing extracted") from None
    except OSError as exc:
        raise _os_failure(archive, "extraction", exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [m.name for m in chosen]


def _move_into_place(staging: Path, dest: Path) -> None:
    """Move ``staging``'s content into ``dest`` (an existing directory of the same name is merged
    file by file). All or nothing: on any failure every move done so far is undone."""
    backup = dest / f".extract-replaced-{uuid.uuid4().hex[:8]}"
    journal: list[tuple[Path, Path | None]] = []   # (placed path, what it replaced, kept aside)

    def place(src: Path, dst: Path) -> None:
        kept = None
        if dst.exists() or dst.is_symlink():
            kept = backup / f"{len(journal)}"
            backup.mkdir(exist_ok=True)
            os.replace(dst, kept)
        journal.append((dst, kept))
        os.replace(src, dst)

    try:
        for entry in sorted(os.listdir(staging)):
            src, target = staging / entry, dest / entry
            if target.is_dir() and not target.is_symlink() and src.is_dir() and not src.is_symlink():
                for root, dirs, files in os.walk(src):
                    rel = Path(root).relative_to(src)
                    for d in sorted(dirs):
                        t = target / rel / d
                        if not (t.is_dir() and not t.is_symlink() and not (Path(root) / d).is_symlink()):
                            place(Path(root) / d, t)     # new here: moved whole, not walked
                            dirs.remove(d)
                    for f in sorted(files):
                        place(Path(root) / f, target / rel / f)
            else:
                place(src, target)
    except BaseException:
        for placed, kept in reversed(journal):
            try:
                if placed.is_dir() and not placed.is_symlink():
                    shutil.rmtree(placed)
                else:
                    placed.unlink(missing_ok=True)
                if kept is not None:
                    os.replace(kept, placed)
            except OSError:    # keep undoing the rest; the original error is what matters
                pass
        shutil.rmtree(backup, ignore_errors=True)
        raise
    shutil.rmtree(backup, ignore_errors=True)
