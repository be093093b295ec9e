"""Pieces every casaflow DAG shares: common Params, the run's workspace, fetching inputs and the
final delivery push (products, then the delivery manifest)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from airflow.sdk import Param

from .command import workspace_for
from .params import DELIVERY, EXECUTION, INTERNAL, choice, optional
from .settings import settings

log = logging.getLogger("casaflow.workflow")

DATASET_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"
# An input location: an absolute local path, file:///..., or s3://bucket/key.
LOCATION = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+|/.+|file:///.+)$"
# A products destination: s3://bucket[/prefix], an absolute directory or file:///...
DESTINATION = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|/.*|file:///.*)$"


def workflow_dag_args() -> dict:
    """What every workflow DAG shares: triggered (no schedule), typed conf kept native in templates."""
    import pendulum

    return {"schedule": None, "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"), "catchup": False,
            "render_template_as_native_obj": True}


EXECUTION_MODES = {"default": "Deployment default (CASAFLOW_EXECUTION_MODE)",
                   "local": "Local: casa-worker subprocess on the Airflow worker",
                   "kubernetes": "Kubernetes: one pod per stage",
                   "render": "Render only: build the pods, run nothing"}


def execution_mode_param(description: str) -> Param:
    return choice("Execution mode", description, EXECUTION_MODES, default="default", section=EXECUTION)


def products_destination_param(description: str) -> Param:
    return optional("Products destination", description, pattern=DESTINATION, section=DELIVERY,
                    examples=["s3://archive-bucket/deliveries", "/data/deliveries"])


def common_params() -> dict:
    """The Params every workflow DAG has (delivery naming, destination, execution, fingerprint)."""
    return {
        "dataset_id": optional("Dataset id", "Names the delivery (its prefix in the products destination). "
                                             "Empty: derived from the input's name.",
                               pattern=DATASET_ID_PATTERN, section=DELIVERY),
        "products_destination": products_destination_param(
            "s3://bucket/prefix (through the Airflow connection casaflow_s3) or an absolute local directory. "
            "Empty: the deployment's default (CASAFLOW_PRODUCTS_DESTINATION)."),
        "execution_mode": execution_mode_param(
            "Where the CASA stages run: 'default' follows the deployment setting; 'local' runs casa-worker as "
            "a subprocess; 'kubernetes' runs each stage in a pod; 'render' only builds the pods."),
        "request_fingerprint": optional("Request fingerprint",
                                        "Set by the reprocessing DAG: identifies the catalog record (inputs, "
                                        "params, software wanted) a delivery was made from. Leave empty.",
                                        pattern=r"^[0-9a-f]{16}$", section=INTERNAL),
    }


def workspace(context) -> Path:
    return Path(workspace_for(settings().workspace_root, context["dag"].dag_id, context["run_id"]))


def destination(params: dict) -> str:
    return params.get("products_destination") or settings().products_destination


def fetch_inputs(context, locations: dict[str, str]) -> dict[str, str]:
    """Bring each named input into ``<workspace>/input``; returns workspace-relative paths.
    An input error (a location the deployment does not allow, a missing file, a hostile archive)
    fails the task at once, never retried; a transient one (disk full, network) is retried."""
    from airflow.sdk.exceptions import AirflowFailException

    from casaflow.errors import InputError
    from hooks.inputs import fetch

    ws = workspace(context)
    out = {}
    for name, location in locations.items():
        try:
            path = fetch(location, ws / "input", settings().aws_conn_id)
        except InputError as exc:
            raise AirflowFailException(f"input {name!r}: {exc}") from None
        out[name] = str(path.relative_to(ws))
        log.info("input %s: %s -> %s", name, location, path)
    return out


def derived_dataset_id(ous: str = "", ebs=()) -> str:
    """A dataset id from the data: the OUS uid (filesystem form, e.g. ``uid___A001_X3d5e_X12``);
    without one, the execution blocks: one EB's uid, or the first EB's uid plus a digest of all of
    them (so different EB sets never share a prefix). '' when the data names neither."""
    if ous and ous != "unknown":
        return ous
    names = sorted({re.sub(r"\.ms$", "", Path(str(e)).name) for e in ebs if str(e)})
    if not names:
        return ""
    if len(names) == 1:
        return names[0]
    return f"{names[0]}+{len(names) - 1}-{hashlib.sha256(','.join(names).encode()).hexdigest()[:8]}"


def qa2_dataset_id(project_code: str, package_result: dict) -> str:
    """QA2 packages: ``<project>.<member OUS uid>``, or ``<project>.<EB-derived id>`` for a
    manual reduction without OUS uids, so the SBs of one project never share a prefix."""
    outputs = (package_result or {}).get("outputs", package_result or {})
    member = Path(str(outputs.get("member", ""))).name
    ous = member.removeprefix("member.") if member.startswith("member.") else ""
    derived = derived_dataset_id(ous, outputs.get("executions", ()))
    return f"{project_code}.{derived}" if derived else ""


def image_provenance(ws: Path, mode: str) -> dict:
    """In kubernetes mode: the worker image reference and, where a pod's status gave one, its
    digest (recorded by CasaStageOperator.cleanup into ``provenance/images/``)."""
    if mode != "kubernetes":
        return {}
    seen = [json.loads(f.read_text()) for f in sorted((ws / "provenance" / "images").glob("*.json"))]
    refs = sorted({x.get("reference", "") for x in seen if x.get("reference")}) or [settings().image]
    digests = sorted({x.get("digest", "") for x in seen if x.get("digest")})
    return {"reference": ",".join(refs), "digest": ",".join(digests)}


def record_image(workspace: str | Path, task_key: str, reference: str, remote_pod) -> None:
    """Called when a stage's pod ends: note which image (and digest) it ran."""
    image_id = ""
    for cs in (getattr(getattr(remote_pod, "status", None), "container_statuses", None) or []):
        if getattr(cs, "name", "") == "base":
            image_id = getattr(cs, "image_id", "") or ""
    digest = image_id[image_id.index("sha256:"):] if "sha256:" in image_id else ""
    out = Path(workspace) / "provenance" / "images"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{task_key}.json").write_text(json.dumps({"reference": reference, "digest": digest,
                                                      "image_id": image_id}, sort_keys=True))


def push_products(context, dataset_id: str, product_dirs: list[str], extra: list[tuple[str, str]] = ()) -> dict:
    """Push every file below the given workspace directories (flattened keys), plus ``extra``
    (workspace path, key) pairs, then the delivery manifest. Returns a small summary for XCom.

    The manifest records every Param of the run (lists and dicts as JSON), the software versions
    the stages reported and, in kubernetes mode, the worker image and its digest."""
    from airflow import __version__ as airflow_version
    from airflow.sdk.exceptions import AirflowFailException

    from hooks.delivery import DeliveryInfo, Item
    from hooks.product_store import ProductStoreHook

    if not dataset_id or dataset_id == "unknown" or not re.fullmatch(DATASET_ID_PATTERN, dataset_id):
        raise AirflowFailException(
            f"dataset id {dataset_id!r}: the data named no OUS, EB or SB to derive one from (or it is not of the "
            f"form {DATASET_ID_PATTERN}); set the Param dataset_id. Nothing was delivered.")
    ws = workspace(context)
    # Each stage's result names the products it made: the manifest's producing stage comes from there.
    produced, versions = {}, {"airflow": airflow_version}
    for res_file in sorted((ws / "results").glob("*.json")):
        res = json.loads(res_file.read_text())
        versions.update(res.get("versions", {}))
        for product in res.get("products", []):
            produced[product["path"]] = (res["stage"], product.get("role", ""))
    items = []
    for rel in product_dirs:
        base = ws / rel
        for path in sorted(p for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")):
            stage, role = produced.get(str(path.relative_to(ws)), ("", ""))
            items.append(Item(path, str(path.relative_to(base)), stage, role))
    for rel, key in extra:
        stage, role = produced.get(rel, ("", ""))
        items.append(Item(ws / rel, key, stage, role))
    params = dict(context.get("params") or {})
    mode = params.get("execution_mode") or "default"
    if mode == "default":
        mode = settings().execution_mode
    ti = context.get("ti")
    info = DeliveryInfo(dataset_id, context["dag"].dag_id, context["run_id"], getattr(ti, "try_number", 0),
                        params, versions, image_provenance(ws, mode))
    dest = destination(params)
    report = ProductStoreHook(dest, settings().aws_conn_id).push(items, info, dataset_id)
    log.info("products of %s delivered: %d objects (%d uploaded, %d unchanged, %d stale removed)", dataset_id,
             len(report.entries), len(report.uploaded), len(report.skipped), len(report.removed))
    log.info("delivery manifest: %s", report.manifest_url)
    return {"dataset_id": dataset_id, "manifest": report.manifest_url, "objects": len(report.entries),
            "uploaded": len(report.uploaded), "skipped": len(report.skipped), "removed": len(report.removed)}
