"""Benchmark: the images' sizes and the worker's cold start in its container against local mode.

    .venv/bin/python bench/containers.py [--runs 5] [--out bench/results/containers.json]

Builds (or reuses) the images as tests/containers does (scripts/build-images --local-base, tags
keyed by a hash of the inputs), then, each `--runs` times, alternating local and container:
1. `casa-worker --list`: wall time of the whole command (in the container: `podman run` with the
   worker pod's security context, so container start-up is included);
2. the first CASA call of a stage: a fresh Python that imports casaflow's CASA environment
   (casaflow.casaenv.import_casa: casatools + casatasks with the project's config) and opens a
   tool, the work every stage does before its first CASA task; wall time of the whole process and
   the time measured inside it.
Medians are compared; every run is in the JSON.
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
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.containers import engine  # noqa: E402

FIRST_CALL = ("import time; t = time.perf_counter()\n"
              "from casaflow.casaenv import import_casa\n"
              "ct, tasks = import_casa(); ms = ct.ms(); ms.done()\n"
              "print(round(time.perf_counter() - t, 3))\n")


def timed(argv: list[str], env=None) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed: {proc.stderr[-2000:]}")
    return round(wall, 3), proc.stdout


def size_mb(ref: str) -> float:
    out = engine.run("image", "inspect", "--format", "{{.Size}}", ref, check=True).stdout.strip()
    return round(int(out) / 1e6, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "containers.json"))
    args = ap.parse_args()
    if engine.engine() is None:
        raise SystemExit("no container engine (podman or docker)")
    load_before = [round(x, 2) for x in os.getloadavg()]   # the machine is shared: say how busy it was
    images = engine.Images()
    worker, airflow = images["worker"], images["airflow"]
    py = str(Path(sys.executable))
    local_worker = str(Path(sys.executable).with_name("casa-worker"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    pod = ["run", *engine.pod_flags(), "-e", "OMP_NUM_THREADS=1"]
    runs = {"list_local": [], "list_container": [], "first_call_local": [], "first_call_container": [],
            "first_call_local_inside": [], "first_call_container_inside": []}
    for _ in range(args.runs):
        runs["list_local"].append(timed([local_worker, "--list"], env)[0])
        runs["list_container"].append(timed([engine.engine(), *pod, worker, "--list"], engine.env())[0])
        wall, out = timed([py, "-c", FIRST_CALL], env)
        runs["first_call_local"].append(wall)
        runs["first_call_local_inside"].append(float(out.split()[-1]))
        wall, out = timed([engine.engine(), *pod, "--entrypoint", "python", worker, "-c", FIRST_CALL], engine.env())
        runs["first_call_container"].append(wall)
        runs["first_call_container_inside"].append(float(out.split()[-1]))
    med = {k: statistics.median(v) for k, v in runs.items()}
    base = engine.run("image", "inspect", "--format", "{{.Size}}", "localhost/casaflow-base:bookworm-py"
                      + platform.python_version())
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "engine": engine.run("--version").stdout.strip(),
                    "load_avg_1_5_15_before": load_before,
                    "load_avg_1_5_15_after": [round(x, 2) for x in os.getloadavg()]},
        "images": {"worker": worker, "airflow": airflow},
        "size_mb": {"worker": size_mb(worker), "airflow": size_mb(airflow),
                    "local_base": round(int(base.stdout.strip()) / 1e6, 1) if base.returncode == 0 else None},
        "median_s": med,
        "container_minus_local_s": {"list": round(med["list_container"] - med["list_local"], 3),
                                    "first_call": round(med["first_call_container"] - med["first_call_local"], 3)},
        "runs_s": runs,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("size_mb", "median_s", "container_minus_local_s")}, indent=2))


if __name__ == "__main__":
    main()
