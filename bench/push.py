"""Benchmark: streaming a directory into the product store vs. "tar to disk, then upload".

    .venv/bin/python bench/push.py [--size-gb 2] [--out bench/results/push.json]

A directory shaped like a MeasurementSet (table files, column files of a few hundred MB, subtable
directories) of ``--size-gb`` is pushed four ways: {streaming, naive} x {local directory, moto's
S3 server over HTTP on loopback}. Each variant runs in its own process (so its peak RSS is its
own); a watcher samples the variant's scratch directory to find the extra disk it used.

Targets (issue: foundation): streaming <= 0.6 x naive wall time on the local backend and faster
than naive on S3; extra disk <= one part x upload concurrency; RSS <= 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PART_MIB = 16
CONCURRENCY = 4
REPEAT = 3   # the best of REPEAT runs is compared; all are recorded


def make_ms_like(root: Path, size_gb: float) -> int:
    """A MeasurementSet-shaped tree: big column files in the main table, small subtables."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    total = int(size_gb * (1 << 30))
    block = os.urandom(64 << 20)   # incompressible, like visibilities
    written, k = 0, 0
    (root / "table.dat").write_bytes(block[:4096])
    (root / "table.info").write_text("Type = Measurement Set\n")
    while written < total:
        n = min(total - written, 300 << 20)
        with open(root / f"table.f{k}", "wb") as fh:
            left = n
            while left:
                chunk = block[: min(left, len(block))]
                fh.write(chunk)
                left -= len(chunk)
        written += n
        k += 1
    for sub in ("ANTENNA", "FIELD", "SPECTRAL_WINDOW", "POLARIZATION", "OBSERVATION", "STATE", "POINTING"):
        (root / sub).mkdir()
        for name in ("table.dat", "table.f0", "table.f1", "table.info"):
            (root / sub / name).write_bytes(block[: 20000])
    return written


def variant(kind: str, backend: str, src: Path, dest: str, scratch: Path, endpoint: str | None) -> dict:
    """Run in a child process: push ``src`` one way; report wall time."""
    from hooks.stores import LocalStore, S3Store
    from hooks.tarstream import write_tar

    if backend == "local":
        store = LocalStore(Path(dest))
    else:
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="bench", aws_secret_access_key="bench")
        store = S3Store(client, dest, PART_MIB << 20, CONCURRENCY)
    key = f"{kind}/{src.name}.tar"
    t0 = time.monotonic()
    if kind == "streaming":
        obj = store.put_tree(key, src)
    else:
        tmp = scratch / f"{src.name}.tar"
        with open(tmp, "wb") as fh:
            write_tar(src, fh)
        obj = store.put_file(key, tmp, "application/x-tar")
        tmp.unlink()
    import resource

    return {"seconds": round(time.monotonic() - t0, 2), "bytes": obj.size,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def run_child(kind: str, backend: str, src: Path, dest: str, endpoint: str | None) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            size = sum(p.stat().st_size for p in scratch.rglob("*") if p.is_file())
            peak[0] = max(peak[0], size)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    code = ("import json,sys; sys.path.insert(0, %r); from bench.push import variant; from pathlib import Path; "
            "print(json.dumps(variant(%r, %r, Path(%r), %r, Path(%r), %r)))"
            % (str(REPO), kind, backend, str(src), dest, str(scratch), endpoint))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(scratch)})
    out, _ = proc.communicate()
    status = proc.returncode
    stop.set()
    watcher.join()
    shutil.rmtree(scratch, ignore_errors=True)
    if status != 0:
        raise RuntimeError(f"{kind}/{backend} failed")
    res = json.loads(out.strip().splitlines()[-1])
    res["extra_disk_bytes"] = peak[0]
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--workdir", default=str(REPO / ".cache" / "bench-push"))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "push.json"))
    args = ap.parse_args()
    work = Path(args.workdir)
    src = work / "bench.ms"
    size = make_ms_like(src, args.size_gb)
    port = free_port()
    moto = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import boto3

        for _ in range(50):
            try:
                boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                             aws_secret_access_key="bench").create_bucket(Bucket="bench-push")
                break
            except Exception:
                time.sleep(0.2)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                              aws_secret_access_key="bench")
        results = {}
        for backend in ("local", "s3"):
            runs: dict[str, list[dict]] = {"naive": [], "streaming": []}
            # Interleaved, and each run's object removed afterwards, so neither variant inherits a
            # fuller server (moto keeps objects in memory and spools them to temporary files).
            for _ in range(REPEAT):
                for kind in ("naive", "streaming"):
                    dest = str(work / f"dest-{kind}") if backend == "local" else "bench-push"
                    os.sync()   # no variant pays for the previous one's disk writeback
                    runs[kind].append(run_child(kind, backend, src, dest, endpoint))
                    if backend == "local":
                        shutil.rmtree(dest, ignore_errors=True)
                    else:
                        client.delete_object(Bucket=dest, Key=f"{kind}/{src.name}.tar")
            for kind, kind_runs in runs.items():
                best = min(kind_runs, key=lambda r: r["seconds"])
                results[f"{backend}/{kind}"] = {**best, "seconds_all": [r["seconds"] for r in kind_runs],
                                                "peak_rss_mib": max(r["peak_rss_mib"] for r in kind_runs),
                                                "extra_disk_bytes": max(r["extra_disk_bytes"] for r in kind_runs)}
                print(backend, kind, results[f"{backend}/{kind}"], flush=True)
    finally:
        moto.terminate()
        moto.wait()
    report = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} {os.cpu_count()} cores, "
        f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, {platform.platform()}",
        "size_bytes": size, "part_mib": PART_MIB, "concurrency": CONCURRENCY, "results": results,
        "ratios": {b: round(results[f"{b}/streaming"]["seconds"] / results[f"{b}/naive"]["seconds"], 3)
                   for b in ("local", "s3")},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report["ratios"]))
    shutil.rmtree(src, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
