"""Campaign status: per dataset of the catalog, its latest state, tries, delivered manifest,
failure class and message, from the reports each reprocessing run pushes beside the deliveries.

    casaflow status --catalog /data/catalog.json [--destination s3://bucket/prefix] [--json]
"""

from __future__ import annotations

import json
import re
from pathlib import Path

TRY_RE = re.compile(r"__t(\d+)$")
COLUMNS = ("id", "workflow", "observed", "state", "tries", "manifest", "failure_class", "message")


def tries_of(run_id: str) -> int:
    """Reprocessing run ids end in ``__t<attempt>``: the attempt that made this run."""
    m = TRY_RE.search(run_id or "")
    return int(m.group(1)) if m else (1 if run_id else 0)


def failure_of(dag_id: str, run_id: str, workspace_root: str | None = None) -> dict:
    """The failure class and message of a workflow run's failed stage, from its result file in the
    run's workspace; {} if none is there (a failure outside any stage)."""
    from operators.command import workspace_for
    from operators.settings import settings

    ws = Path(workspace_for(workspace_root or settings().workspace_root, dag_id, run_id))
    failed = []
    for res in sorted((ws / "results").glob("*.json")) if (ws / "results").is_dir() else []:
        try:
            doc = json.loads(res.read_text())
        except (OSError, ValueError):
            continue
        if doc.get("status") == "failed":
            failed.append((doc.get("timings", {}).get("finished") or 0, doc))
    if not failed:
        return {}
    doc = max(failed, key=lambda f: f[0])[1]
    return {"failure_class": doc.get("failure_class") or "unknown", "message": f"{doc['stage']}: {doc.get('message', '')}"}


def latest_by_dataset(reports: list[dict]) -> dict[str, dict]:
    """The newest report row of each dataset."""
    out: dict[str, dict] = {}
    for rep in sorted(reports, key=lambda r: r.get("created", "")):
        for row in rep.get("datasets", []):
            out[row["id"]] = {**row, "report_run": rep.get("run_id", "")}
    return out


def status_rows(records, reports: list[dict]) -> list[dict]:
    latest = latest_by_dataset(reports)
    rows = []
    for r in records:
        row = latest.get(r.id, {"state": "not scheduled", "tries": 0})
        rows.append({"id": r.id, "workflow": r.workflow, "observed": r.observed.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "state": row.get("state", ""), "tries": row.get("tries", 0), "manifest": row.get("manifest", ""),
                     "failure_class": row.get("failure_class", ""), "message": row.get("message", "")})
    return rows


def render(rows: list[dict]) -> str:
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in COLUMNS}
    widths["message"] = min(widths["message"], 80)
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in COLUMNS)]
    for r in rows:
        lines.append("  ".join(str(r[c])[:widths[c]].ljust(widths[c]) for c in COLUMNS).rstrip())
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines.append("")
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f" ({len(rows)} datasets)")
    return "\n".join(lines)


def collect(catalog_location: str, destination: str, aws_conn_id: str = "casaflow_s3") -> list[dict]:
    from hooks.inputs import InputPolicy, read_bytes
    from hooks.product_store import ProductStoreHook

    from . import catalog

    # The operator's own command line reads any catalog it is given (no DAG run's allow-list).
    records = catalog.parse(read_bytes(catalog_location, aws_conn_id, InputPolicy(unrestricted=True)),
                            catalog_location)
    store = ProductStoreHook(destination, aws_conn_id)
    reports = []
    for url, data in store.read_all("_reports/reprocess_catalog"):
        try:
            reports.append(json.loads(data))
        except ValueError:
            continue
    return status_rows(records, reports)
