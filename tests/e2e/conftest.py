"""Simulated inputs, built once per test session by the project's own simulator (real CASA).

They are built into the directory shared by all xdist workers (``tests.conftest.SHARED``) under
a file lock: the first worker to need one builds it, the others wait and then read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
import sys
from pathlib import Path

import pytest

from casaflow_ops.runtime import free_port

from ..conftest import SHARED

WORKER = str(Path(sys.executable).with_name("casa-worker"))


@contextlib.contextmanager
def embedded_runtime(home: Path, dag_ids=(), unpause: bool = True, extra_dags: Path | None = None):
    """The embedded runtime (casaflow_ops/runtime.py) started in ``home`` on a free port, with
    ``dag_ids`` parsed (and unpaused), and ``extra_dags`` (a DAG folder, e.g. tests/dags) parsed
    beside dags/; stopped on exit. Yields (runtime, REST client)."""
    from casaflow_ops import runtime

    r = runtime.create(home=home, port=free_port(), extra_dags=extra_dags)
    try:
        r.up()
        api = runtime.Api(r)
        for dag_id in dag_ids:
            api.wait_for_dag(dag_id)
            if unpause:
                assert api.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})[0] == 200
        yield r, api
    finally:
        r.down()


def load_dag(dag_id: str):
    """A freshly parsed DAG, for one dag.test() run (needs the airflow_db fixture).

    A DAG object must not serve two dag.test() runs: Airflow 3.3's process_params() resolves the
    run's conf into the DAG's own Param objects (ParamsDict.update keeps the instances), so one
    run's conf would become the next run's defaults. Task processes parse the DAG file each
    time, so deployments never see this."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


def workspace_of(base_dir: Path, dag_id: str, dr) -> Path:
    """Where a dag.test() run of dag_id kept its workspace."""
    from operators.command import workspace_for

    return base_dir / "workspaces" / workspace_for("", dag_id, dr.run_id).lstrip("/")


def vlass_conf(vlass_tiny, **extra):
    """The vlass_se_cube run conf for the tiny simulated dataset, local mode."""
    c = {"pims": str(vlass_tiny["pims"]), "reimaging_resources": str(vlass_tiny["resources"]),
         "seip_parameter_list": str(vlass_tiny["seip"]), "ccip_parameter_list": str(vlass_tiny["ccip"]),
         "execution_mode": "local"}
    c.update(extra)
    return c


def run_worker(*args):
    return subprocess.run([WORKER, *args], capture_output=True, text=True)


def built_once(name: str, stage: str, *params: str) -> dict:
    """Run simulator `stage` into SHARED/name unless an earlier run there succeeded; its result."""
    ws = SHARED / name
    ws.parent.mkdir(parents=True, exist_ok=True)
    with open(SHARED / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        result = ws / "results" / f"{stage}.json"  # written last, atomically, by the worker
        if not (result.exists() and json.loads(result.read_text())["status"] == "success"):
            args = [stage, "--workspace", str(ws)]
            for p in params:
                args += ["--param", p]
            proc = run_worker(*args)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        return json.loads(result.read_text())


def vlass_dataset(name: str, preset: str) -> dict:
    """A simulated VLASS preset, built once per test session: PIMS, reimaging_resources.tgz,
    parameter lists and truth.json."""
    built_once(name, "simulate-vlass", f"preset={preset}")
    out = SHARED / name / "input"
    truth = json.loads((out / "truth.json").read_text())
    return {"dir": out, "truth": truth, "pims": out / truth["pims"],
            "resources": out / "reimaging_resources.tgz", "seip": out / "SEIP_parameter.list",
            "ccip": out / "CCIP_parameter.list"}


@pytest.fixture(scope="session")
def vlass_tiny():
    """The tiny VLASS preset."""
    return vlass_dataset("sim-vlass", "tiny")


@pytest.fixture(scope="session")
def alma_tiny():
    """The tiny ALMA pipeline working directory (two EBs in two sessions), and its truth."""
    built_once("sim-alma", "simulate-alma", "preset=tiny")
    out = SHARED / "sim-alma" / "input"
    truth = json.loads((out / "truth.json").read_text())
    return {"dir": out, "truth": truth, "working": out / truth["working"]}


@pytest.fixture(scope="session")
def manual_trees():
    """Manual-reduction trees in the QA2 guide's two shapes: {'multi': path, 'single': path}."""
    out = {}
    for shape in ("multi", "single"):
        result = built_once(f"sim-manual-{shape}", "simulate-manual-tree", f"shape={shape}")
        out[shape] = SHARED / f"sim-manual-{shape}" / result["outputs"]["origpath"]
    return out
