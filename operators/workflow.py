"""Pieces every casaflow DAG shares: common Params, the run's workspace, fetching inputs and the
final delivery push (products, then the delivery manifest)."""

from __future__ import annotations

import json
import logging
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


def push_products(context, dataset_id: str, product_dirs: list[str], extra: list[tuple[str, str]] = ()) -> dict:
    """Push every file below the given workspace directories (flattened keys), plus ``extra``
    (workspace path, key) pairs, then the delivery manifest. Returns a small summary for XCom."""
    from airflow import __version__ as airflow_version

    from hooks.delivery import DeliveryInfo, Item
    from hooks.product_store import ProductStoreHook

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
    # The run's scalar Params, as given: an optional Param left empty (None) is not listed.
    params = {k: v for k, v in (context.get("params") or {}).items()
              if v is not None and not isinstance(v, (dict, list))}
    ti = context.get("ti")
    info = DeliveryInfo(dataset_id, context["dag"].dag_id, context["run_id"], getattr(ti, "try_number", 0),
                        params, versions)
    dest = destination(context.get("params") or {})
    report = ProductStoreHook(dest, settings().aws_conn_id).push(items, info, dataset_id)
    log.info("products of %s delivered: %d objects (%d uploaded, %d unchanged)", dataset_id, len(report.entries),
             len(report.uploaded), len(report.skipped))
    log.info("delivery manifest: %s", report.manifest_url)
    return {"dataset_id": dataset_id, "manifest": report.manifest_url, "objects": len(report.entries),
            "uploaded": len(report.uploaded), "skipped": len(report.skipped)}

