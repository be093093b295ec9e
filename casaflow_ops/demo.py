"""The demo: simulate a small dataset, start the embedded runtime, run a workflow on it, show
progress, and say where the products and the delivery manifest went.

``vlass`` (the default): a small VLASS PIMS through vlass_se_cube. ``alma``: a tiny ALMA working
directory through alma_exportdata."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from . import runtime

WORKER = str(Path(sys.executable).with_name("casa-worker"))


def simulate(where: Path, preset: str, kind: str = "vlass") -> dict:
    truth_file = where / "input" / "truth.json"
    if truth_file.exists() and json.loads(truth_file.read_text()).get("preset") == preset:
        print(f"==> simulated {preset} dataset already in {where / 'input'}")
        return json.loads(truth_file.read_text())
    print(f"==> simulating a {preset} {kind.upper()} dataset with CASA into {where / 'input'} (a minute or two)")
    proc = subprocess.run([WORKER, f"simulate-{kind}", "--workspace", str(where), "--param", f"preset={preset}"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"simulation failed (exit {proc.returncode}); log in {where / 'logs'}")
    return json.loads(truth_file.read_text())


def progress(api: runtime.Api, dag_id: str, run_id: str, poll: float = 5.0, timeout: float = 3600) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        _, run = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        _, tis = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=200")
        tis = (tis or {}).get("task_instances", [])
        counts: dict = {}
        for ti in tis:
            counts[ti.get("state") or "none"] = counts.get(ti.get("state") or "none", 0) + 1
        running = sorted(f"{ti['task_id']}" + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else "")
                         for ti in tis if ti.get("state") == "running")
        line = f"    {run.get('state')}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + \
               (f"; running: {', '.join(running)}" if running else "")
        if line != last:
            print(line, flush=True)
            last = line
        if run.get("state") in ("success", "failed"):
            return run["state"]
        time.sleep(poll)
    raise TimeoutError(f"run {run_id} not finished after {timeout:.0f} s")


def main(preset: str = "small", port: int = 8080, with_s3: bool = False, stop: bool = False,
         workflow: str = "vlass") -> int:
    home = runtime.default_home()
    if workflow == "alma":
        preset = "tiny"            # the ALMA demo always uses the tested tiny working directory
        data = home.parent / "data" / f"demo-data-alma-{preset}"   # the runtime's allowed inputs
        truth = simulate(data, preset, "alma")
        dag_id, conf = "alma_exportdata", {"working_dir": str(data / "input" / truth["working"]),
                                           "dataset_id": f"demo-alma-{preset}"}
    else:
        data = home.parent / "data" / f"demo-data-{preset}"
        truth = simulate(data, preset)
        inp = data / "input"
        dag_id, conf = "vlass_se_cube", {
            "pims": str(inp / truth["pims"]), "reimaging_resources": str(inp / "reimaging_resources.tgz"),
            "seip_parameter_list": str(inp / "SEIP_parameter.list"),
            "ccip_parameter_list": str(inp / "CCIP_parameter.list"), "dataset_id": f"demo-{preset}"}
    rt = runtime.create(home, port=port, with_s3=with_s3)
    print(f"==> starting the embedded runtime in {home} (Airflow on {rt.url})")
    rt.up()
    api = runtime.Api(rt)
    api.wait_for_dag(dag_id)
    status, run = api.trigger(dag_id, conf)
    if status not in (200, 201):
        raise SystemExit(f"trigger failed: HTTP {status} {run}")
    run_id = run["dag_run_id"]
    print(f"==> triggered {dag_id} run {run_id}; follow it at {rt.url}/dags/{dag_id} "
          f"(login {rt.user} / {rt.password})")
    state = progress(api, dag_id, run_id)
    from operators.command import workspace_for

    ws = Path(workspace_for(str(home / "workspaces"), dag_id, run_id))
    print(f"==> run {state}")
    if workflow == "alma":
        print(f"    products (local):  {ws / 'products'}")
    else:
        print(f"    weblog:            {ws / 'weblog' / 'index.html'}")
    _, x = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/push/xcomEntries/return_value")
    if isinstance(x, dict) and isinstance(x.get("value"), dict):
        print(f"    products:          {rt.products.rstrip('/')}/{x['value']['dataset_id']}/ "
              f"({x['value']['objects']} objects)")
        print(f"    delivery manifest: {x['value']['manifest']}")
    if with_s3:
        print("    (the S3 server is moto's: it keeps objects in memory only, until `casaflow runtime down`)")
    if stop:
        rt.down()
        print("==> runtime stopped")
    else:
        print(f"==> the runtime is still up for you to explore ({rt.url}); stop it with: "
              f".venv/bin/casaflow runtime down")
    return 0 if state == "success" else 1
