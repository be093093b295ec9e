"""The one tar writer's bytes do not depend on the umask or the setgid directories the files were
written with: a worker pod (umask 0002, fsGroup's setgid workspace) and local mode (umask 0022)
make byte-identical archives (tests/containers compares them for a real export)."""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile

from casaflow.archive import write_tgz


def _tree(root, umask, setgid):
    old = os.umask(umask)
    try:
        (root / "d" / "sub").mkdir(parents=True)
        (root / "d" / "sub" / "data").write_bytes(b"x" * 100)
        (root / "d" / "run.sh").write_text("#!/bin/sh\n")
        os.chmod(root / "d" / "run.sh", 0o777 & ~umask)
        if setgid:
            for p in (root / "d", root / "d" / "sub"):
                os.chmod(p, os.stat(p).st_mode | stat.S_ISGID)
    finally:
        os.umask(old)
    for p in (root / "d", *(root / "d").rglob("*")):
        os.utime(p, (1_700_000_000, 1_700_000_000))     # same content, same times: only the modes differ
    return root / "d"


def test_same_bytes_whatever_the_umask(tmp_path):
    a = _tree(tmp_path / "a", 0o022, setgid=False)
    b = _tree(tmp_path / "b", 0o002, setgid=True)
    assert os.stat(a / "sub" / "data").st_mode != os.stat(b / "sub" / "data").st_mode
    ta, tb = write_tgz(tmp_path / "a.tgz", [(a, "d")]), write_tgz(tmp_path / "b.tgz", [(b, "d")])
    assert hashlib.sha256(ta.read_bytes()).digest() == hashlib.sha256(tb.read_bytes()).digest()
    with tarfile.open(ta) as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert modes == {"d": 0o755, "d/run.sh": 0o755, "d/sub": 0o755, "d/sub/data": 0o644}
