"""Cost per dataset: the worker measures each stage's wall time, CPU time and peak RSS of its own
process tree (real casa-worker subprocesses, a real child process allocating memory); the run's
totals in the weblog; `casaflow status` with the totals and `--estimate` for the rest of a campaign."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from casaflow import cost

WORKER = str(Path(sys.executable).with_name("casa-worker"))
CASAFLOW = str(Path(sys.executable).with_name("casaflow"))
MiB = 1024 * 1024


def worker(ws: Path, stage: str, *params: str, tag: str | None = None) -> dict:
    argv = [WORKER, stage, "--workspace", str(ws)]
    for p in params:
        argv += ["--param", p]
    if tag:
        argv += ["--tag", tag]
    proc = subprocess.run(argv, capture_output=True, text=True)
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    on_disk = json.loads((ws / "results" / f"{stage}{'.' + tag if tag else ''}.json").read_text())
    assert printed == on_disk
    return on_disk


def test_cpu_and_memory_of_the_worker_and_its_child_are_measured(tmp_path):
    res = worker(tmp_path, "burn", "cpu_seconds=0.4", "child_cpu_seconds=0.6", "child_memory_mb=300")
    assert res["status"] == "success", res["message"]
    c = res["cost"]
    # 0.4 s busy in the worker, 0.6 s in the child, plus the child's start-up and page touching.
    assert c["cpu_seconds"] >= 1.0
    assert c["cpu_seconds"] == pytest.approx(c["cpu_user_seconds"] + c["cpu_system_seconds"], abs=0.002)
    # One thread busy at a time: CPU time cannot exceed the elapsed time (small clock slack).
    assert c["cpu_seconds"] <= c["wall_seconds"] + 0.05
    assert c["wall_seconds"] <= res["timings"]["seconds"] + 0.05
    # The child touched 300 MiB; the worker itself never held that much.
    assert c["peak_rss_children_bytes"] >= 300 * MiB
    assert c["peak_rss_self_bytes"] < 300 * MiB
    assert c["peak_rss_bytes"] == c["peak_rss_children_bytes"]
    assert c["resource_class"] == "light"


def test_a_large_launching_process_does_not_count_as_the_stage_s_memory(tmp_path):
    """Started by a process holding 600 MiB (an Airflow task process, a pytest worker), the stage's
    own peak is still its own: Linux's ru_maxrss would carry the launcher's over exec."""
    code = ("import subprocess, sys; held = bytearray(600 << 20); held[::4096] = b'x' * len(held[::4096]); "
            "sys.exit(subprocess.run(sys.argv[1:]).returncode)")
    argv = [sys.executable, "-c", code, WORKER, "noop", "--workspace", str(tmp_path), "--param", "sleep=0.1"]
    assert subprocess.run(argv, capture_output=True).returncode == 0
    c = json.loads((tmp_path / "results" / "noop.json").read_text())["cost"]
    assert 0 < c["peak_rss_self_bytes"] < 300 * MiB, c


def test_sleeping_costs_wall_time_not_cpu(tmp_path):
    c = worker(tmp_path, "noop", "sleep=0.8")["cost"]
    assert c["wall_seconds"] >= 0.8
    assert c["cpu_seconds"] < 0.4
    assert c["peak_rss_children_bytes"] == 0          # no child process
    assert c["peak_rss_bytes"] == c["peak_rss_self_bytes"] > 0


def test_a_failed_stage_still_reports_its_cost(tmp_path):
    res = worker(tmp_path, "noop", "sleep=0.3", "fail_with=science")
    assert res["status"] == "failed" and res["failure_class"] == "science"
    assert res["cost"]["wall_seconds"] >= 0.3


def test_run_totals_and_the_weblog_cost_table(tmp_path):
    a = worker(tmp_path, "burn", "cpu_seconds=0.3", tag="a")
    b = worker(tmp_path, "burn", "child_cpu_seconds=0.3", "child_memory_mb=120", tag="b")
    n = worker(tmp_path, "noop", "sleep=0.2")
    t = cost.run_totals([a, b, n])
    cpu = a["cost"]["cpu_seconds"] + b["cost"]["cpu_seconds"] + n["cost"]["cpu_seconds"]
    assert t["stages"] == 3 and t["unmeasured"] == 0
    assert t["core_hours"] == pytest.approx(cpu / 3600, abs=1e-6)
    assert t["core_hours"] >= 0.6 / 3600
    assert t["peak_rss_by_class"] == {"light": max(a["cost"]["peak_rss_bytes"], b["cost"]["peak_rss_bytes"],
                                                   n["cost"]["peak_rss_bytes"])}
    assert t["peak_rss_by_class"]["light"] >= 120 * MiB
    # Three stages run one after the other: the run lasted at least the sum of their wall times.
    assert t["elapsed_seconds"] >= t["stage_wall_seconds"] - 0.01 >= 0.2
    assert cost.run_totals([{"stage": "old", "timings": {}}])["unmeasured"] == 1

    web = worker(tmp_path, "run-weblog", "title=cost test")
    assert web["status"] == "success", web["message"]
    page = (tmp_path / "weblog" / "index.html").read_text()
    assert "<h2>Cost</h2>" in page
    assert f"<td>{t['core_hours']:.4f}</td>" in page
    assert "peak RSS, light stages" in page and cost.human_bytes(t["peak_rss_by_class"]["light"]) in page
    assert f"<td>{a['cost']['cpu_seconds']:.1f}</td>" in page


def test_estimate_from_the_done_datasets():
    done = [{"stages": 5, "core_hours": 0.5, "elapsed_seconds": 600, "peak_rss_bytes": 2 * MiB},
            {"stages": 5, "core_hours": 1.5, "elapsed_seconds": 1200, "peak_rss_bytes": 3 * MiB}]
    e = cost.estimate(done, remaining=3, parallel=2)
    assert e["basis"] == 2 and e["mean_core_hours"] == 1.0 and e["mean_elapsed_seconds"] == 900
    assert e["core_hours"] == 3.0
    assert e["wall_hours"] == 0.5             # two rounds (2 + 1 runs) of 900 s
    assert e["peak_rss_bytes"] == 3 * MiB
    assert cost.estimate(done, remaining=3)["wall_hours"] == 0.75
    assert cost.estimate([], remaining=4)["core_hours"] is None
    with pytest.raises(ValueError, match="parallel"):
        cost.estimate(done, 1, parallel=0)


def test_status_shows_costs_and_estimates_the_rest_of_the_campaign(tmp_path):
    """A catalog of four datasets: two delivered by runs whose workspaces hold real results, one
    failed, one never scheduled; the reprocessing report (as the DAG's report task writes it with
    cost_of) in a local products destination; `casaflow status --estimate` from the command line."""
    from casaflow_ops.status import cost_of

    root, dest, inputs = tmp_path / "ws", tmp_path / "products", tmp_path / "in"
    inputs.mkdir()
    records, rows = [], []
    for k, (rid, state) in enumerate([("a", "delivered"), ("b", "delivered"), ("c", "failed"), ("d", None)]):
        (inputs / f"{rid}.txt").write_text(rid)
        records.append({"id": rid, "workflow": "casaflow_noop", "observed": f"2026-03-01T0{k}:00:00Z",
                        "inputs": {"input": str(inputs / f"{rid}.txt")}})
        if state is None:
            continue
        run_id = f"reprocess__{rid}__t1"
        ws = root / "casaflow_noop" / run_id
        worker(ws, "burn", f"cpu_seconds={0.2 * (k + 1)}")
        rows.append({"id": rid, "workflow": "casaflow_noop", "observed": records[-1]["observed"], "state": state,
                     "tries": 1, "run_id": run_id, "cost": cost_of("casaflow_noop", run_id, str(root))})
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"catalog_version": 1, "datasets": records}))
    reports = dest / "_reports" / "reprocess_catalog"
    reports.mkdir(parents=True)
    (reports / "run1.a1.json").write_text(json.dumps({"run_id": "run1", "created": "2026-03-02T00:00:00Z",
                                                      "datasets": rows}))
    env = {**os.environ, "CASAFLOW_RUNTIME_DIR": str(tmp_path / "no-runtime")}
    base = [CASAFLOW, "status", "--catalog", str(catalog), "--destination", str(dest)]
    proc = subprocess.run([*base, "--estimate", "--parallel", "2", "--json"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    by_id = {r["id"]: r for r in out["datasets"]}
    assert by_id["a"]["cost"]["core_hours"] >= 0.2 / 3600 and by_id["b"]["cost"]["core_hours"] >= 0.4 / 3600
    assert by_id["d"]["state"] == "not scheduled" and by_id["d"]["cost"] == {}
    costs = [rows[i]["cost"] for i in range(3)]
    assert out["cost"]["datasets"] == 3
    assert out["cost"]["core_hours"] == pytest.approx(sum(c["core_hours"] for c in costs), abs=1e-6)
    est = out["estimate"]["casaflow_noop"]
    mean = (costs[0]["core_hours"] + costs[1]["core_hours"]) / 2       # from the delivered ones only
    assert est["basis"] == 2 and est["remaining"] == 2
    assert est["core_hours"] == pytest.approx(2 * mean, abs=1e-6)
    assert est["wall_hours"] == pytest.approx((costs[0]["elapsed_seconds"] + costs[1]["elapsed_seconds"]) / 2 / 3600,
                                              abs=1e-6)
    table = subprocess.run([*base, "--estimate"], capture_output=True, text=True, env=env)
    assert table.returncode == 0, table.stderr
    assert "CORE_HOURS" in table.stdout and "PEAK_RSS" in table.stdout
    assert "cost of 3 runs:" in table.stdout and "peak memory per stage class: light" in table.stdout
    assert "casaflow_noop: 2 remaining: about" in table.stdout
    bad = subprocess.run([*base, "--estimate", "--parallel", "0"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--parallel" in bad.stderr
