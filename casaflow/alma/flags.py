"""Final flags of an MS: the ``Pipeline_Final`` flag version and its export tarball (§7.2)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..archive import RUNTIME_FILES, write_tgz

FINAL = "Pipeline_Final"
EXTRA_VERSIONS = ("after_deterministic_flagging",)   # exported too when present (PIPE-933)


def version_comments(ms: Path) -> dict[str, str]:
    """Flag versions of an MS and their comments, from ``<ms>.flagversions/FLAG_VERSION_LIST``."""
    listing = Path(f"{ms}.flagversions") / "FLAG_VERSION_LIST"
    out = {}
    if listing.is_file():
        for line in listing.read_text().splitlines():
            if " : " in line:
                name, comment = line.split(" : ", 1)
                out[name.strip()] = comment.strip()
    return out


def flags_equal(casa, ms: Path, version_table: Path, chunk: int = 100_000) -> bool:
    """Do the MS's current FLAG/FLAG_ROW columns equal those saved in a flag version table?"""
    a, b = casa.tool("table"), casa.tool("table")
    a.open(str(ms))
    b.open(str(version_table))
    try:
        if a.nrows() != b.nrows():
            return False
        for start in range(0, a.nrows(), chunk):
            n = min(chunk, a.nrows() - start)
            for col in ("FLAG", "FLAG_ROW"):
                if not np.array_equal(a.getcol(col, start, n), b.getcol(col, start, n)):
                    return False
        return True
    finally:
        a.close()
        b.close()


def ensure_final_version(casa, ms: Path, warn) -> str:
    """Make sure ``Pipeline_Final`` holds the MS's current flags, as the reference does.

    If it exists and already equals the current flags, nothing is touched (so a re-run changes
    nothing). Otherwise the old version is kept as ``Pipeline_Final.old.<unix time>`` and the
    current flags are saved: the one change to its inputs this stage is defined to make.
    Returns 'kept', 'saved' or 'replaced'.
    """
    table = Path(f"{ms}.flagversions") / f"flags.{FINAL}"
    existing = version_comments(ms)
    if FINAL in existing and table.is_dir():
        if flags_equal(casa, ms, table):
            return "kept"
        stamp = int(time.time())
        casa.task("flagmanager", vis=str(ms), mode="rename", oldname=FINAL, versionname=f"{FINAL}.old.{stamp}",
                  comment=f"Backup of final pipeline flags (backup {stamp})")
        warn(f"{ms.name}: {FINAL} differed from the MS's current flags; kept as {FINAL}.old.{stamp} and saved anew")
        outcome = "replaced"
    else:
        warn(f"{ms.name}: no {FINAL} flag version; saved from the MS's current flags")
        outcome = "saved"
    casa.task("flagmanager", vis=str(ms), mode="save", versionname=FINAL, comment="Final pipeline flags")
    return outcome


def export_tarball(ms: Path, dest_dir: Path) -> Path:
    """``<vis>.flagversions.tgz``: ``flags.Pipeline_Final`` (and after_deterministic_flagging if
    saved) with a FLAG_VERSION_LIST naming just those versions."""
    comments = version_comments(ms)
    fv = Path(f"{ms}.flagversions")
    names = [FINAL] + [v for v in EXTRA_VERSIONS if v in comments and (fv / f"flags.{v}").is_dir()]
    arcdir = f"{ms.name}.flagversions"
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".flaglist-") as tmp:
        listing = Path(tmp) / "FLAG_VERSION_LIST"
        listing.write_text("".join(f"{n} : {comments.get(n, '')}\n" for n in names))
        # A generated file takes the final version's time, so the same flags give the same bytes.
        stamp = (fv / f"flags.{FINAL}" / "table.dat").stat().st_mtime
        os.utime(listing, (stamp, stamp))
        entries = [(fv / f"flags.{n}", f"{arcdir}/flags.{n}") for n in names] + [(listing, f"{arcdir}/FLAG_VERSION_LIST")]
        dest = dest_dir / f"{ms.name}.flagversions.tgz"
        write_tgz(dest, entries, skip_names=RUNTIME_FILES)
    return dest


def restore_from_tarball(casa, tarball: Path, ms: Path) -> None:
    """Restore ``Pipeline_Final`` from an exported tarball onto ``ms`` (what hifa_restoredata does)."""
    from .. import safetar

    fv = Path(f"{ms}.flagversions")
    if fv.exists():
        shutil.rmtree(fv)
    safetar.extract(tarball, ms.parent, patterns=[f"{ms.name}.flagversions*"])
    casa.task("flagmanager", vis=str(ms), mode="restore", versionname=FINAL)
