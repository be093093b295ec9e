"""Container tests: the images built (or reused, keyed by a hash of their inputs) once per session,
the simulated inputs shared with tests/e2e. Without a container engine every test here is skipped
and the session's summary says so (tests/conftest.py)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil

import pytest

from ..e2e.conftest import alma_tiny, vlass_tiny  # noqa: F401  (fixtures shared with the e2e tests)
from ..conftest import SHARED
from ..e2e.conftest import run_worker
from . import engine
from .helpers import CHAIN, in_pod, last_json, vlass_workspace


def pytest_collection_modifyitems(items):
    if engine.engine() is None:
        skip = pytest.mark.skip(reason="no container engine (podman or docker): container tests did not run")
        for item in items:
            if "tests/containers/" in item.nodeid:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def images():
    """images['worker'], images['airflow']: the images of this checkout, built on first use."""
    return engine.Images()


@pytest.fixture(scope="session")
def vlass_chains(images, vlass_tiny):
    """The chain run in local mode and in the image, each in its own workspace, through one
    makeimages. Built once per session for all test processes (in SHARED, under a file lock), as the
    simulated inputs are: test_worker_image compares it, test_pods images another group from it."""
    base = SHARED / f"container-chain-{engine.inputs_hash('worker')}"
    with open(SHARED / "container-chain.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = base / "results.json"
        if not done.exists():
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir(parents=True)
            os.chmod(base, 0o755)
            done.write_text(json.dumps(_run_chains(images, vlass_tiny, base)))
        return {"local": base / "local", "pod": base / "pod", "results": json.loads(done.read_text())}


def _run_chains(images, vlass_tiny, base):
    local = vlass_workspace(vlass_tiny, base / "local")
    pod = vlass_workspace(vlass_tiny, base / "pod")
    pims = vlass_tiny["pims"].name
    results = {"local": {}, "pod": {}}
    for stage, params in CHAIN + [("vlass-makeimages", None)]:
        if params is None:   # the first imaging group the cube editimlist found
            target = results["local"]["vlass-editimlist-cube"]["outputs"]["targets"][0]
            params, tag = [f"group={target['group']}"], ["--tag", target["tag"]]
        else:
            tag = []
        argv = [stage, "--workspace", None, *[a for p in params for a in ("--param", p.format(pims=pims))], *tag]
        lp = run_worker(*[str(local) if a is None else a for a in argv])
        assert lp.returncode == 0, lp.stdout[-3000:] + lp.stderr[-3000:]
        pp = in_pod(images["worker"], pod, *[str(pod) if a is None else a for a in argv], ro=[SHARED])
        assert pp.returncode == 0, pp.stdout[-3000:] + pp.stderr[-3000:]
        results["local"][stage], results["pod"][stage] = last_json(lp), last_json(pp)
    return results
