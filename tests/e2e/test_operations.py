"""Operations on the embedded runtime (real scheduler, api-server, dag-processor and triggerer, not
dag.test()): a catalog over three days reprocessed by `airflow backfill create`, the default
re-run that redoes nothing, a forced failure re-run for failures only, the status command, and
REST triggers with valid and invalid conf. The workflow is casaflow_noop (the worker contract,
operator and push without CASA), so the test measures orchestration, not imaging."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import embedded_runtime

pytestmark = [pytest.mark.e2e, pytest.mark.runtime]

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]
CASAFLOW = str(Path(sys.executable).with_name("casaflow"))
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    with embedded_runtime(tmp_path_factory.mktemp("ops") / "runtime", ("casaflow_noop", "reprocess_catalog")) as r_api:
        yield r_api


def write_catalog(path: Path, inputs: Path, fail_d2b: bool) -> None:
    rows = []
    for day, ids in zip(DAYS, (["d1-a", "d1-b"], ["d2-a", "d2-b"], ["d3-a", "d3-b", "d3-c"])):
        for k, rid in enumerate(ids):
            f = inputs / f"{rid}.txt"
            f.write_text(f"dataset {rid}\n")
            rec = {"id": rid, "workflow": "casaflow_noop", "observed": f"{day}T0{6 + k}:00:00Z",
                   "inputs": {"input": str(f)}, "software_version": ""}
            if rid == "d2-b" and fail_d2b:
                rec["params"] = {"fail_with": "input"}
            if rid == "d3-c":
                rec["software_version"] = "9.9.9"       # not the deployed version: skipped
            rows.append(rec)
    path.write_text(json.dumps({"catalog_version": 1, "datasets": rows}))


def backfill(r, catalog: Path, *extra) -> subprocess.CompletedProcess:
    """`airflow backfill create` over the three days, once the previous backfill has completed
    (Airflow allows one running backfill per DAG)."""
    from casaflow_ops.runtime import Api

    api = Api(r)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        _, body = api.get("/api/v2/backfills?dag_id=reprocess_catalog")
        if all(b.get("completed_at") for b in body.get("backfills", [])):
            break
        time.sleep(2)
    argv = [AIRFLOW, "backfill", "create", "--dag-id", "reprocess_catalog", "--from-date", DAYS[0],
            "--to-date", DAYS[-1], "--dag-run-conf", json.dumps({"catalog": str(catalog)}), *extra]
    # No retry: the embedded runtime's SQLite settings make the CLI wait for the scheduler's
    # writes (casaflow_ops/sqlite_args.py), as a user running this command relies on.
    return subprocess.run(argv, env=r.env(), capture_output=True, text=True)


def runs(api, dag_id: str) -> list[dict]:
    """The DAG's runs; for reprocess_catalog only the backfill ones (unpausing it also schedules
    the latest interval, which has no catalog configured here and fails)."""
    status, body = api.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=run_after")
    assert status == 200, body
    return [r for r in body["dag_runs"] if dag_id != "reprocess_catalog" or r["run_type"] == "backfill"]


def wait_until_done(api, dag_id: str, expected: int, timeout: float = 420.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rs = runs(api, dag_id)
        if len(rs) >= expected and all(x["state"] in ("success", "failed") for x in rs):
            return rs
        time.sleep(3)
    raise TimeoutError(f"{dag_id}: {[(x['dag_run_id'], x['state']) for x in runs(api, dag_id)]}")


def noop_runs_per_dataset(api) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in runs(api, "casaflow_noop"):
        if x["dag_run_id"].startswith("reprocess__"):
            rid = x["dag_run_id"].split("__")[1]
            out[rid] = out.get(rid, 0) + 1
    return out


def status_rows(r, catalog: Path) -> dict[str, dict]:
    proc = subprocess.run([CASAFLOW, "status", "--catalog", str(catalog), "--json"], capture_output=True, text=True,
                          env={**r.env(), "CASAFLOW_RUNTIME_DIR": str(r.home)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = subprocess.run([CASAFLOW, "status", "--catalog", str(catalog)], capture_output=True, text=True,
                           env={**r.env(), "CASAFLOW_RUNTIME_DIR": str(r.home)}).stdout
    assert "STATE" in table and "datasets)" in table
    return {row["id"]: row for row in json.loads(proc.stdout)}


@pytest.fixture(scope="module")
def campaign(rt, tmp_path_factory):
    r, api = rt
    work = tmp_path_factory.mktemp("campaign")
    (work / "inputs").mkdir()
    catalog = work / "catalog.json"
    write_catalog(catalog, work / "inputs", fail_d2b=True)
    proc = backfill(r, catalog)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    first = wait_until_done(api, "reprocess_catalog", expected=3)
    return {"r": r, "api": api, "catalog": catalog, "work": work, "first": first,
            "status_after_first": status_rows(r, catalog), "noop_after_first": noop_runs_per_dataset(api)}


def delivered(r, dataset: str) -> bool:
    return (Path(r.products) / dataset / "delivery_manifest.xml").is_file()


def test_backfill_delivers_one_per_dataset_and_fails_the_failed_day(campaign):
    by_day = {x["logical_date"][:10]: x["state"] for x in campaign["first"]}
    assert by_day == {DAYS[0]: "success", DAYS[1]: "failed", DAYS[2]: "success"}
    assert campaign["noop_after_first"] == {"d1-a": 1, "d1-b": 1, "d2-a": 1, "d2-b": 1, "d3-a": 1, "d3-b": 1}
    r = campaign["r"]
    assert [d for d in ("d1-a", "d1-b", "d2-a", "d2-b", "d3-a", "d3-b", "d3-c") if delivered(r, d)] == \
        ["d1-a", "d1-b", "d2-a", "d3-a", "d3-b"]


def test_status_lists_succeeded_failed_and_skipped(campaign):
    rows = campaign["status_after_first"]
    for d in ("d1-a", "d1-b", "d2-a", "d3-a", "d3-b"):
        assert rows[d]["state"] == "delivered" and rows[d]["tries"] == 1, rows[d]
        assert rows[d]["manifest"].endswith(f"{d}/delivery_manifest.xml")
    assert rows["d2-b"]["state"] == "failed" and rows["d2-b"]["failure_class"] == "input"
    assert "failing on purpose" in rows["d2-b"]["message"] and rows["d2-b"]["manifest"] == ""
    assert rows["d3-c"]["state"] == "skipped" and "9.9.9 wanted" in rows["d3-c"]["message"]


def test_backfill_again_redoes_nothing(campaign):
    r, api = campaign["r"], campaign["api"]
    backfill(r, campaign["catalog"])            # default reprocess behaviour: none
    time.sleep(20)
    assert len(runs(api, "reprocess_catalog")) == 3
    assert noop_runs_per_dataset(api) == campaign["noop_after_first"]


def test_rerun_for_failures_redoes_only_the_failed_dataset(campaign):
    r, api = campaign["r"], campaign["api"]
    write_catalog(campaign["catalog"], campaign["work"] / "inputs", fail_d2b=False)    # the fix
    proc = backfill(r, campaign["catalog"], "--reprocess-behavior", "failed")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        day2 = [x for x in runs(api, "reprocess_catalog") if x["logical_date"].startswith(DAYS[1])]
        if day2 and day2[-1]["state"] == "success":
            break
        time.sleep(3)
    assert day2[-1]["state"] == "success", day2
    counts = noop_runs_per_dataset(api)
    assert counts == {**campaign["noop_after_first"], "d2-b": 2}
    assert delivered(r, "d2-b")
    rows = status_rows(r, campaign["catalog"])
    assert rows["d2-b"]["state"] == "delivered" and rows["d2-b"]["tries"] == 2
    assert rows["d2-a"]["state"] == "skipped" and rows["d2-a"]["manifest"].endswith("d2-a/delivery_manifest.xml")
    assert rows["d1-a"]["state"] == "delivered"


def test_rest_trigger_with_conf_and_invalid_conf_rejected(rt, tmp_path):
    r, api = rt
    f = tmp_path / "rest.txt"
    f.write_text("rest\n")
    before = len(runs(api, "casaflow_noop"))
    status, body = api.post("/api/v2/dags/casaflow_noop/dagRuns",
                            {"logical_date": None, "conf": {"input": "relative/not/allowed.txt"}})
    assert status == 400, body
    status, body = api.post("/api/v2/dags/casaflow_noop/dagRuns",
                            {"logical_date": None, "conf": {"input": str(f), "sleep": -1}})
    assert status == 400, body
    assert len(runs(api, "casaflow_noop")) == before
    status, body = api.post("/api/v2/dags/casaflow_noop/dagRuns",
                            {"logical_date": None, "conf": {"input": str(f), "dataset_id": "rest-ok"}})
    assert status == 200, body
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        _, run = api.get(f"/api/v2/dags/casaflow_noop/dagRuns/{body['dag_run_id']}")
        if run["state"] in ("success", "failed"):
            break
        time.sleep(2)
    assert run["state"] == "success"
    assert delivered(r, "rest-ok")
