"""Running casa-worker in the worker image as its pod runs it, and the VLASS chain the tests drive."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from . import engine

# The VLASS chain up to the first imaging group, as vlass_se_cube runs it (dags/vlass_se_cube.py).
CHAIN = [("vlass-importdata", ["vis={pims}"]),
         ("vlass-editimlist-seip", ["parameter_list=SEIP_parameter.list"]),
         ("vlass-transformimagedata", []),
         ("vlass-restorepims", ["reimaging_resources=reimaging_resources.tgz"]),
         ("vlass-flagtargetsdata", []),
         ("vlass-editimlist-cube", ["parameter_list=CCIP_parameter.list"])]


def in_pod(image: str, ws: Path, *args, ro=(), extra=(), uid=engine.WORKER_UID) -> subprocess.CompletedProcess:
    """casa-worker ARGS in the worker image with the pod's security context; `ws` (and the read-only
    paths `ro`) mounted at their own paths. OMP_NUM_THREADS=1 as local mode runs CASA."""
    mounts = ["-v", f"{ws}:{ws}:rw"]
    for p in ro:
        mounts += ["-v", f"{p}:{p}:ro"]
    return engine.run("run", *engine.pod_flags(uid), *mounts, "-e", "OMP_NUM_THREADS=1", *extra,
                      image, *args, timeout=1800)


def last_json(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def vlass_workspace(vlass_tiny, path: Path) -> Path:
    path.mkdir(parents=True)
    for name in ("SEIP_parameter.list", "CCIP_parameter.list", "reimaging_resources.tgz"):
        shutil.copyfile(vlass_tiny["dir"] / name, path / name)
    (path / vlass_tiny["pims"].name).symlink_to(vlass_tiny["pims"])   # resources are keyed on the MS name
    os.chown(path, engine.WORKER_UID, engine.WORKER_UID)
    return path
