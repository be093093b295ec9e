"""The container engine for tests/containers: which one, how to call it, the images (built once per
set of inputs, reused while the inputs do not change) and the worker pod's security context."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "images" / "podman-containers.conf"
LOCK = Path(os.environ.get("CASAFLOW_IMAGE_LOCK", "/var/tmp/casaflow-build-images.lock"))
WORKER_UID = 10001
AIRFLOW_UID = 50000


def engine() -> str | None:
    """podman or docker (CONTAINER_ENGINE chooses), None when there is none."""
    wanted = os.environ.get("CONTAINER_ENGINE")
    for name in ([wanted] if wanted else ["podman", "docker"]):
        path = shutil.which(name)
        if path:
            return path
    return None


def is_podman() -> bool:
    e = engine()
    return bool(e) and Path(e).name == "podman"


def env() -> dict:
    """The environment for engine commands: on podman, the settings these machines need."""
    out = dict(os.environ)
    if is_podman():
        out.setdefault("CONTAINERS_CONF", str(CONF))
    return out


def run(*args, check=False, timeout=None, input=None) -> subprocess.CompletedProcess:
    return subprocess.run([engine(), *map(str, args)], capture_output=True, text=True, env=env(),
                          check=check, timeout=timeout, input=input)


# -- the images ------------------------------------------------------------------------------------
COMMON = ("constraints.txt", "pyproject.toml", ".dockerignore", "scripts/build-images", "casaflow")
INPUTS = {"worker": COMMON + ("images/casa-worker",),
          "airflow": COMMON + ("README.md", "images/airflow", "dags", "operators", "hooks", "casaflow_ops")}


def inputs_hash(role: str) -> str:
    """A hash of everything image `role` is built from (its build context and recipe)."""
    h = hashlib.sha256()
    for name in INPUTS[role]:
        p = REPO / name
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()
                                              and "__pycache__" not in f.parts and f.suffix != ".pyc")
        for f in files:
            h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def image(role: str) -> str:
    """The reference of image `role` ('worker' or 'airflow') built from this checkout: built by
    scripts/build-images --local-base unless an image of these exact inputs exists already. One
    build at a time across test processes (a file lock)."""
    tag = "test-" + inputs_hash(role)
    prefix = os.environ.get("CASAFLOW_TEST_IMAGE_PREFIX", "localhost/casaflow")
    ref = {"worker": f"{prefix}/casa-worker:{tag}", "airflow": f"{prefix}/airflow:{tag}"}[role]
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if run("image", "inspect", ref).returncode != 0:
            args = [str(REPO / "scripts" / "build-images"), "--only", role]
            if os.environ.get("CASAFLOW_TEST_OFFICIAL_BASES") != "1":
                args.insert(1, "--local-base")
            proc = subprocess.run(args, capture_output=True, text=True,
                                  env={**env(), "CASAFLOW_IMAGE_PREFIX": prefix, "CASAFLOW_IMAGE_TAG": tag,
                                       "CONTAINER_ENGINE": engine()})
            assert proc.returncode == 0, f"scripts/build-images --only {role} failed:\n{proc.stderr[-6000:]}"
    return ref


class Images:
    """images['worker'], images['airflow']: each built on first use."""

    def __init__(self):
        self._refs = {}

    def __getitem__(self, role: str) -> str:
        if role not in self._refs:
            self._refs[role] = image(role)
        return self._refs[role]


# -- the worker pod's security context, as operators/resources.py renders it ------------------------
def pod_flags(uid: int = WORKER_UID, gid: int | None = None, groups=(), memory: str | None = None) -> list:
    """`run` flags equal to the worker pod: non-root uid, read-only root filesystem, every capability
    dropped, no privilege escalation, no network, /tmp as the scratch volume."""
    flags = ["--rm", "--network=none", "--read-only", "--cap-drop=ALL", "--security-opt", "no-new-privileges",
             "--user", f"{uid}:{uid if gid is None else gid}", "--tmpfs", "/tmp:rw,size=2g,mode=1777"]
    for g in groups:
        flags += ["--group-add", str(g)]
    if memory:
        flags += ["--memory", memory, "--memory-swap", memory]
    return flags
