"""Kubernetes, offline: every worker pod of every workflow DAG rendered and validated strictly against
Kubernetes 1.33, the Helm chart linted, rendered and validated, failure classes on recorded pods."""

from __future__ import annotations

import json
import re
import subprocess
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import kubernetes_validate
import pytest
import yaml
from kubernetes.client import models as k8s

from operators import resources as res
from operators.casa_stage import CasaStageFailed, CasaStageOperator
from operators.settings import Settings

from ..tools import REPO, helm

K8S = "1.33.0"
RUN_ID = "manual__2026-01-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()
    assert not bag.import_errors, bag.import_errors
    return bag


def context(task_id, map_index=-1, try_number=1, dag_id="vlass_se_cube"):
    ti = SimpleNamespace(dag_id=dag_id, task_id=task_id, run_id=RUN_ID, map_index=map_index,
                         try_number=try_number)
    return {"dag": SimpleNamespace(dag_id=dag_id), "run_id": RUN_ID, "ti": ti,
            "params": {"execution_mode": "render"}}


def rendered_pods(dag, groups=("2", "3,4", "6")):
    """(task_id, map_index, resource_class, pod dict) for every CasaStageOperator of the DAG, the
    mapped per-group chain expanded over ``groups``."""
    out = []
    for task in dag.tasks:
        if not isinstance(task, CasaStageOperator):
            continue
        if task.task_group and task.task_group.group_id == "plane":   # the mapped task group
            for i, g in enumerate(groups):
                op = CasaStageOperator(task_id=task.task_id, stage=task.stage, resource_class=task.resource_class,
                                       stage_params={"group": g}, tag="spw" + g.replace(",", "_"))
                out.append((task.task_id, i, task.resource_class,
                            op.execute(context(task.task_id, i, dag_id=dag.dag_id))["pod"]))
        else:
            out.append((task.task_id, -1, task.resource_class,
                        task.execute(context(task.task_id, dag_id=dag.dag_id))["pod"]))
    return out


WORKER_TASKS = {
    "vlass_se_cube": {"importdata", "editimlist_seip", "transformimagedata", "restorepims", "flagtargetsdata",
                      "editimlist_cube", "plane.makeimages", "plane.pbcor", "plane.makermsimages",
                      "plane.makecutoutimages", "planes", "analyzestokescubes", "exportvlassdata", "weblog"},
    "alma_exportdata": {"exportdata", "weblog"},
    "alma_qa2_package": {"package", "tarsplit", "weblog"},
}


@pytest.mark.parametrize("dag_id", sorted(WORKER_TASKS))
def test_every_worker_pod_validates_and_is_hardened(dagbag, dag_id):
    pods = rendered_pods(dagbag.get_dag(dag_id))
    assert {t for t, _, _, _ in pods} == WORKER_TASKS[dag_id]
    if dag_id == "vlass_se_cube":
        assert sum(1 for t, _, _, _ in pods if t == "plane.makeimages") == 3
    cfg = Settings.from_env()
    for task_id, map_index, rclass, pod in pods:
        kubernetes_validate.validate(pod, K8S, strict=True)
        spec = pod["spec"]
        base = next(c for c in spec["containers"] if c["name"] == "base")
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        # The workspace group shared with Airflow's task pods (helm/airflow-values.yaml).
        assert spec["securityContext"]["fsGroup"] == cfg.workspace_group
        assert spec["securityContext"]["supplementalGroups"] == [cfg.workspace_group]
        for c in spec["containers"]:     # the XCom sidecar is hardened too
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
            assert sc["capabilities"]["drop"] == ["ALL"] and sc["runAsNonRoot"]
        assert base["resources"] == cfg.resources[rclass], task_id
        mounts = {m["name"]: m["mountPath"] for m in base["volumeMounts"]}
        assert mounts["workspace"] == cfg.workspace_root and mounts["scratch"] == "/tmp"
        claim = next(v for v in spec["volumes"] if v["name"] == "workspace")["persistentVolumeClaim"]
        assert claim["claimName"] == cfg.workspace_claim
        labels = pod["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == "casa-worker"
        assert labels["dag_id"] == dag_id and labels["task_id"] and labels["try_number"] == "1"
        if map_index >= 0:
            assert labels["map_index"] == str(map_index)
        assert pod["metadata"]["annotations"]["casaflow.org/run-id"] == RUN_ID
        assert spec["activeDeadlineSeconds"] == cfg.active_deadline_seconds
        assert spec["automountServiceAccountToken"] is False
        env = {e["name"]: e["value"] for e in base["env"]}
        assert env["CASAFLOW_RESULT_PATH"] == "/airflow/xcom/return.json"
        assert int(env["OMP_NUM_THREADS"]) == res.cpu_count(cfg.resources[rclass]["limits"]["cpu"])
        assert base["command"] == ["casa-worker"] and base["args"][1:3] == ["--workspace", base["args"][2]]
    heavy = [p for t, _, r, p in pods if r == "heavy"]
    # the heavy default (operators/settings.py, sized by bench/vlass_scaling.py)
    assert all(p["spec"]["containers"][0]["resources"]["limits"]["memory"] == "83Gi" for p in heavy)


def test_resources_overridable_per_task(monkeypatch):
    monkeypatch.setenv("CASAFLOW_RESOURCES", '{"light": {"requests": {"cpu": "100m", "memory": "256Mi"}, '
                                             '"limits": {"cpu": "200m", "memory": "512Mi"}}}')
    op = CasaStageOperator(task_id="t", stage="noop", workspace="/w")
    pod = op.execute(context("t"))["pod"]
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "200m", "memory": "512Mi"}
    custom = CasaStageOperator(task_id="u", stage="noop", workspace="/w", container_resources=k8s.V1ResourceRequirements(
        requests={"cpu": "3", "memory": "3Gi"}, limits={"cpu": "3", "memory": "3Gi"}))
    assert custom.execute(context("u"))["pod"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "3Gi"


def _pod(phase="Failed", reason=None, term_reason=None, exit_code=None, running=False):
    state = k8s.V1ContainerState(
        running=k8s.V1ContainerStateRunning() if running else None,
        terminated=None if running or exit_code is None else
        k8s.V1ContainerStateTerminated(exit_code=exit_code, reason=term_reason))
    cs = k8s.V1ContainerStatus(name="base", image="i", image_id="", ready=False, restart_count=0, state=state)
    return k8s.V1Pod(status=k8s.V1PodStatus(phase=phase, reason=reason, container_statuses=[cs]))


@pytest.mark.parametrize("pod,expected", [
    (_pod("Succeeded", exit_code=0), None),
    (_pod(exit_code=2, term_reason="Error"), "input"),
    (_pod(exit_code=3, term_reason="Error"), "science"),
    (_pod(exit_code=4, term_reason="Error"), "transient"),
    (_pod(exit_code=137, term_reason="OOMKilled"), "resource"),
    (_pod(exit_code=134, term_reason="Error"), "science"),       # SIGABRT from casacore
    (_pod(reason="DeadlineExceeded", running=True), "transient"),
    (_pod(reason="Evicted", running=True), "transient"),
])
def test_pod_failure_classes(pod, expected):
    assert res.pod_failure_class(pod) == expected


def test_oom_retry_raises_memory_with_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("CASAFLOW_MEMORY_RETRY_CAP", "150Gi")   # above one retry of the heavy default
    op = CasaStageOperator(task_id="img", stage="vlass-makeimages", resource_class="heavy", workspace=str(tmp_path),
                           tag="spw2")
    limits = []
    for try_number in (1, 2, 3):
        pod = op.execute(context("img", try_number=try_number))["pod"]
        limits.append(pod["spec"]["containers"][0]["resources"]["limits"]["memory"])
        res.record_oom_attempt(str(tmp_path), "vlass-makeimages", "spw2")   # that try was OOMKilled
        op.container_resources = res.requirements(Settings.from_env(), "heavy")
    assert limits == ["83Gi", "127488Mi", "153600Mi"]    # x1.5 after one OOM = 124.5Gi; x2.25 = 186.75Gi capped at 150Gi


def test_retry_decision_per_failure_class():
    op = CasaStageOperator(task_id="t", stage="noop", workspace="/w")
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException):
        op._raise_for("input", "bad")
    with pytest.raises(AirflowFailException):
        op._raise_for("science", "tclean")
    for cls in ("transient", "resource"):
        with pytest.raises(CasaStageFailed):
            op._raise_for(cls, "x")
    assert op.retries == 2 and op.retry_exponential_backoff


# -- the chart ----------------------------------------------------------------------------------
CHART = REPO / "helm" / "casaflow"


def helm_run(*args, check=True):
    return subprocess.run([str(helm()), *args], capture_output=True, text=True, check=check)


def rendered(values_file: Path | None = None, sets=()):
    args = ["template", "cf", str(CHART), "--namespace", "casaflow"]
    if values_file:
        args += ["-f", str(values_file)]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm_run(*args).stdout) if d]


def test_helm_lint_strict():
    proc = helm_run("lint", "--strict", str(CHART), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("values", [None, "custom"])
def test_chart_renders_valid_manifests(tmp_path, values, monkeypatch):
    vf = None
    if values:
        vf = tmp_path / "v.yaml"
        vf.write_text(yaml.safe_dump({
            "executionMode": "kubernetes", "workspace": {"mountPath": "/data/ws", "claimName": "ws", "create": True,
                                                         "storageClassName": "cephfs", "size": "2Ti"},
            "products": {"destination": "s3://archive/vlass"}, "janitor": {"enabled": False},
            "nodeSelector": {"casaflow/imaging": "true"},
            "tolerations": [{"key": "imaging", "operator": "Exists", "effect": "NoSchedule"}],
            "inputs": {"allowed": ["/data/ws/inputs", "s3://archive-raw/vlass"]}}))
    docs = rendered(vf)
    kinds = sorted(d["kind"] for d in docs)
    expected = ["ConfigMap", "ConfigMap", "PersistentVolumeClaim", "Role", "RoleBinding", "ServiceAccount",
                "ServiceAccount"]
    janitor = ["CronJob", "ServiceAccount", "Role", "RoleBinding"]    # on its own account
    assert kinds == sorted(expected + ([] if values else janitor))
    for d in docs:
        kubernetes_validate.validate(d, K8S, strict=True)
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "cf-pod-launcher")
    verbs = {r["resources"][0]: set(r["verbs"]) for r in role["rules"]}
    assert verbs["pods"] <= {"create", "get", "list", "watch", "delete", "patch"}
    if not values:   # the janitor may only list and delete pods, under its own account
        jrole = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "cf-janitor")
        assert jrole["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "delete"]}]
        binding = next(d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "cf-janitor")
        cron = next(d for d in docs if d["kind"] == "CronJob")
        sa = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"]
        assert binding["subjects"][0]["name"] == sa == "cf-janitor" and binding["roleRef"]["name"] == "cf-janitor"
    cm = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert cm["CASAFLOW_WORKSPACE_ROOT"] == ("/data/ws" if values else "/casaflow/workspaces")
    assert "secret" not in " ".join(cm).lower()
    # The settings read back as the deployment's allowed inputs; by default none (every input refused).
    monkeypatch.setenv("CASAFLOW_ALLOWED_INPUTS", cm["CASAFLOW_ALLOWED_INPUTS"])
    assert Settings.from_env().allowed_inputs == (("/data/ws/inputs", "s3://archive-raw/vlass") if values else ())
    assert json.loads(cm["CASAFLOW_POOLS"]) == {"light": "casaflow-light", "medium": "casaflow-medium",
                                                 "heavy": "casaflow-imaging"}
    pools = json.loads(next(d for d in docs if d["metadata"]["name"] == "cf-pools")["data"]["pools.json"])
    assert pools["casaflow-imaging"]["slots"] == 4


def test_chart_notes_name_only_what_the_templates_use():
    notes = helm_run("install", "cf", str(CHART), "--dry-run=client", "--namespace", "casaflow").stdout
    notes = notes.split("NOTES:", 1)[1]
    assert "casaflow-s3-connection" in notes and "AIRFLOW_CONN_CASAFLOW_S3" in notes
    assert "casaflow-s3-credentials" not in notes and "<no value>" not in notes
    assert "cf-janitor" in notes and "casaflow-imaging (4" in notes
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    used = " ".join(p.read_text() for p in (CHART / "templates").iterdir())
    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and v and k not in ("resources", "nodeSelector", "affinity"):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"
    unused = [key for key in leaves(values) if f".Values.{key}" not in used]
    assert unused == [], unused


def test_operators_use_the_pool_of_their_resource_class(monkeypatch):
    monkeypatch.setenv("CASAFLOW_POOLS", json.dumps({"heavy": "casaflow-imaging", "light": "casaflow-light"}))
    assert CasaStageOperator(task_id="img", stage="vlass-makeimages", resource_class="heavy").pool == "casaflow-imaging"
    assert CasaStageOperator(task_id="exp", stage="noop", resource_class="light").pool == "casaflow-light"
    assert CasaStageOperator(task_id="m", stage="noop", resource_class="medium").pool == "default_pool"
    monkeypatch.setenv("CASAFLOW_POOLS", json.dumps({"imaging": "x"}))
    with pytest.raises(ValueError, match="CASAFLOW_POOLS"):
        Settings.from_env()


def test_chart_schema_rejects_bad_values(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"resources": {"heavy": {"requests": {"cpu": 4, "memory": "16Gi"},
                                                           "limits": {"cpu": "4", "memory": "32Gi"}}}}))
    proc = helm_run("template", "cf", str(CHART), "-f", str(bad), check=False)
    assert proc.returncode != 0 and "cpu" in proc.stderr
    proc = helm_run("template", "cf", str(CHART), "--set", "executionMode=cloud", check=False)
    assert proc.returncode != 0 and "executionMode" in proc.stderr
    for entry in ("data/raw", "/a,/b"):      # relative, or two entries in one: refused by the schema
        bad.write_text(yaml.safe_dump({"inputs": {"allowed": [entry]}}))
        proc = helm_run("template", "cf", str(CHART), "-f", str(bad), check=False)
        assert proc.returncode != 0 and "/inputs/allowed/0" in proc.stderr, proc.stderr


# -- the image ------------------------------------------------------------------------------------
def test_dockerfile_installs_the_tested_pins():
    dockerfile = (REPO / "images" / "casa-worker" / "Dockerfile").read_text()
    assert re.search(r'pip install .*-c constraints\.txt "\.\[casa\]"', dockerfile)
    assert "COPY constraints.txt" in dockerfile and "USER 10001" in dockerfile
    pins = dict(line.split("==", 1) for line in (REPO / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for dist in ("casatools", "casatasks", "casadata", "astropy", "numpy", "lxml", "matplotlib", "six"):
        assert pins[dist] == metadata.version(dist), dist   # the image gets what the tests ran with
    assert f'org.casaflow.casatools.version="{pins["casatools"]}"' in dockerfile


# -- the janitor ----------------------------------------------------------------------------------
def _worker_pod(name, age_min, try_number="1", annotated=True):
    import datetime as dt

    ann = {"casaflow.org/dag-id": "vlass_se_cube", "casaflow.org/run-id": RUN_ID,
           "casaflow.org/task-id": "plane.makeimages", "casaflow.org/map-index": "0",
           "casaflow.org/try-number": try_number} if annotated else {}
    created = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=age_min)
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name=name, annotations=ann, creation_timestamp=created,
                                               labels={"app.kubernetes.io/component": "casa-worker"}))


class RecordingCoreV1:
    """Stands in for the Kubernetes API (no cluster can run here): lists given pods, records deletes."""

    def __init__(self, pods):
        self.pods, self.deleted = pods, []

    def list_namespaced_pod(self, namespace, label_selector):
        assert label_selector == "app.kubernetes.io/component=casa-worker"
        return SimpleNamespace(items=self.pods)

    def delete_namespaced_pod(self, name, namespace):
        self.deleted.append(name)


@pytest.mark.parametrize("state,try_number,pod_try,deleted", [
    ("running", 1, "1", False),          # the live try: untouched
    ("success", 1, "1", True),           # finished: its pod is an orphan
    ("failed", 1, "1", True),
    ("running", 2, "1", True),           # pod of an earlier try
    (None, None, "1", True),             # task instance gone (run deleted)
])
def test_janitor_decisions(state, try_number, pod_try, deleted):
    from casaflow_ops import janitor

    api = RecordingCoreV1([_worker_pod("p-old", 60, pod_try), _worker_pod("p-young", 1, pod_try)])
    lookup = (lambda *ids: None) if state is None else (lambda *ids: (state, try_number))
    janitor.run("casaflow", 30, core_v1=api, lookup=lookup)
    assert api.deleted == (["p-old"] if deleted else [])   # the young pod is always in its grace period


def test_janitor_dry_run_and_unannotated():
    from casaflow_ops import janitor

    api = RecordingCoreV1([_worker_pod("p", 60, annotated=False)])
    doomed = janitor.run("casaflow", 30, dry_run=True, core_v1=api, lookup=lambda *ids: ("running", 1))
    assert doomed == [("p", "no casaflow task annotations")] and api.deleted == []
