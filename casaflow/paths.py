"""The one path-containment check: a name that comes from outside must stay inside its root.

Every stage parameter that names a path, every product-store key and every name read from an
input file (a manifest entry, an archive member, an S3 key's last component) goes through
:func:`inside` (or :func:`relative_name`, its pure form) before it is joined to a directory.

Two checks, in this order:

1. *Lexical* (always): the name is a non-empty string, relative, without NUL bytes, and ``..``
   never climbs above the root once the name is normalised.
2. *Resolved* (``resolve=True``): after following symlinks the path is still below the resolved
   root. Use it where the root is a destination (product stores, output directories). The
   workspace's ``input/`` holds symlinks to allowed inputs outside it (``hooks/inputs.py``), so
   stage parameters are checked lexically: every link in a workspace is made either by the input
   fetch (whose source passed the allow-list) or by :mod:`casaflow.safetar` (which refuses links
   pointing out).

A refusal is a :class:`~casaflow.errors.InputError` naming what was refused, and where it came
from.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from .errors import InputError


class PathEscapeError(InputError):
    """A name that would lead outside the directory it must stay in."""


def relative_name(name, what: str, *, single: bool = False) -> str:
    """``name`` normalised, if it is a relative path that stays inside any root it is joined to.

    ``single=True`` additionally requires one path component (a file name, no ``/``).
    ``what`` names the culprit in the error (e.g. ``"parameter 'products_dir'"``).
    """
    if isinstance(name, Path):
        name = str(name)
    if not isinstance(name, str) or not name:
        raise PathEscapeError(f"{what}: expected a non-empty relative path, got {name!r}")
    if "\x00" in name:
        raise PathEscapeError(f"{what}: {name!r} contains a NUL byte")
    if "\\" in name:
        raise PathEscapeError(f"{what}: {name!r} contains a backslash")
    if name.startswith("/"):
        raise PathEscapeError(f"{what}: {name!r} is absolute; expected a path relative to its directory")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../"):
        raise PathEscapeError(f"{what}: {name!r} leads outside its directory ('..')")
    if single and (norm in (".", "") or "/" in norm or norm != name.rstrip("/")):
        raise PathEscapeError(f"{what}: {name!r} must be a plain file name (no directories, no '.' or '..')")
    return norm


def inside(root, name, what: str, *, resolve: bool = False, single: bool = False,
           allow_root: bool = True) -> Path:
    """``root / name``, refused with :class:`PathEscapeError` if it would leave ``root``.

    ``name == "."`` (or one normalising to it) gives ``root`` itself, unless ``allow_root`` is
    false or ``single`` is set. With ``resolve=True``
    symlinks are followed (also of a not-yet-existing path's existing parents) and the result
    must still be below the resolved root.
    """
    root = Path(root)
    norm = relative_name(name, what, single=single)
    if norm == "." and not allow_root:
        raise PathEscapeError(f"{what}: {name!r} names the directory itself, not something in it")
    path = root / norm if norm != "." else root
    if resolve:
        real = os.path.realpath(path)
        if not within(real, root):
            raise PathEscapeError(f"{what}: {name!r} resolves to {real}, outside {root}")
    return path


def within(path, root) -> bool:
    """Is ``path`` ``root`` or below it, both with symlinks resolved?"""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)
