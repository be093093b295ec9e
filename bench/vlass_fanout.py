"""Benchmark: the VLASS imaging fan-out on the embedded runtime vs. a plain serial loop.

    .venv/bin/python bench/vlass_fanout.py [--preset small] [--out bench/results/vlass_fanout.json]

1. Simulate the preset (>= 4 imaged groups), start the embedded runtime (real scheduler, LocalExecutor
   with 2 slots, one OpenMP thread per CASA task) and run ``vlass_se_cube``.
2. Imaging phase of the DAG = first ``plane.makeimages`` start to last ``plane.makecutoutimages`` end.
3. Serial baselines: the same four casa-worker calls per group, one after another, in the same
   workspace: (a) CASA with its default threads (it may use both cores): ``ratio``; (b) one OpenMP
   thread, exactly as the DAG's tasks run them: ``ratio_same_calls_one_thread``.
4. Scheduling overhead per task = its start minus the end of its upstream task in the same group
   (the time Airflow took to notice and launch it, when a slot was free).

Targets (issue: VLASS-SE-CUBE): ratio <= 0.55, median overhead <= 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHAIN = ("makeimages", "pbcor", "makermsimages", "makecutoutimages")


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def launch_latencies(tis: list[dict], slots: int) -> list[float]:
    """For each plane task after the first in its chain: how long it took to start once it could.

    It could start at the later of (a) its upstream's end and (b) the last moment before its start
    at which a slot became free (the latest end of any task, if fewer than ``slots`` others were
    still running at the task's start)."""
    spans = [(_ts(t["start_date"]), _ts(t["end_date"]), t) for t in tis if t.get("start_date") and t.get("end_date")]
    by_key = {(t["task_id"], t["map_index"]): (s, e) for s, e, t in spans}
    out = []
    for s, e, t in spans:
        if not t["task_id"].startswith("plane.") or t["task_id"] == "plane.makeimages":
            continue
        step = CHAIN.index(t["task_id"].split(".", 1)[1])
        up_end = by_key[(f"plane.{CHAIN[step - 1]}", t["map_index"])][1]
        others_running = [1 for s2, e2, t2 in spans if t2 is not t and s2 < s < e2]
        ends_before = [e2 for s2, e2, t2 in spans if t2 is not t and e2 <= s]
        slot_free = max(ends_before) if len(others_running) < slots and ends_before else s
        out.append(s - max(up_end, min(slot_free, s)))
    return out


def main() -> int:
    from casaflow_ops import demo, runtime
    from operators.command import workspace_for

    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small")
    ap.add_argument("--port", type=int, default=8097)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "vlass_fanout.json"))
    args = ap.parse_args()
    home = REPO / ".cache" / "bench-fanout" / "runtime"
    data = home.parent / f"data-{args.preset}"
    truth = demo.simulate(data, args.preset)
    os.environ["CASAFLOW_ALLOWED_INPUTS"] = str(data)      # the simulated inputs
    rt = runtime.create(home, port=args.port)
    rt.up()
    try:
        api = runtime.Api(rt)
        api.wait_for_dag("vlass_se_cube")
        inp = data / "input"
        status, run = api.trigger("vlass_se_cube", {
            "pims": str(inp / truth["pims"]), "reimaging_resources": str(inp / "reimaging_resources.tgz"),
            "seip_parameter_list": str(inp / "SEIP_parameter.list"),
            "ccip_parameter_list": str(inp / "CCIP_parameter.list"), "dataset_id": "bench-fanout"})
        assert status in (200, 201), run
        run_id = run["dag_run_id"]
        state = demo.progress(api, "vlass_se_cube", run_id, poll=10)
        _, tis = api.get(f"/api/v2/dags/vlass_se_cube/dagRuns/{run_id}/taskInstances?limit=500")
    finally:
        rt.down()
    tis = tis["task_instances"]
    plane = {}
    for ti in tis:
        if ti["task_id"].startswith("plane."):
            plane[(ti["task_id"].split(".", 1)[1], ti["map_index"])] = ti
    groups = sorted({k[1] for k in plane})
    start = min(_ts(plane[("makeimages", g)]["start_date"]) for g in groups)
    end = max(_ts(plane[("makecutoutimages", g)]["end_date"]) for g in groups)
    dag_seconds = end - start
    gaps = [_ts(plane[(CHAIN[i], g)]["start_date"]) - _ts(plane[(CHAIN[i - 1], g)]["end_date"])
            for g in groups for i in range(1, len(CHAIN))]
    latency = launch_latencies(tis, slots=2)

    ws = Path(workspace_for(str(home / "workspaces"), "vlass_se_cube", run_id))
    targets = json.loads((ws / "context" / "cube_targets.json").read_text())["targets"]
    worker = str(Path(sys.executable).with_name("casa-worker"))

    def serial_loop(omp_threads: str | None) -> float:
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        if omp_threads:
            env["OMP_NUM_THREADS"] = omp_threads
        t0 = time.monotonic()
        for t in targets:
            for stage in CHAIN:
                subprocess.run([worker, f"vlass-{stage}", "--workspace", str(ws), "--param",
                                f"group={t['group']}", "--tag", t["suffix"]], check=True, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.monotonic() - t0

    serial_seconds = serial_loop(None)          # what one would run by hand: CASA's default threads
    serial_one_thread = serial_loop("1")        # exactly the calls the DAG's tasks make
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} {os.cpu_count()} cores, {platform.platform()}",
        "preset": args.preset, "groups": len(groups), "dag_state": state,
        "dag_imaging_seconds": round(dag_seconds, 1), "serial_seconds": round(serial_seconds, 1),
        "ratio": round(dag_seconds / serial_seconds, 3),
        "serial_one_thread_seconds": round(serial_one_thread, 1),
        "ratio_same_calls_one_thread": round(dag_seconds / serial_one_thread, 3),
        "launch_latency_seconds": {"median": round(statistics.median(latency), 2),
                                   "max": round(max(latency), 2), "n": len(latency),
                                   "definition": "start minus the later of the upstream's end and the "
                                                 "last moment a slot became free"},
        "group_gap_seconds": {"median": round(statistics.median(gaps), 2), "max": round(max(gaps), 2),
                              "n": len(gaps), "definition": "start minus the same group's upstream end "
                                                            "(includes waiting for a slot)"},
        "settings": {"parallel_slots": 2, "omp_threads_per_task": 1, "serial_omp_threads": "CASA default, then 1"},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
