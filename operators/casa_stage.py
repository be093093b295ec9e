"""``CasaStageOperator``: one casaflow stage, in a Kubernetes pod or as a local subprocess.

It *is* a KubernetesPodOperator, so it has the same template fields, the same ``.partial()`` /
``.expand()`` signature and the same pod options in every mode. The mode is chosen per task run:

* ``kubernetes``: a pod running the casa-worker image; the worker writes its result to
  ``/airflow/xcom/return.json`` and the XCom sidecar returns it.
* ``local`` (the embedded single-machine default): the very same argv as a subprocess of the
  Airflow task, its output streamed into the task log, its result.json returned as XCom.
* ``render``: builds the pod the kubernetes mode would create and returns it (and writes it as
  YAML into the workspace) without any cluster: for tests and review.

Mode resolution: the operator's ``execution_mode`` argument, else the DAG run's Param
``execution_mode`` (unless it is ``default``), else the deployment setting
``CASAFLOW_EXECUTION_MODE``.

Failure classes (see :mod:`casaflow.errors`) decide retries: an input error fails at once, no
retry; a science failure is retried only if the stage's policy says so; transient failures are
retried with exponential back-off; an out-of-memory kill is retried with more memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path

from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

from casaflow.errors import class_from_returncode
from casaflow.worker import RESULT_PATH_ENV, result_path

from . import resources as res
from .command import safe_name, worker_argv, workspace_for
from .settings import EXECUTION_MODES, settings

POD_RESULT_PATH = "/airflow/xcom/return.json"
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "casa-worker"


ANNOTATION_PREFIX = "casaflow.org/"


def task_annotations(context) -> dict:
    """The exact task-instance ids (labels are sanitised), for the janitor."""
    ti = context.get("ti")
    return {f"{ANNOTATION_PREFIX}dag-id": str(context["dag"].dag_id), f"{ANNOTATION_PREFIX}run-id": str(context["run_id"]),
            f"{ANNOTATION_PREFIX}task-id": str(getattr(ti, "task_id", "")),
            f"{ANNOTATION_PREFIX}map-index": str(getattr(ti, "map_index", -1)),
            f"{ANNOTATION_PREFIX}try-number": str(getattr(ti, "try_number", 0))}


class CasaStageFailed(AirflowException):
    """A stage failed with a class that may be retried."""


class CasaStageOperator(KubernetesPodOperator):
    template_fields = (*KubernetesPodOperator.template_fields, "stage_params", "workspace", "tag",
                       "execution_mode")
    template_fields_renderers = {**getattr(KubernetesPodOperator, "template_fields_renderers", {}),
                                 "stage_params": "json"}
    ui_color = "#d6eaf8"

    def __init__(self, *, stage: str, stage_params: dict | None = None, workspace: str | None = None,
                 tag: str | None = None, execution_mode: str | None = None, resource_class: str = "light",
                 retry_science: bool = False, **kwargs):
        cfg = settings()
        self.stage = stage
        self.stage_params = stage_params or {}
        self.workspace = workspace
        self.tag = tag
        self.execution_mode = execution_mode
        self.resource_class = resource_class
        self.retry_science = retry_science
        self._settings = cfg
        kwargs.setdefault("task_id", stage)
        kwargs.setdefault("name", f"casa-{stage}")
        kwargs.setdefault("namespace", cfg.namespace)
        kwargs.setdefault("image", cfg.image)
        kwargs.setdefault("image_pull_policy", cfg.image_pull_policy)
        kwargs.setdefault("service_account_name", cfg.service_account)
        kwargs.setdefault("automount_service_account_token", False)  # the worker never calls the API
        kwargs.setdefault("cmds", ["casa-worker"])
        kwargs.setdefault("do_xcom_push", True)  # without it downstream tasks silently get []
        kwargs.setdefault("get_logs", True)
        kwargs.setdefault("on_finish_action", "delete_pod")
        kwargs.setdefault("active_deadline_seconds", cfg.active_deadline_seconds)
        kwargs.setdefault("node_selector", cfg.node_selector or None)
        kwargs.setdefault("tolerations", [k8s.V1Toleration(**t) for t in cfg.tolerations] or None)
        kwargs.setdefault("affinity", cfg.affinity or None)
        kwargs.setdefault("container_resources", res.requirements(cfg, resource_class))
        kwargs.setdefault("security_context", res.pod_security_context(cfg))
        kwargs.setdefault("container_security_context", res.container_security_context())
        kwargs.setdefault("xcom_sidecar_container_security_context", res.container_security_context())
        kwargs.setdefault("volumes", res.volumes(cfg))
        kwargs.setdefault("volume_mounts", res.volume_mounts(cfg))
        labels = dict(kwargs.pop("labels", None) or {})
        labels.update({"app.kubernetes.io/name": "casaflow", COMPONENT_LABEL: COMPONENT,
                       "casaflow.org/stage": safe_name(stage)[:63]})
        kwargs["labels"] = labels
        if res.pool(cfg, resource_class):
            kwargs.setdefault("pool", res.pool(cfg, resource_class))
        kwargs.setdefault("retries", 2)
        kwargs.setdefault("retry_delay", timedelta(seconds=30))
        kwargs.setdefault("retry_exponential_backoff", True)
        super().__init__(**kwargs)

    # -- resolution ------------------------------------------------------------------------
    def resolve_mode(self, context) -> str:
        mode = self.execution_mode
        if not mode or mode == "default":
            mode = (context.get("params") or {}).get("execution_mode") or "default"
        if mode == "default":
            mode = self._settings.execution_mode
        if mode not in EXECUTION_MODES:
            raise AirflowFailException(f"execution_mode {mode!r}: expected one of {EXECUTION_MODES} or 'default'")
        return mode

    def resolve_workspace(self, context) -> str:
        if self.workspace:
            return str(self.workspace)
        return workspace_for(self._settings.workspace_root, context["dag"].dag_id, context["run_id"])

    def argv(self, context) -> list[str]:
        tag = str(self.tag) if self.tag not in (None, "") else None
        return worker_argv("casa-worker", self.stage, self.resolve_workspace(context), self.stage_params, tag)

    # -- execution -------------------------------------------------------------------------
    def execute(self, context):
        mode = self.resolve_mode(context)
        argv = self.argv(context)
        self.log.info("stage %s, mode %s, workspace %s", self.stage, mode, argv[3])
        if mode == "local":
            return self._execute_local(context, argv)
        self._context_for_cleanup = context
        self.annotations = {**(self.annotations or {}), **task_annotations(context)}
        self.cmds = [argv[0]]
        self.arguments = argv[1:]
        self.env_vars = self._pod_env()
        self._apply_memory_retry(context)
        if mode == "render":
            return self._render_pod(context)
        return super().execute(context)

    def _pod_env(self) -> list:
        cpu_limit = (self.container_resources.limits or {}).get("cpu") if self.container_resources else None
        env = {RESULT_PATH_ENV: POD_RESULT_PATH, "OMP_NUM_THREADS": res.cpu_count(cpu_limit),
               "HOME": "/tmp", "MPLCONFIGDIR": "/tmp/matplotlib"}
        existing = [e for e in (self.env_vars or []) if getattr(e, "name", None) not in env]
        return existing + [k8s.V1EnvVar(name=k, value=str(v)) for k, v in env.items()]

    def _apply_memory_retry(self, context) -> None:
        ti = context.get("ti")
        ooms = res.count_oom_attempts(self.resolve_workspace(context), self.stage, self.tag)
        if ooms and self.container_resources is not None:
            self.container_resources = res.scaled_memory(self.container_resources, self._settings, ooms)
            self.log.warning("try %s after %d out-of-memory kill(s): memory now %s",
                             getattr(ti, "try_number", "?"), ooms, self.container_resources.limits)

    def _render_pod(self, context) -> dict:
        from kubernetes.client import ApiClient

        pod = self.build_pod_request_obj(context, dry_run=True)
        doc = ApiClient().sanitize_for_serialization(pod)
        ws = Path(self.resolve_workspace(context))
        try:
            import yaml

            (ws / "rendered").mkdir(parents=True, exist_ok=True)
            suffix = f".{self.tag}" if self.tag not in (None, "") else ""
            (ws / "rendered" / f"{self.task_id}{suffix}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        except OSError as exc:
            self.log.warning("could not write the rendered pod into %s: %s", ws, exc)
        return {"stage": self.stage, "status": "rendered", "mode": "render", "pod": doc}

    def _execute_local(self, context, argv: list[str]) -> dict:
        cfg = self._settings
        argv = [cfg.worker_command, *argv[1:]]
        env = dict(os.environ)
        env.pop(RESULT_PATH_ENV, None)
        # CASA's threads must not oversubscribe the cores when groups run side by side.
        env["OMP_NUM_THREADS"] = str(cfg.omp_threads)
        workspace = Path(argv[3])
        workspace.mkdir(parents=True, exist_ok=True)
        self.log.info("running: %s", " ".join(argv))
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                cwd=str(workspace), text=True, errors="replace")
        self._local_proc = proc
        last = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line:
                last = line
                if not line.startswith("{"):
                    self.log.info("%s", line)
        rc = proc.wait()
        self.log.info("casa-worker exited with %s after %.1f s", rc, time.monotonic() - t0)
        tag = str(self.tag) if self.tag not in (None, "") else None
        result = self._read_result(result_path(workspace, self.stage, tag), last)
        failure = class_from_returncode(rc)
        if failure is None:
            return result
        if failure == "resource":
            res.record_oom_attempt(str(workspace), self.stage, self.tag)
        message = (result or {}).get("message") or f"casa-worker exit code {rc}"
        self._raise_for(failure, message)

    def _read_result(self, path: Path, last_line: str) -> dict:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            try:
                return json.loads(last_line)
            except json.JSONDecodeError:
                return {}

    def _raise_for(self, failure: str, message: str):
        text = f"stage {self.stage} failed ({failure}): {message}"
        if failure == "input" or (failure == "science" and not self.retry_science):
            raise AirflowFailException(text)
        raise CasaStageFailed(text)

    def cleanup(self, pod, remote_pod):
        """Tell the failure classes apart when a pod ends (exit code, OOMKilled, deadline)."""
        failure = res.pod_failure_class(remote_pod)
        try:   # provenance: the image (and digest) the stage ran, for the delivery manifest
            from .workflow import record_image

            record_image(self.resolve_workspace(self._context_for_cleanup),
                         f"{self.task_id}{'.' + str(self.tag) if self.tag not in (None, '') else ''}", self.image, remote_pod)
        except Exception as exc:  # never let provenance bookkeeping mask the pod's outcome
            self.log.warning("image provenance not recorded: %s", exc)
        try:
            return super().cleanup(pod, remote_pod)
        except AirflowException as exc:
            if failure is None:
                raise
            if failure == "resource":
                res.record_oom_attempt(self.resolve_workspace(self._context_for_cleanup), self.stage, self.tag)
            self._raise_for(failure, str(exc).splitlines()[0][:500])

    def on_kill(self) -> None:
        proc = getattr(self, "_local_proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
        else:
            super().on_kill()
