"""Transfer chunks (the QA2 guide's ``tarsplit``): a package split into tar files no larger than a
given size, and the command that verifies and reassembles them.

* Chunks are named ``<project>_<YYYY_MM_DD>_<NNN>_of_<MMM>.tar``; a ``<project>_<YYYY_MM_DD>.sha256``
  file lists their SHA-256 in ``sha256sum`` format (``sha256sum -c`` checks it too).
* Each chunk is a complete, ordinary tar file: extracting all of them into one directory gives
  the package back. The chunk's size is computed exactly before it is written (headers, 512-byte
  blocks, end-of-archive, 10 KiB record padding), so no chunk ever exceeds the limit.
* A file too large for one chunk is cut into members named ``<name>.tarsplit-part-NNN-of-MMM``;
  :func:`join` puts them back together. Nothing else is renamed.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import shutil
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from .. import safetar
from ..archive import iter_tree, normalise, tar_writer
from ..atomic import atomic_open, remove_stale_temps, write_text
from ..errors import InputError

BLOCK = 512
RECORD = 20 * BLOCK          # tarfile pads every archive to a multiple of this
END = 2 * BLOCK
PART_RE = re.compile(r"^(?P<name>.+)\.tarsplit-part-(?P<k>\d{3})-of-(?P<n>\d{3})$")
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*$")


def parse_size(text) -> int:
    """'4G', '500M', '1.5GB', 1048576 -> bytes (binary multiples)."""
    if isinstance(text, int):
        return text
    m = SIZE_RE.match(str(text))
    if not m:
        raise InputError(f"chunk size {text!r}: expected a number of bytes or e.g. '500M', '4G'")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m[2].lower()]
    return int(float(m[1]) * scale)


@dataclass
class Entry:
    path: Path
    arcname: str
    offset: int = 0            # for a part of a large file
    length: int | None = None  # None: the whole file (or a directory)


def _info(entry: Entry) -> tarfile.TarInfo:
    st = entry.path.lstat()
    info = tarfile.TarInfo(entry.arcname)
    info.mtime = int(st.st_mtime)
    info.mode = st.st_mode & 0o7777
    if entry.path.is_dir():
        info.type = tarfile.DIRTYPE
        info.size = 0
    else:
        info.size = st.st_size if entry.length is None else entry.length
    return normalise(info)


def _cost(info: tarfile.TarInfo) -> int:
    header = len(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))
    return header + math.ceil(info.size / BLOCK) * BLOCK


def _chunk_size(content: int) -> int:
    return math.ceil((content + END) / RECORD) * RECORD


def plan(package: Path, limit: int) -> list[list[Entry]]:
    """Entries per chunk, in tree order, each chunk fitting in ``limit`` bytes."""
    if limit < 4 * RECORD:
        raise InputError(f"chunk size {limit} bytes: too small, at least {4 * RECORD} bytes")
    capacity = (limit // RECORD) * RECORD - END      # content bytes a chunk can hold
    chunks: list[list[Entry]] = [[]]
    used = 0
    for path, arc in iter_tree(package):
        if path.is_symlink():
            raise InputError(f"package {package}: {path} is a symbolic link; refusing to transfer it")
        whole = Entry(path, arc)
        cost = _cost(_info(whole))
        if cost > capacity and path.is_file():
            parts = _cut(path, arc, capacity)
        else:
            parts = [whole]
        for e in parts:
            cost = _cost(_info(e))
            if used + cost > capacity and chunks[-1]:
                chunks.append([])
                used = 0
            chunks[-1].append(e)
            used += cost
    return chunks


def _cut(path: Path, arc: str, capacity: int) -> list[Entry]:
    size = path.stat().st_size
    probe = tarfile.TarInfo(f"{arc}.tarsplit-part-000-of-000")
    probe.size = 0
    header = _cost(normalise(probe)) + BLOCK            # room for a pax header grown by digits
    per_part = ((capacity - header) // BLOCK) * BLOCK
    n = math.ceil(size / per_part)
    if n > 999:
        raise InputError(f"{path}: {size} bytes would need {n} parts; use a larger chunk size")
    return [Entry(path, f"{arc}.tarsplit-part-{k + 1:03d}-of-{n:03d}", k * per_part, min(per_part, size - k * per_part))
            for k in range(n)]


class _Slice(io.RawIOBase):
    def __init__(self, fh, length):
        self.fh, self.left = fh, length

    def readable(self):
        return True

    def readinto(self, b):
        n = self.fh.readinto(memoryview(b)[: min(len(b), self.left)])
        self.left -= n
        return n


def chunk_names(project: str, date: str, n: int) -> list[str]:
    stamp = date.replace("-", "_")
    return [f"{project}_{stamp}_{k:03d}_of_{n:03d}.tar" for k in range(1, n + 1)]


def split(package: Path, outdir: Path, limit, date: str, project: str | None = None) -> dict:
    """Write the chunks and the checksum list into ``outdir``; returns a summary."""
    package, outdir = Path(package), Path(outdir)
    if not package.is_dir():
        raise InputError(f"package {package}: not a directory")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        raise InputError(f"date {date!r}: expected YYYY-MM-DD")
    limit = parse_size(limit)
    project = project or package.name
    chunks = plan(package, limit)
    names = chunk_names(project, date, len(chunks))
    outdir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(outdir)    # a killed try's half-written chunk (its own temporary name)
    stale = set(outdir.glob(f"{project}_{date.replace('-', '_')}_*_of_*.tar")) - {outdir / n for n in names}
    sums = []
    for name, entries in zip(names, chunks):
        dest = outdir / name
        with atomic_open(dest, "wb") as raw:
            with tar_writer(raw) as tar:
                for e in entries:
                    info = _info(e)
                    if info.isdir():
                        tar.addfile(info)
                    else:
                        with open(e.path, "rb") as fh:
                            fh.seek(e.offset)
                            tar.addfile(info, io.BufferedReader(_Slice(fh, info.size)))
            size = raw.tell()
            if size > limit:   # the size was computed in advance: exceeding it is a bug here
                raise RuntimeError(f"tarsplit: {name} came out {size} bytes, over the {limit}-byte limit")
        sums.append((sha256_file(dest), name, size))
    checksum = outdir / f"{project}_{date.replace('-', '_')}.sha256"
    write_text(checksum, "".join(f"{h}  {n}\n" for h, n, _ in sums))
    for path in stale:        # a previous run's chunks with another count: only once the new set is listed
        path.unlink()
    return {"chunks": [n for _, n, _ in sums], "sizes": [s for _, _, s in sums], "checksums": checksum.name,
            "limit": limit, "package_bytes": sum(p.stat().st_size for p in package.rglob("*") if p.is_file())}


def sha256_file(path: Path, block: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while data := fh.read(block):
            h.update(data)
    return h.hexdigest()


def verify(checksum_file: Path) -> list[Path]:
    """Check every chunk listed in the checksum file; returns the chunks in order."""
    checksum_file = Path(checksum_file)
    if not checksum_file.is_file():
        raise InputError(f"checksum list {checksum_file}: not found")
    chunks = []
    for n, line in enumerate(checksum_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            digest, name = line.split(None, 1)
        except ValueError:
            raise InputError(f"{checksum_file.name} line {n}: expected '<sha256>  <file>'") from None
        name = name.strip().lstrip("*")
        if "/" in name or name.startswith(".."):
            raise InputError(f"{checksum_file.name} line {n}: {name!r} is not a plain file name")
        path = checksum_file.parent / name
        if not path.is_file():
            raise InputError(f"chunk {name} listed in {checksum_file.name} is missing")
        if sha256_file(path) != digest.lower():
            raise InputError(f"chunk {name}: SHA-256 does not match {checksum_file.name} (corrupt or incomplete)")
        chunks.append(path)
    if not chunks:
        raise InputError(f"checksum list {checksum_file}: lists no chunks")
    return chunks


def join(checksum_file: Path, dest: Path) -> Path:
    """Verify the chunks, extract them (safely) and put split files back together in ``dest``.
    Returns the reassembled package directory."""
    chunks = verify(checksum_file)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".tarjoin-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        for chunk in chunks:
            safetar.extract(chunk, staging)
        _reassemble(staging)
        tops = [p for p in staging.iterdir()]
        if len(tops) != 1:
            raise InputError(f"chunks of {checksum_file.name} hold {len(tops)} top-level entries, expected one package")
        target = dest / tops[0].name
        if target.exists():
            shutil.rmtree(target)
        os.replace(tops[0], target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _reassemble(root: Path) -> None:
    groups: dict[Path, dict] = {}
    for p in root.rglob("*.tarsplit-part-*"):
        m = PART_RE.match(p.name)
        if m:
            g = groups.setdefault(p.with_name(m["name"]), {"n": int(m["n"]), "parts": {}})
            g["parts"][int(m["k"])] = p
    for target, g in groups.items():
        missing = [k for k in range(1, g["n"] + 1) if k not in g["parts"]]
        if missing:
            raise InputError(f"{target.name}: parts {missing} of {g['n']} are missing from the chunks")
        with open(target, "wb") as out:
            for k in range(1, g["n"] + 1):
                with open(g["parts"][k], "rb") as fh:
                    shutil.copyfileobj(fh, out, 8 << 20)
                g["parts"][k].unlink()
