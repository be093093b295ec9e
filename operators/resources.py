"""Pod shape for casa-worker pods: resources per stage class, security, volumes, OOM retries."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from kubernetes.client import models as k8s

from casaflow.errors import class_from_returncode

from .settings import RESOURCE_CLASSES, Settings

SCRATCH_MOUNT = "/tmp"
BASE_CONTAINER = "base"


def requirements(cfg: Settings, resource_class: str, override: dict | None = None) -> k8s.V1ResourceRequirements:
    if resource_class not in RESOURCE_CLASSES:
        raise ValueError(f"resource_class {resource_class!r}: expected one of {RESOURCE_CLASSES}")
    spec = json.loads(json.dumps(cfg.resources[resource_class]))
    for part in ("requests", "limits"):
        spec.setdefault(part, {}).update((override or {}).get(part, {}))
    return k8s.V1ResourceRequirements(requests=spec["requests"], limits=spec["limits"])


def pod_security_context(cfg: Settings) -> k8s.V1PodSecurityContext:
    """Non-root; the workspace group (shared with Airflow's task pods) as fsGroup and supplemental group,
    so files either side writes (umask 0002, images' entrypoints) stay writable by the other."""
    return k8s.V1PodSecurityContext(run_as_non_root=True, run_as_user=cfg.run_as_user,
                                    run_as_group=cfg.run_as_user, fs_group=cfg.workspace_group,
                                    supplemental_groups=[cfg.workspace_group],
                                    fs_group_change_policy="OnRootMismatch",
                                    seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"))


def container_security_context() -> k8s.V1SecurityContext:
    return k8s.V1SecurityContext(run_as_non_root=True, read_only_root_filesystem=True,
                                 allow_privilege_escalation=False, privileged=False,
                                 capabilities=k8s.V1Capabilities(drop=["ALL"]),
                                 seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"))


def pool(cfg: Settings, resource_class: str) -> str | None:
    """The Airflow pool of a resource class (caps how many such pods run at once), None: the default pool."""
    return cfg.pools.get(resource_class) or None


def volumes(cfg: Settings) -> list:
    return [
        k8s.V1Volume(name="workspace", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
            claim_name=cfg.workspace_claim)),
        # Writable scratch on a read-only root filesystem (CASA cache, matplotlib, temp files).
        k8s.V1Volume(name="scratch", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="10Gi")),
    ]


def volume_mounts(cfg: Settings) -> list:
    # Same path as the local mode, so the argv is identical in both.
    return [k8s.V1VolumeMount(name="workspace", mount_path=cfg.workspace_root),
            k8s.V1VolumeMount(name="scratch", mount_path=SCRATCH_MOUNT)]


def cpu_count(limit) -> int:
    """Threads for CASA (OMP_NUM_THREADS) from a cpu limit such as '4' or '1500m'."""
    if not limit:
        return 1
    text = str(limit)
    value = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    return max(1, math.floor(value))


_UNITS = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9,
          "T": 10 ** 12, "": 1}


def memory_bytes(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?)?", str(text))
    if not m:
        raise ValueError(f"memory quantity {text!r} not understood")
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


def memory_text(n: int) -> str:
    return f"{math.ceil(n / 2 ** 20)}Mi"


def scaled_memory(req: k8s.V1ResourceRequirements, cfg: Settings, ooms: int) -> k8s.V1ResourceRequirements:
    """Memory request and limit times ``memory_retry_factor ** ooms``, capped."""
    cap = memory_bytes(cfg.memory_retry_cap)
    factor = cfg.memory_retry_factor ** ooms
    out = {}
    for part in ("requests", "limits"):
        values = dict(getattr(req, part) or {})
        if "memory" in values:
            values["memory"] = memory_text(min(cap, int(memory_bytes(values["memory"]) * factor)))
        out[part] = values
    return k8s.V1ResourceRequirements(requests=out["requests"], limits=out["limits"])


def _oom_marker(workspace: str, stage: str, tag) -> Path:
    suffix = f".{tag}" if tag not in (None, "") else ""
    return Path(workspace) / "results" / f"{stage}{suffix}.oom-kills"


def record_oom_attempt(workspace: str, stage: str, tag) -> None:
    marker = _oom_marker(workspace, stage, tag)
    marker.parent.mkdir(parents=True, exist_ok=True)
    with open(marker, "a") as fh:
        fh.write("oom\n")


def count_oom_attempts(workspace: str, stage: str, tag) -> int:
    try:
        return len(_oom_marker(workspace, stage, tag).read_text().split())
    except (FileNotFoundError, OSError):
        return 0


def pod_failure_class(remote_pod) -> str | None:
    """Failure class of a finished pod: None when the worker container succeeded."""
    if remote_pod is None or remote_pod.status is None:
        return "transient"
    status = remote_pod.status
    if getattr(status, "reason", None) == "DeadlineExceeded":
        return "transient"
    for cs in status.container_statuses or []:
        if cs.name != BASE_CONTAINER:
            continue
        term = cs.state.terminated if cs.state else None
        if term is None:
            return "transient"  # never ran to an end (eviction, node loss)
        if term.reason == "OOMKilled":
            return "resource"
        return class_from_returncode(term.exit_code)
    return "transient" if status.phase == "Failed" else None
