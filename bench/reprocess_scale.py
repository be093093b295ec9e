"""Benchmark: scheduling a catalog day of N no-op datasets on the embedded runtime.

    .venv/bin/python bench/reprocess_scale.py [--datasets 10000] [--parallelism 8] [--timeout 3600]
                                              [--database sqlite|postgres [sqlite|postgres ...]]

With several databases (``--database postgres sqlite``) the same catalog day runs on each in turn,
each in a fresh runtime, in one session; the JSON has one entry per database under ``runs``, the
machine's load average around each, and the targets (no API request over 5 s; PostgreSQL's
throughput at least SQLite's).

1. Write a catalog with N ``casaflow_noop`` datasets observed on one day (each with its own small
   input file), start the embedded runtime (SQLite or PostgreSQL, LocalExecutor, real scheduler, api-server,
   dag-processor and triggerer) with the given parallelism.
2. ``airflow backfill create`` for that day on ``reprocess_catalog``: it selects the datasets, triggers
   one ``casaflow_noop`` run each (batches of <= 1000 mapped trigger tasks) and waits for each batch
   in one deferred trigger.
3. Measured: wall time from the backfill to the reprocess run's end; runs finished per minute;
   per-run overhead (wall / N x parallelism: the slot time one no-op run costs); the peak RSS of
   the scheduler process tree (sampled every second); deliveries made; the longest API request
   (a probe GETs the runs list every 2 s while the day runs, besides the benchmark's own polls);
   the runs finished, every minute (``progress_every_minute``), so that a run cut
   short can be compared with another at the same count; ``<out>.<database>.progress.json`` holds
   them every ~5 min while the day runs.

Target (issue: operations): a 10,000-dataset catalog day. The figures go to
``bench/results/reprocess_scale.json`` with the date and machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DAY = "2026-04-01"


def own_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
    except (FileNotFoundError, StopIteration):
        return 0


def selection_cost(n: int, work: Path) -> dict:
    """The reprocessing DAG's per-day selection for n records, in process: parse and validate the
    catalog, select the day, fingerprint, and check each dataset's delivery in a local store."""
    from casaflow_ops import catalog
    from hooks.product_store import ProductStoreHook

    rows = [{"id": f"sel{i:05d}", "workflow": "casaflow_noop", "observed": f"{DAY}T{(i * 86400 // n) // 3600:02d}:"
             f"{(i * 86400 // n) % 3600 // 60:02d}:00Z", "inputs": {"input": f"/data/{i}.txt"}} for i in range(n)]
    data = json.dumps({"catalog_version": 1, "datasets": rows}).encode()
    store = ProductStoreHook(str(work / "selection-store"))
    t0 = time.perf_counter()
    records = catalog.parse(data)
    day0 = dt.datetime.fromisoformat(DAY).replace(tzinfo=dt.timezone.utc)
    chosen = catalog.select(records, day0, day0 + dt.timedelta(days=1))
    delivered = sum(1 for r in chosen if store.delivered(r.id) or not r.fingerprint)
    return {"records": len(chosen), "delivered": delivered, "seconds": round(time.perf_counter() - t0, 2)}


def tree_rss(pid: int) -> int:
    """RSS (bytes) of a process and its descendants, from /proc."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def write_catalog(work: Path, n: int) -> Path:
    inputs = work / "inputs"
    inputs.mkdir()
    rows = []
    day0 = dt.datetime.fromisoformat(DAY).replace(tzinfo=dt.timezone.utc)
    for i in range(n):
        f = inputs / f"ds{i:05d}.txt"
        f.write_text(f"{i}\n")
        t = day0 + dt.timedelta(seconds=i * 86400 / n)
        rows.append({"id": f"ds{i:05d}", "workflow": "casaflow_noop", "observed": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "inputs": {"input": str(f)}})
    catalog = work / "catalog.json"
    catalog.write_text(json.dumps({"catalog_version": 1, "datasets": rows}))
    return catalog


def run_day(database: str, catalog: Path, home: Path, args) -> dict:
    """One catalog day on a fresh runtime in ``home`` with the given metadata database."""
    from casaflow import atomic
    from casaflow_ops import runtime

    rt = runtime.create(home=home, port=runtime.free_port(), database=database)
    api = runtime.Api(rt)
    peak = {"rss": 0, "own": 0, "pg": 0, "api_seconds": 0.0, "api_requests": 0}
    stop = threading.Event()
    measuring = threading.Event()

    def probe():
        """The longest API request while the day runs: a GET of the runs list every 2 s."""
        client = runtime.Api(rt)
        while not stop.is_set():
            if measuring.is_set():
                t = time.monotonic()
                try:
                    client.get("/api/v2/dags/casaflow_noop/dagRuns?limit=1")
                except OSError:
                    pass
                peak["api_seconds"] = max(peak["api_seconds"], time.monotonic() - t)
                peak["api_requests"] += 1
            time.sleep(2)

    def sample():
        from casaflow_ops import pgserver

        while not stop.is_set():
            pid = rt.pid("scheduler")
            if pid:
                peak["rss"] = max(peak["rss"], tree_rss(pid))
                peak["own"] = max(peak["own"], own_rss(pid))
            if database == "postgres" and (pg := pgserver.pid(rt.pgdata)):
                peak["pg"] = max(peak["pg"], tree_rss(pg))       # the server and its backends
            time.sleep(1)

    threading.Thread(target=sample, daemon=True).start()
    threading.Thread(target=probe, daemon=True).start()
    load_before = os.getloadavg()
    try:
        rt.up()                     # inside the try: an interrupted start-up is shut down too
        for dag_id in ("casaflow_noop", "reprocess_catalog"):
            api.wait_for_dag(dag_id)
            api.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})
        t0 = time.time()
        measuring.set()
        proc = subprocess.run([str(runtime.BIN / "airflow"), "backfill", "create", "--dag-id", "reprocess_catalog",
                               "--from-date", DAY, "--to-date", DAY, "--dag-run-conf",
                               json.dumps({"catalog": str(catalog), "workflows": ["casaflow_noop"]})],
                              env=rt.env(), capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        state, done = "queued", 0
        slow_polls = 0
        progress = []           # [seconds since the backfill, runs finished]: rates at equal counts
        partial = Path(args.out).with_suffix(f".{database}.progress.json")
        while time.time() - t0 < args.timeout:
            try:
                _, body = api.get("/api/v2/dags/reprocess_catalog/dagRuns?run_type=backfill")
                state = body["dag_runs"][0]["state"] if body.get("dag_runs") else "none"
                _, noop = api.get("/api/v2/dags/casaflow_noop/dagRuns?limit=1&state=success")
                done = noop.get("total_entries", 0)
            except OSError:         # the api-server did not answer in time: count it, keep going
                slow_polls += 1
            progress.append([round(time.time() - t0, 1), done])
            if len(progress) % 30 == 0:      # what stands every ~5 min, if the session ends first
                atomic.write_text(partial, json.dumps({"database": database, "progress": progress,
                                                       "longest_api_request_seconds": round(peak["api_seconds"], 2)}))
            if state in ("success", "failed"):
                break
            time.sleep(10)
        wall = time.time() - t0
        measuring.clear()
        load_after = os.getloadavg()
        delivered = sum(1 for _ in Path(rt.products).glob("*/delivery_manifest.xml"))
        return {
            "database": database, "reprocess_state": state,
            "finished_runs": done, "delivered": delivered, "wall_seconds": round(wall, 1),
            "runs_per_minute": round(done / wall * 60, 1) if wall else None,
            "slot_seconds_per_run": round(wall * args.parallelism / done, 2) if done else None,
            "scheduler_peak_rss_mb": round(peak["own"] / 2**20, 1),
            "scheduler_tree_peak_rss_mb": round(peak["rss"] / 2**20, 1),   # with the executor's task processes
            **({"postgres_peak_rss_mb": round(peak["pg"] / 2**20, 1)} if database == "postgres" else {}),
            "timed_out": wall >= args.timeout,
            "api_polls_timed_out": slow_polls,
            "longest_api_request_seconds": round(peak["api_seconds"], 2), "api_probe_requests": peak["api_requests"],
            "extrapolated_hours_for_10000": round(10000 / (done / wall) / 3600, 1) if done else None,
            # The machine is shared: its 1-minute load average before start-up and after the day.
            "load_average_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
            "progress_every_minute": progress[::6],     # one poll in six
        }
    finally:
        stop.set()
        rt.down()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=int, default=10000)
    ap.add_argument("--parallelism", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per database")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "reprocess_scale.json"))
    ap.add_argument("--database", nargs="+", choices=["sqlite", "postgres"], default=["sqlite"],
                    help="the runtime's metadata database(s), run one after another on the same catalog in "
                         "fresh runtimes (casaflow_ops/pgserver.py for postgres)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="casaflow-bench-scale-"))
    catalog = write_catalog(work, args.datasets)
    os.environ["CASAFLOW_ALLOWED_INPUTS"] = str(work)      # the catalog and its inputs
    os.environ["CASAFLOW_ENABLE_TEST_DAGS"] = "1"          # casaflow_noop
    os.environ["AIRFLOW__CORE__PARALLELISM"] = str(args.parallelism)
    os.environ["AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG"] = str(max(16, args.parallelism))

    result = {"date": dt.date.today().isoformat(),
              "machine": f"{platform.node()} {os.cpu_count()} cores {platform.machine()}, "
                         f"Python {platform.python_version()}",
              "datasets": args.datasets, "parallelism": args.parallelism, "runs": []}
    out = Path(args.out)
    for database in args.database:
        # each database in its own directory: runtime, products (runtime.create puts them beside it)
        result["runs"].append(run_day(database, catalog, work / database / "runtime", args))
        out.write_text(json.dumps(result, indent=1) + "\n")        # what stands, after each database
    result["selection_10000"] = selection_cost(10000, work)
    by_db = {r["database"]: r for r in result["runs"]}
    result["targets"] = {
        "no_api_request_over_5_s": {db: r["longest_api_request_seconds"] <= 5.0 for db, r in by_db.items()},
        **({"postgres_runs_per_minute_at_least_sqlite": by_db["postgres"]["runs_per_minute"]
            >= by_db["sqlite"]["runs_per_minute"]} if {"sqlite", "postgres"} <= set(by_db) else {}),
    }
    if len(result["runs"]) == 1:           # one database: the flat layout of the earlier results
        result = {**{k: v for k, v in result.items() if k != "runs"}, **result["runs"][0]}
    print(json.dumps(result, indent=1))
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
