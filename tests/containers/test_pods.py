"""The pods `render` mode writes, run as pods with `podman kube play` (no Kubernetes control plane can
run here): a mapped makeimages instance and an ALMA export. The worker's exit code and
/airflow/xcom/return.json are what the operator expects; an input error exits 2; a memory limit below
what the stage needs ends as an out-of-memory kill (137), and the operator's retry logic, fed that
pod status, raises the memory for the next try, which then succeeds.

Two substitutions, both outside the worker container: the XCom sidecar's image (alpine, not
reachable here) becomes the worker image running the sidecar's own command, and the workspace claim
becomes a podman volume (kube play's own mapping of a persistentVolumeClaim) bound to a test directory.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kubernetes.client import models as k8s

from . import engine

pytestmark = [pytest.mark.containers, pytest.mark.casa]

RUN_ID = "manual__2026-12-01T00:00:00+00:00"
SIDECAR = "airflow-xcom-sidecar"
SMALL_MIB = 120        # the OOM test's first-try memory limit
# Small enough for this machine's two cores; the chart's values size a real cluster.
RESOURCES = {"light": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
             "medium": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
             "heavy": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "3Gi"}}}


@pytest.fixture(scope="module")
def cluster(images, tmp_path_factory):
    """The settings a deployment's ConfigMap gives, and the workspace claim as a podman volume."""
    root = tmp_path_factory.mktemp("claim") / "workspaces"
    root.mkdir()
    for p in (root.parent, root):
        os.chmod(p, 0o2775)
        os.chown(p, engine.WORKER_UID, engine.WORKER_UID)
    claim = f"casaflow-ws-{uuid.uuid4().hex[:8]}"
    made = engine.run("volume", "create", "--opt", "type=none", "--opt", "o=bind", "--opt", f"device={root}", claim)
    assert made.returncode == 0, made.stderr
    env = {"CASAFLOW_EXECUTION_MODE": "render", "CASAFLOW_IMAGE": images["worker"],
           "CASAFLOW_IMAGE_PULL_POLICY": "Never", "CASAFLOW_WORKSPACE_ROOT": str(root),
           "CASAFLOW_WORKSPACE_CLAIM": claim, "CASAFLOW_RESOURCES": json.dumps(RESOURCES),
           "CASAFLOW_MEMORY_RETRY_FACTOR": "16", "CASAFLOW_MEMORY_RETRY_CAP": "4Gi"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield SimpleNamespace(root=root, claim=claim, images=images)
    for k, v in old.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    engine.run("volume", "rm", "-f", claim)


def context(task_id, map_index=-1, try_number=1, dag_id="vlass_se_cube"):
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, run_id=RUN_ID, map_index=map_index, try_number=try_number)
    return {"dag": SimpleNamespace(dag_id=dag_id), "run_id": RUN_ID, "ti": ti, "params": {"execution_mode": "render"}}


def render(op, ctx) -> dict:
    out = op.execute(ctx)
    assert out["status"] == "rendered"
    return out["pod"]


def play(pod: dict, cluster, tmp_path: Path) -> dict:
    """Run the pod to its end; the worker's exit code, OOM flag and what the operator would read as XCom."""
    pod = json.loads(json.dumps(pod))
    pod["metadata"]["name"] = f"{pod['metadata']['name'][:40]}-{uuid.uuid4().hex[:6]}"
    for c in pod["spec"]["containers"]:
        if c["name"] == SIDECAR:
            c["image"] = cluster.images["worker"]
    path = tmp_path / f"{pod['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(pod, sort_keys=False))
    started = engine.run("kube", "play", "--network", "none", path, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    name = pod["metadata"]["name"]
    try:
        base = f"{name}-base"
        waited = engine.run("wait", base, timeout=1800)
        assert waited.returncode == 0, waited.stderr
        state = json.loads(engine.run("inspect", "--format", "{{json .State}}", base, check=True).stdout)
        xcom = engine.run("exec", f"{name}-{SIDECAR}", "cat", "/airflow/xcom/return.json")
        logs = engine.run("logs", base)
        return {"exit_code": state["ExitCode"], "oom": state.get("OOMKilled", False),
                "xcom": json.loads(xcom.stdout) if xcom.returncode == 0 else None,
                "logs": logs.stdout[-3000:] + logs.stderr[-3000:]}
    finally:
        engine.run("kube", "down", path, timeout=300)


def observed_pod(result: dict) -> k8s.V1Pod:
    """The pod status Kubernetes would report for what podman observed."""
    code = result["exit_code"]
    term = k8s.V1ContainerStateTerminated(exit_code=code, reason="OOMKilled" if result["oom"] else
                                          ("Completed" if code == 0 else "Error"))
    cs = k8s.V1ContainerStatus(name="base", image="", image_id="", ready=False, restart_count=0,
                               state=k8s.V1ContainerState(terminated=term))
    return k8s.V1Pod(status=k8s.V1PodStatus(phase="Succeeded" if code == 0 else "Failed", container_statuses=[cs]))


def copy_in(src: Path, dst: Path) -> Path:
    """A workspace copied into the claim, links resolved (the pod sees only the claim), owned by the worker."""
    shutil.copytree(src, dst, symlinks=False)
    for p in [dst, *dst.rglob("*")]:
        os.lchown(p, engine.WORKER_UID, engine.WORKER_UID)
    return dst


@pytest.fixture(scope="module")
def vlass_prepared(vlass_chains):
    """The VLASS workspace the chain test took through the cube editimlist (and one makeimages) in the
    worker image, and the imaging targets."""
    return vlass_chains["pod"], vlass_chains["results"]["pod"]["vlass-editimlist-cube"]["outputs"]["targets"]


def test_mapped_makeimages_pod(cluster, vlass_prepared, tmp_path):
    from operators.casa_stage import CasaStageOperator

    src, targets = vlass_prepared
    ws = copy_in(src, cluster.root / "vlass" / "mk")
    i = len(targets) - 1                        # the last mapped instance
    t = targets[i]
    op = CasaStageOperator(task_id="plane.makeimages", stage="vlass-makeimages", resource_class="heavy",
                           workspace=str(ws), stage_params={"group": t["group"]}, tag=t["tag"])
    pod = render(op, context("plane.makeimages", map_index=i))
    assert pod["metadata"]["labels"]["map_index"] == str(i)
    out = play(pod, cluster, tmp_path)
    assert out["exit_code"] == 0, out["logs"]
    assert res_failure(out) is None
    written = json.loads((ws / "results" / f"vlass-makeimages.{t['tag']}.json").read_text())
    assert out["xcom"] == written and written["status"] == "success" and written["stage"] == "vlass-makeimages"
    assert any(p["path"].endswith(".image.tt0") or p["path"].endswith(".image") for p in written["products"])


def res_failure(out):
    from operators import resources as res

    return res.pod_failure_class(observed_pod(out))


@pytest.fixture(scope="module")
def alma_claim_ws(cluster, alma_tiny):
    ws = cluster.root / "alma" / "export"
    (ws / "input").mkdir(parents=True)
    copy_in(alma_tiny["working"], ws / "input" / "working")
    for p in (ws.parent, ws, ws / "input"):
        os.chown(p, engine.WORKER_UID, engine.WORKER_UID)
    return ws


def alma_op(ws: Path, **params):
    from operators.casa_stage import CasaStageOperator

    return CasaStageOperator(task_id="exportdata", stage="alma-exportdata", resource_class="medium",
                             workspace=str(ws), stage_params={"working_dir": "input/working", **params})


def test_alma_export_pod(cluster, alma_claim_ws, tmp_path):
    out = play(render(alma_op(alma_claim_ws), context("exportdata", dag_id="alma_exportdata")), cluster, tmp_path)
    assert out["exit_code"] == 0, out["logs"]
    written = json.loads((alma_claim_ws / "results" / "alma-exportdata.json").read_text())
    assert out["xcom"] == written and written["status"] == "success"
    assert any(p["path"].endswith(".pipeline_manifest.xml") for p in written["products"])


def test_input_error_pod_exits_2(cluster, alma_claim_ws, tmp_path):
    op = alma_op(alma_claim_ws, working_dir="input/no-such-dir")
    out = play(render(op, context("exportdata", dag_id="alma_exportdata")), cluster, tmp_path)
    assert out["exit_code"] == 2 and not out["oom"], out["logs"]
    assert res_failure(out) == "input"
    assert out["xcom"]["status"] != "success" and "no-such-dir" in out["xcom"]["message"]


def test_oom_kill_then_retry_with_more_memory(cluster, alma_claim_ws, tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowException
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from operators import resources as res
    from operators.casa_stage import CasaStageFailed

    # Below the stage's anonymous memory: importing CASA alone holds ~150 MiB of it (the rest of its
    # ~300 MiB peak RSS is shared-library pages, which the kernel reclaims under a cgroup limit
    # instead of killing: at 200Mi the export survived on a fresh machine, slowly).
    small = json.loads(json.dumps(RESOURCES))
    small["medium"]["limits"]["memory"] = small["medium"]["requests"]["memory"] = f"{SMALL_MIB}Mi"
    monkeypatch.setenv("CASAFLOW_RESOURCES", json.dumps(small))
    shutil.rmtree(alma_claim_ws / "results", ignore_errors=True)
    op = alma_op(alma_claim_ws)
    first_ctx = context("exportdata", dag_id="alma_exportdata", try_number=1)
    first = play(render(op, first_ctx), cluster, tmp_path)
    # Killed by the memory limit: 137 (SIGKILL). podman on these machines (hybrid cgroups) does not
    # flag OOMKilled, so the status carries the exit code alone; the operator classes both the same.
    assert first["exit_code"] == 137, first
    remote = observed_pod(first)
    assert res.pod_failure_class(remote) == "resource"
    # The operator's own cleanup, fed that status. Its parent (which needs a cluster's API to read
    # logs and delete the pod) reports the failed pod as the provider does.
    monkeypatch.setattr(KubernetesPodOperator, "cleanup", lambda self, pod, remote_pod: (_ for _ in ()).throw(
        AirflowException("Pod exportdata returned a failure.")))
    # This process is the Airflow side here: it writes the OOM counter (creating results/, which
    # the killed try never made) with the Airflow image's umask 0002, so the worker's group can
    # write there (README, workspace ownership; tests/containers/test_workspace_ownership.py).
    old_umask = os.umask(0o002)
    try:
        with pytest.raises(CasaStageFailed, match="resource"):
            op.cleanup(None, remote)
    finally:
        os.umask(old_umask)
    assert res.count_oom_attempts(str(alma_claim_ws), "alma-exportdata", None) == 1
    # The next try (a new operator instance, as Airflow makes one per try) asks for 16x the memory.
    retry = alma_op(alma_claim_ws)
    pod = render(retry, context("exportdata", dag_id="alma_exportdata", try_number=2))
    base = next(c for c in pod["spec"]["containers"] if c["name"] == "base")
    assert res.memory_bytes(base["resources"]["limits"]["memory"]) == 16 * SMALL_MIB * 2 ** 20
    second = play(pod, cluster, tmp_path)
    assert second["exit_code"] == 0 and not second["oom"], second["logs"]
    assert second["xcom"]["status"] == "success"
