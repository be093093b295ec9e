"""casaflow's deployment settings, in one place, from ``CASAFLOW_*`` environment variables.

The Helm chart's ConfigMap and the embedded runtime set these; a DAG run may override the
execution mode (Param ``execution_mode``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

EXECUTION_MODES = ("local", "kubernetes", "render")
QA_REVIEW_MODES = ("auto", "required", "never")
QA_TIMEOUT_OUTCOMES = ("reject", "approve")
RESOURCE_CLASSES = ("light", "medium", "heavy")

# Requests/limits per stage class, for one production VLASS-SE-CUBE plane (12500^2 px of 0.6",
# IQUV, ~9.4e7 visibilities per spw). Memory from bench/vlass_scaling.py's fit extrapolated to that
# plane (bench/results/vlass_scaling.json "defaults", bench/results/README.md): the class's largest
# stage, requests x1.25 and limits x1.5, whole GiB up. heavy = vlass-makeimages (tclean: ~34 GiB at
# niter 0 plus ~20 GiB the deconvolution adds, ~55 GiB); medium = vlass-makermsimages (imdev, ~6 GiB);
# light = vlass-exportvlassdata on the 6200^2 cut-out (~2.5 GiB; every other light stage < 1 GiB).
# CPU is not from the fit (the bench runs one OpenMP thread on a shared 2-core machine): unchanged.
DEFAULT_RESOURCES = {
    "light": {"requests": {"cpu": "500m", "memory": "4Gi"}, "limits": {"cpu": "1", "memory": "4Gi"}},
    "medium": {"requests": {"cpu": "1", "memory": "8Gi"}, "limits": {"cpu": "2", "memory": "10Gi"}},
    "heavy": {"requests": {"cpu": "2", "memory": "69Gi"}, "limits": {"cpu": "4", "memory": "83Gi"}},
}


def _json_env(name: str, default):
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"environment variable {name} is not valid JSON: {exc}") from None


def _flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"environment variable {name}={raw!r}: expected true or false")


def _allowed_inputs(raw: str) -> tuple:
    """``CASAFLOW_ALLOWED_INPUTS``: comma-separated absolute local roots and ``s3://bucket[/prefix]``."""
    out = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        if entry.startswith("s3://"):
            bucket = entry[5:].split("/", 1)[0]
            if not bucket:
                raise ValueError(f"CASAFLOW_ALLOWED_INPUTS: {entry!r}: expected s3://bucket[/prefix]")
        elif not entry.startswith("/"):
            raise ValueError(f"CASAFLOW_ALLOWED_INPUTS: {entry!r}: expected an absolute path or s3://bucket[/prefix]")
        out.append(entry)
    return tuple(out)


def _default_worker_command() -> str:
    # The casa-worker installed beside this Python (the project's venv), else on PATH.
    beside = Path(sys.executable).with_name("casa-worker")
    return str(beside) if beside.exists() else (shutil.which("casa-worker") or "casa-worker")


@dataclass(frozen=True)
class Settings:
    execution_mode: str = "local"
    workspace_root: str = ""
    products_destination: str = ""
    catalog: str = ""              # the input catalog the reprocessing DAG reads by default
    aws_conn_id: str = "casaflow_s3"
    worker_command: str = ""
    # QA review before delivery (operators/qa_review.py)
    qa_review: str = "never"
    qa_threshold: float = 0.66
    qa_reviewers: tuple = ()             # Airflow user ids allowed to respond; () = anyone with access
    qa_review_timeout_minutes: float = 72 * 60
    qa_review_timeout_outcome: str = "reject"
    # local mode
    omp_threads: int = 1
    # kubernetes mode
    image: str = "ghcr.io/casaflow/casa-worker:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    namespace: str = "casaflow"
    service_account: str = "casaflow-worker"
    workspace_claim: str = "casaflow-workspace"
    resources: dict = field(default_factory=lambda: DEFAULT_RESOURCES)
    node_selector: dict = field(default_factory=dict)
    tolerations: list = field(default_factory=list)
    affinity: dict = field(default_factory=dict)
    active_deadline_seconds: int = 6 * 3600
    memory_retry_factor: float = 1.5
    memory_retry_cap: str = "128Gi"     # >= 1.5 x the heavy limit: one OOM retry has room
    run_as_user: int = 10001
    # Where a run's inputs may come from: absolute local roots and s3://bucket[/prefix] entries
    # (CASAFLOW_ALLOWED_INPUTS, a comma list). Empty: no input is allowed. See hooks/inputs.py.
    allowed_inputs: tuple = ()
    # The no-op workflow and the test DAGs exist only where this is set (CASAFLOW_ENABLE_TEST_DAGS).
    enable_test_dags: bool = False
    # The group shared by worker pods and Airflow's task pods on the workspace volume (fsGroup and
    # supplemental group of the worker pods; README "Deploy on Kubernetes", workspace ownership).
    workspace_group: int = 10001
    # Airflow pool per resource class (empty: Airflow's default pool); the chart creates them.
    pools: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ.get
        mode = env("CASAFLOW_EXECUTION_MODE", "local")
        if mode not in EXECUTION_MODES:
            raise ValueError(f"CASAFLOW_EXECUTION_MODE={mode!r}: expected one of {EXECUTION_MODES}")
        root = env("CASAFLOW_WORKSPACE_ROOT") or str(Path(tempfile.gettempdir()) / "casaflow" / "workspaces")
        resources = {**DEFAULT_RESOURCES, **_json_env("CASAFLOW_RESOURCES", {})}
        qa_review = env("CASAFLOW_QA_REVIEW", cls.qa_review)
        if qa_review not in QA_REVIEW_MODES:
            raise ValueError(f"CASAFLOW_QA_REVIEW={qa_review!r}: expected one of {QA_REVIEW_MODES}")
        outcome = env("CASAFLOW_QA_REVIEW_TIMEOUT_OUTCOME", cls.qa_review_timeout_outcome)
        if outcome not in QA_TIMEOUT_OUTCOMES:
            raise ValueError(f"CASAFLOW_QA_REVIEW_TIMEOUT_OUTCOME={outcome!r}: expected one of {QA_TIMEOUT_OUTCOMES}")
        threshold = float(env("CASAFLOW_QA_THRESHOLD", str(cls.qa_threshold)))
        if not 0 <= threshold <= 1:
            raise ValueError(f"CASAFLOW_QA_THRESHOLD={threshold}: expected a score between 0 and 1")
        timeout = float(env("CASAFLOW_QA_REVIEW_TIMEOUT_MINUTES", str(cls.qa_review_timeout_minutes)))
        if timeout <= 0:
            raise ValueError(f"CASAFLOW_QA_REVIEW_TIMEOUT_MINUTES={timeout}: expected a positive number of minutes")
        return cls(
            execution_mode=mode,
            workspace_root=root,
            products_destination=env("CASAFLOW_PRODUCTS_DESTINATION")
            or str(Path(tempfile.gettempdir()) / "casaflow" / "products"),
            catalog=env("CASAFLOW_CATALOG", ""),
            aws_conn_id=env("CASAFLOW_AWS_CONN_ID", "casaflow_s3"),
            worker_command=env("CASAFLOW_WORKER_COMMAND") or _default_worker_command(),
            qa_review=qa_review,
            qa_threshold=threshold,
            qa_reviewers=tuple(u.strip() for u in env("CASAFLOW_QA_REVIEWERS", "").split(",") if u.strip()),
            qa_review_timeout_minutes=timeout,
            qa_review_timeout_outcome=outcome,
            omp_threads=int(env("CASAFLOW_OMP_THREADS", "1")),
            image=env("CASAFLOW_IMAGE", cls.image),
            image_pull_policy=env("CASAFLOW_IMAGE_PULL_POLICY", cls.image_pull_policy),
            namespace=env("CASAFLOW_NAMESPACE", cls.namespace),
            service_account=env("CASAFLOW_SERVICE_ACCOUNT", cls.service_account),
            workspace_claim=env("CASAFLOW_WORKSPACE_CLAIM", cls.workspace_claim),
            resources=resources,
            node_selector=_json_env("CASAFLOW_NODE_SELECTOR", {}),
            tolerations=_json_env("CASAFLOW_TOLERATIONS", []),
            affinity=_json_env("CASAFLOW_AFFINITY", {}),
            active_deadline_seconds=int(env("CASAFLOW_ACTIVE_DEADLINE_SECONDS", str(cls.active_deadline_seconds))),
            memory_retry_factor=float(env("CASAFLOW_MEMORY_RETRY_FACTOR", str(cls.memory_retry_factor))),
            memory_retry_cap=env("CASAFLOW_MEMORY_RETRY_CAP", cls.memory_retry_cap),
            run_as_user=int(env("CASAFLOW_RUN_AS_USER", str(cls.run_as_user))),
            allowed_inputs=_allowed_inputs(env("CASAFLOW_ALLOWED_INPUTS", "")),
            enable_test_dags=_flag("CASAFLOW_ENABLE_TEST_DAGS"),
            workspace_group=int(env("CASAFLOW_WORKSPACE_GROUP", str(cls.workspace_group))),
            pools=_pools(_json_env("CASAFLOW_POOLS", {})),
        )


def _pools(value) -> dict:
    if not isinstance(value, dict) or set(value) - set(RESOURCE_CLASSES) or \
            not all(isinstance(v, str) and v for v in value.values()):
        raise ValueError(f"CASAFLOW_POOLS={json.dumps(value)}: expected an object mapping resource classes "
                         f"{RESOURCE_CLASSES} to Airflow pool names")
    return value


def settings() -> Settings:
    return Settings.from_env()
