"""The one command builder: a stage call becomes the ``casa-worker`` argv, the same in a pod and
in a local subprocess. Pure and deterministic (parameters in sorted order, values as JSON)."""

from __future__ import annotations

import json
import re

_RUN_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """A run id such as ``manual__2026-01-01T00:00:00+00:00`` as a directory/label-friendly name."""
    return _RUN_ID_UNSAFE.sub("_", text).strip("_") or "run"


def workspace_for(root: str, dag_id: str, run_id: str) -> str:
    return f"{root.rstrip('/')}/{safe_name(dag_id)}/{safe_name(run_id)}"


def worker_argv(worker: str, stage: str, workspace: str, params: dict | None, tag: str | None = None) -> list[str]:
    """A parameter whose value is None (an optional DAG Param left empty) is not passed: the stage's
    own default applies."""
    argv = [worker, stage, "--workspace", workspace]
    for key in sorted(params or {}):
        if params[key] is None:
            continue
        argv += ["--param", f"{key}={json.dumps(params[key], sort_keys=True)}"]
    if tag:
        argv += ["--tag", str(tag)]
    return argv
