"""The one command builder: a stage call becomes the ``casa-worker`` argv, the same in a pod and
in a local subprocess. Pure and deterministic (parameters in sorted order, values as JSON)."""

from __future__ import annotations

import hashlib
import json
import re

_RUN_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_KEPT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_HASHED = re.compile(r".*-[0-9a-f]{16}")
_HASH_LEN = 16


def safe_name(text: str) -> str:
    """A dag or run id (``manual__2026-01-01T00:00:00+00:00``) as a directory/label-friendly name.

    Injective: distinct ids give distinct names. An id that is already a plain name (letters,
    digits, ``._-``, not starting with ``.`` or ``-``, at most 100 characters) is kept as it is;
    any other (``.``, ``..``, ``a/b``, ``a:b``, ...) becomes its sanitised text plus ``-`` and 16 hex
    digits of its SHA-256, and so does a plain name that happens to end like such a suffix, so the
    two kinds of name can never meet.
    """
    text = str(text)
    if _KEPT.fullmatch(text) and not _HASHED.fullmatch(text):
        return text
    clean = _RUN_ID_UNSAFE.sub("_", text).strip("._-")[:80] or "run"
    return f"{clean}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:_HASH_LEN]}"


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
