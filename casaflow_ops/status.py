"""Campaign status: per dataset of the catalog, its latest state, tries, delivered manifest,
failure class and message, and what its run cost (core-hours, elapsed time, peak memory per stage
class), from the reports each reprocessing run pushes beside the deliveries.

    casaflow status --catalog /data/catalog.json [--destination s3://bucket/prefix] [--json]
    casaflow status --catalog ... --estimate [--parallel N]   # what the remaining datasets will cost
"""

from __future__ import annotations

import json
import re
from pathlib import Path

TRY_RE = re.compile(r"__t(\d+)$")
COLUMNS = ("id", "workflow", "observed", "state", "tries", "core_hours", "peak_rss", "manifest", "failure_class",
           "message")
DONE_STATES = ("delivered", "skipped")


def tries_of(run_id: str) -> int:
    """Reprocessing run ids end in ``__t<attempt>``: the attempt that made this run."""
    m = TRY_RE.search(run_id or "")
    return int(m.group(1)) if m else (1 if run_id else 0)


def results_of(dag_id: str, run_id: str, workspace_root: str | None = None) -> list[dict]:
    """Every stage result (``results/*.json``) in a workflow run's workspace; [] when it is gone."""
    from operators.command import workspace_for
    from operators.settings import settings

    ws = Path(workspace_for(workspace_root or settings().workspace_root, dag_id, run_id))
    out = []
    for res in sorted((ws / "results").glob("*.json")) if (ws / "results").is_dir() else []:
        try:
            out.append(json.loads(res.read_text()))
        except (OSError, ValueError):
            continue
    return out


def cost_of(dag_id: str, run_id: str, workspace_root: str | None = None) -> dict:
    """The run's cost totals (casaflow.cost.run_totals) from its stage results; {} when none."""
    from casaflow.cost import run_totals

    results = results_of(dag_id, run_id, workspace_root)
    return run_totals(results) if results else {}


def failure_of(dag_id: str, run_id: str, workspace_root: str | None = None) -> dict:
    """The failure class and message of a workflow run's failed stage, from its result file in the
    run's workspace; {} if none is there (a failure outside any stage)."""
    failed = [((doc.get("timings") or {}).get("finished") or 0, doc)
              for doc in results_of(dag_id, run_id, workspace_root) if doc.get("status") == "failed"]
    if not failed:
        return {}
    doc = max(failed, key=lambda f: f[0])[1]
    return {"failure_class": doc.get("failure_class") or "unknown", "message": f"{doc['stage']}: {doc.get('message', '')}"}


def latest_by_dataset(reports: list[dict]) -> dict[str, dict]:
    """The newest report row of each dataset. A row without a cost (a skip: nothing ran) keeps the
    cost of the dataset's latest run that has one."""
    out: dict[str, dict] = {}
    for rep in sorted(reports, key=lambda r: r.get("created", "")):
        for row in rep.get("datasets", []):
            cost = row.get("cost") or (out.get(row["id"]) or {}).get("cost") or {}
            out[row["id"]] = {**row, "cost": cost, "report_run": rep.get("run_id", "")}
    return out


def status_rows(records, reports: list[dict]) -> list[dict]:
    latest = latest_by_dataset(reports)
    rows = []
    for r in records:
        row = latest.get(r.id, {"state": "not scheduled", "tries": 0})
        rows.append({"id": r.id, "workflow": r.workflow, "observed": r.observed.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "state": row.get("state", ""), "tries": row.get("tries", 0), "manifest": row.get("manifest", ""),
                     "failure_class": row.get("failure_class", ""), "message": row.get("message", ""),
                     "cost": row.get("cost") or {}})
    return rows


def _cells(row: dict) -> dict:
    from casaflow.cost import human_bytes

    c = row.get("cost") or {}
    return {**row, "core_hours": f"{c['core_hours']:.4f}" if c.get("stages") else "",
            "peak_rss": human_bytes(c["peak_rss_bytes"]) if c.get("stages") else ""}


def cost_summary(rows: list[dict]) -> dict:
    """Totals over the datasets whose runs have a cost: core-hours, elapsed hours, peak memory per
    stage class."""
    measured = [r["cost"] for r in rows if (r.get("cost") or {}).get("stages")]
    peaks: dict[str, int] = {}
    for c in measured:
        for cls, v in c.get("peak_rss_by_class", {}).items():
            peaks[cls] = max(peaks.get(cls, 0), v)
    return {"datasets": len(measured), "core_hours": round(sum(c["core_hours"] for c in measured), 6),
            "elapsed_hours": round(sum(c["elapsed_seconds"] for c in measured) / 3600, 6), "peak_rss_by_class": peaks}


def campaign_estimate(rows: list[dict], parallel: int = 1) -> dict[str, dict]:
    """Per workflow: core-hours and wall time of the datasets not yet done (not delivered or
    skipped), from the costs of the delivered ones (casaflow.cost.estimate)."""
    from casaflow.cost import estimate

    out = {}
    for wf in sorted({r["workflow"] for r in rows}):
        mine = [r for r in rows if r["workflow"] == wf]
        done = [r["cost"] for r in mine if r["state"] == "delivered" and (r.get("cost") or {}).get("stages")]
        remaining = sum(1 for r in mine if r["state"] not in DONE_STATES)
        out[wf] = estimate(done, remaining, parallel)
    return out


def render_estimate(est: dict[str, dict]) -> str:
    lines = []
    for wf, e in est.items():
        if e["remaining"] == 0:
            lines.append(f"{wf}: nothing remaining")
        elif not e["basis"]:
            lines.append(f"{wf}: {e['remaining']} remaining; no delivered dataset with a cost record to estimate from")
        else:
            lines.append(f"{wf}: {e['remaining']} remaining: about {e['core_hours']:.3f} core-hours and "
                         f"{e['wall_hours']:.3f} h wall time at {e['parallel']} run(s) at once "
                         f"(from {e['basis']} delivered: {e['mean_core_hours']:.4f} core-hours and "
                         f"{e['mean_elapsed_seconds']:.0f} s per dataset)")
    return "\n".join(lines)


def render(rows: list[dict]) -> str:
    from casaflow.cost import human_bytes

    rows = [_cells(r) for r in rows]
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
    total = cost_summary(rows)
    if total["datasets"]:
        peaks = ", ".join(f"{cls} {human_bytes(v)}" for cls, v in sorted(total["peak_rss_by_class"].items()))
        lines.append(f"cost of {total['datasets']} runs: {total['core_hours']:.4f} core-hours, "
                     f"{total['elapsed_hours']:.3f} h elapsed; peak memory per stage class: {peaks}")
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
