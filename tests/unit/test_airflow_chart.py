"""The official Apache Airflow chart (../shared/charts, 1.20.0-dev) rendered with helm/airflow-values.yaml
and validated strictly for Kubernetes 1.33, next to the casaflow chart: what the values intend is
what the manifests say."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from ..tools import REPO, helm

K8S = "1.33.0"
# The copy in ../shared/charts (beside the checkout, or beside a worktree's parent), or CASAFLOW_AIRFLOW_CHART.
_NAME = "apache-airflow-chart-1.20.0-dev.tgz"
_CANDIDATES = [Path(os.environ["CASAFLOW_AIRFLOW_CHART"])] if os.environ.get("CASAFLOW_AIRFLOW_CHART") else []
_CANDIDATES += [REPO.parent / "shared" / "charts" / _NAME, REPO.parent.parent / "shared" / "charts" / _NAME]
CHART_TGZ = next((p for p in _CANDIDATES if p.exists()), _CANDIDATES[0])

pytestmark = pytest.mark.skipif(not CHART_TGZ.exists(), reason=f"official Airflow chart not found at {CHART_TGZ}")


def template(*args) -> list[dict]:
    proc = subprocess.run([str(helm()), "template", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def airflow_docs(tmp_path_factory):
    root = tmp_path_factory.mktemp("airflow-chart")
    with tarfile.open(CHART_TGZ) as tar:
        tar.extractall(root, filter="data")
    return template("airflow", root / "airflow", "--namespace", "casaflow", "-f", REPO / "helm" / "airflow-values.yaml")


@pytest.fixture(scope="module")
def casaflow_docs():
    return template("casaflow", REPO / "helm" / "casaflow", "--namespace", "casaflow")


@pytest.fixture(scope="module")
def values():
    return yaml.safe_load((REPO / "helm" / "airflow-values.yaml").read_text())


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def pod_template(docs) -> dict:
    cfg = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "airflow-config")
    return yaml.safe_load(cfg["data"]["pod_template_file.yaml"]), cfg["data"]["airflow.cfg"]


def test_every_manifest_validates_strictly(airflow_docs):
    assert len(airflow_docs) > 20
    for d in airflow_docs:
        kubernetes_validate.validate(d, K8S, strict=True)
    template_pod, _ = pod_template(airflow_docs)
    kubernetes_validate.validate(template_pod, K8S, strict=True)


def test_executor_dags_and_image(airflow_docs, values):
    template_pod, cfg = pod_template(airflow_docs)
    assert "executor = KubernetesExecutor" in cfg.splitlines()
    assert "dags_folder = /opt/casaflow-src/dags" in cfg.splitlines()     # in the image, not a volume
    image = f'{values["images"]["airflow"]["repository"]}:{values["images"]["airflow"]["tag"]}'
    assert template_pod["spec"]["containers"][0]["image"] == image
    for name, spec in pod_specs(airflow_docs):
        for c in spec.get("initContainers", []) + spec["containers"]:
            if "airflow" in c["image"] and "postgres" not in name:
                assert c["image"] == image, (name, c["name"])
        assert not any("dags" in (v.get("name") or "") for v in spec.get("volumes", [])), name
    # Airflow decides some settings by version: it is the version the image carries.
    pins = dict(line.split("==", 1) for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line)
    assert values["airflowVersion"] == pins["apache-airflow"]


def test_casaflow_settings_and_s3_connection_on_every_airflow_container(airflow_docs, casaflow_docs):
    settings = next(d for d in casaflow_docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-settings"))
    template_pod, _ = pod_template(airflow_docs)
    containers = [(name, c) for name, spec in pod_specs(airflow_docs)
                  for c in spec.get("initContainers", []) + spec["containers"]
                  if "airflow" in c["image"] and "groomer" not in c["name"] and c["name"] != "casaflow-pools"]
    containers.append(("pod-template", template_pod["spec"]["containers"][0]))
    assert len(containers) >= 8
    for name, c in containers:
        refs = [e["configMapRef"]["name"] for e in c.get("envFrom") or [] if "configMapRef" in e]
        assert settings["metadata"]["name"] in refs, (name, c["name"])
        env = {e["name"]: e for e in c.get("env") or []}
        if c["name"] != "wait-for-airflow-migrations":
            conn = env["AIRFLOW_CONN_CASAFLOW_S3"]["valueFrom"]["secretKeyRef"]
            assert conn == {"name": "casaflow-s3-connection", "key": "uri"}, (name, c["name"])
    assert settings["data"]["CASAFLOW_ENABLE_TEST_DAGS"] == "false"


def test_task_pods_mount_the_workspace_and_share_its_group(airflow_docs, casaflow_docs):
    cm = next(d for d in casaflow_docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-settings"))["data"]
    claim = next(d for d in casaflow_docs if d["kind"] == "PersistentVolumeClaim")
    template_pod, _ = pod_template(airflow_docs)
    spec = template_pod["spec"]
    vols = {v["name"]: v for v in spec["volumes"]}
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == cm["CASAFLOW_WORKSPACE_ROOT"])
    assert vols[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"] \
        == cm["CASAFLOW_WORKSPACE_CLAIM"]
    group = int(cm["CASAFLOW_WORKSPACE_GROUP"])
    assert spec["securityContext"]["fsGroup"] == group and group in spec["securityContext"]["supplementalGroups"]
    assert spec["securityContext"]["runAsUser"] == 50000
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert cm["CASAFLOW_UMASK"] == "0002"
    # The worker pods the operators render carry the same group.
    from operators import resources as res
    from operators.settings import Settings

    sc = res.pod_security_context(Settings(workspace_group=group))
    assert sc.fs_group == group and sc.supplemental_groups == [group]
    assert spec["serviceAccountName"] == "casaflow-launcher"


def test_scheduler_imports_the_pools_from_the_casaflow_chart(airflow_docs, casaflow_docs):
    pools = next(d for d in casaflow_docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-pools"))
    data = json.loads(pools["data"]["pools.json"])
    settings = next(d for d in casaflow_docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-settings"))
    assert set(json.loads(settings["data"]["CASAFLOW_POOLS"]).values()) == set(data)
    scheduler = dict(pod_specs(airflow_docs))["airflow-scheduler"]
    init = next(c for c in scheduler["initContainers"] if c["name"] == "casaflow-pools")
    assert init["args"][:3] == ["airflow", "pools", "import"]
    vol = next(v for v in scheduler["volumes"] if v["name"] == init["volumeMounts"][0]["name"])
    assert vol["configMap"]["name"] == pools["metadata"]["name"]
    assert init["args"][3] == init["volumeMounts"][0]["mountPath"] + "/pools.json"
    names = [c["name"] for c in scheduler["initContainers"]]
    assert names.index("wait-for-airflow-migrations") < names.index("casaflow-pools")
