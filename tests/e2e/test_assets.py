"""Data-aware scheduling on the embedded runtime: every delivery emits an asset event (dataset id and
manifest in its extra) that an ingest DAG (tests/dags/casaflow_test_ingest) is scheduled on, once
per delivery; an asset event posted through REST (POST /api/v2/assets/events, extra = the inputs)
starts a workflow run, validated like a manual trigger (casaflow_noop for the delivery; and a
vlass_se_cube run that starts with the posted inputs, which do not exist: it fails in
prepare_inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .runtime_helpers import runtime_with_test_dags, task_states, trigger, wait_for, wait_run_done

pytestmark = [pytest.mark.e2e, pytest.mark.runtime]

DAGS = ["casaflow_noop", "casaflow_test_ingest", "casaflow_noop__on_inputs", "vlass_se_cube__on_inputs",
        "vlass_se_cube"]


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    home = tmp_path_factory.mktemp("assets") / "runtime"
    with runtime_with_test_dags(home, DAGS) as (r, api):
        yield r, api


def dag_runs(api, dag_id: str) -> list[dict]:
    status, body = api.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=run_after")
    assert status == 200, body
    return body["dag_runs"]


def done_runs(api, dag_id: str, n: int) -> list[dict] | None:
    runs = dag_runs(api, dag_id)
    return runs if len(runs) >= n and all(x["state"] in ("success", "failed") for x in runs) else None


def ingest_seen(api, run_id: str) -> list[dict]:
    status, body = api.get(f"/api/v2/dags/casaflow_test_ingest/dagRuns/{run_id}/taskInstances/ingest/"
                           f"xcomEntries/return_value?deserialize=true")
    assert status == 200, body
    value = body["value"]
    return json.loads(value) if isinstance(value, str) else value


def asset_id(api, name: str) -> int:
    status, body = api.get(f"/api/v2/assets?name_pattern={name}")
    assert status == 200, body
    found = [a for a in body["assets"] if a["name"] == name]
    assert len(found) == 1, body
    return found[0]["id"]


def test_each_delivery_emits_one_event_the_ingest_dag_runs_on(rt, tmp_path):
    r, api = rt
    for k in (1, 2):                          # one after the other: one ingest run per delivery
        f = tmp_path / f"d{k}.txt"
        f.write_text(f"dataset {k}\n")
        trigger(api, "casaflow_noop", f"as-d{k}", {"input": str(f), "dataset_id": f"d{k}"})
        assert wait_run_done(api, "casaflow_noop", f"as-d{k}") == "success"
        runs = wait_for(f"ingest run {k}", lambda: done_runs(api, "casaflow_test_ingest", k), timeout=120)
        assert len(runs) == k and runs[-1]["state"] == "success", runs
        seen = ingest_seen(api, runs[-1]["dag_run_id"])
        manifest = Path(r.products) / f"d{k}" / "delivery_manifest.xml"
        assert [(s["dataset_id"], s["source_run_id"]) for s in seen] == [(f"d{k}", f"as-d{k}")]
        assert seen[0]["manifest"] in (str(manifest), manifest.as_uri())
        assert seen[0]["manifest_bytes"] == manifest.stat().st_size > 0
    # The events, as an archive would query them.
    from operators.assets import delivery_asset

    aid = asset_id(api, delivery_asset("casaflow_noop", r.products).name)
    status, body = api.get(f"/api/v2/assets/events?asset_id={aid}&order_by=timestamp")
    assert status == 200, body
    extras = [e["extra"] for e in body["asset_events"]]
    assert [(e["dataset_id"], e["run_id"], e["dag_id"], e["destination"]) for e in extras] == \
        [("d1", "as-d1", "casaflow_noop", r.products), ("d2", "as-d2", "casaflow_noop", r.products)]
    assert all(e["objects"] == 1 for e in extras)


def test_a_posted_event_starts_a_run_with_its_inputs_validated(rt, tmp_path):
    r, api = rt
    aid = asset_id(api, "casaflow.inputs.casaflow_noop")
    f = tmp_path / "posted.txt"
    f.write_text("posted\n")
    before = len(dag_runs(api, "casaflow_noop"))
    status, body = api.post("/api/v2/assets/events", {"asset_id": aid,
                                                      "extra": {"input": str(f), "dataset_id": "posted-1"}})
    assert status == 200, body
    starter = wait_for("on_inputs run", lambda: done_runs(api, "casaflow_noop__on_inputs", 1), timeout=120)
    assert starter[0]["state"] == "success", starter
    started = wait_for("the posted run", lambda: [x for x in dag_runs(api, "casaflow_noop")
                                                  if x["dag_run_id"].startswith("asset__")])
    assert len(started) == 1 and started[0]["conf"] == {"input": str(f), "dataset_id": "posted-1"}
    assert wait_run_done(api, "casaflow_noop", started[0]["dag_run_id"]) == "success"
    assert (Path(r.products) / "posted-1" / "delivery_manifest.xml").is_file()

    # Invalid inputs: refused by the workflow's Params exactly as a manual trigger would be; no run.
    status, body = api.post("/api/v2/assets/events", {"asset_id": aid, "extra": {"input": "relative/path.txt"}})
    assert status == 200, body
    runs = wait_for("second on_inputs run", lambda: done_runs(api, "casaflow_noop__on_inputs", 2), timeout=120)
    assert runs[-1]["state"] == "failed", runs
    assert task_states(api, "casaflow_noop__on_inputs", runs[-1]["dag_run_id"])["trigger"] == "failed"
    assert len(dag_runs(api, "casaflow_noop")) == before + 1
    manual = api.post("/api/v2/dags/casaflow_noop/dagRuns", {"logical_date": None, "conf": {"input": "relative/path.txt"}})
    assert manual[0] == 400 and "input" in json.dumps(manual[1])


def test_posted_se_continuum_resources_start_a_vlass_run(rt):
    r, api = rt
    inputs = {"pims": "/nonexistent/VLASS2.2.sb1.eb1.J1_split.ms",
              "reimaging_resources": "/nonexistent/reimaging_resources.tgz",
              "seip_parameter_list": "/nonexistent/SEIP_parameter.list",
              "ccip_parameter_list": "/nonexistent/CCIP_parameter.list", "dataset_id": "posted-vlass"}
    status, body = api.post("/api/v2/assets/events", {"asset_id": asset_id(api, "casaflow.inputs.vlass_se_cube"),
                                                      "extra": inputs})
    assert status == 200, body
    starter = wait_for("vlass on_inputs run", lambda: done_runs(api, "vlass_se_cube__on_inputs", 1), timeout=120)
    assert starter[0]["state"] == "success", starter
    runs = wait_for("the vlass run", lambda: dag_runs(api, "vlass_se_cube"))
    assert len(runs) == 1 and runs[0]["dag_run_id"].startswith("asset__") and runs[0]["conf"] == inputs
    # It ran with those inputs: prepare_inputs names the missing PIMS.
    run_id = runs[0]["dag_run_id"]
    wait_for("prepare_inputs failed", lambda: task_states(api, "vlass_se_cube", run_id).get("prepare_inputs") == "failed")
    logs = list((Path(r.home) / "airflow" / "logs" / "dag_id=vlass_se_cube").glob("run_id=*/task_id=prepare_inputs/*.log"))
    assert logs and "/nonexistent/VLASS2.2.sb1.eb1.J1_split.ms" in logs[0].read_text()
