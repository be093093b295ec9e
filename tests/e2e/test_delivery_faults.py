"""Faults, for real: a worker killed by SIGKILL mid-stage, moto's S3 server (a separate process,
over HTTP) stopped in the middle of a push, two pushes of one dataset at once, an older try racing
a newer one, a re-delivery with one product fewer.

Every writer here is its own process (``python -c`` running :func:`writer_main`) pushing through
``ProductStoreHook`` and the Airflow connection ``casaflow_s3``, exactly as a DAG's push task does.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from casaflow_ops.runtime import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PY = sys.executable
MiB = 1 << 20


# -- a writer process ----------------------------------------------------------------------
def writer_main() -> None:
    """In a child process: push the files of ``src`` as dataset ``dataset``; print one JSON line.

    ``pause_after`` = n: after streaming n blocks, create ``<pause>.reached`` and wait until the
    file ``pause`` exists (the test's way to hold a writer in the middle of an upload)."""
    import logging

    args = json.loads(sys.argv[1])
    from casaflow.errors import classify
    from hooks import delivery
    from hooks.product_store import ProductStoreHook

    # after the imports: Airflow configures logging when imported
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s", force=True)

    if args.get("pause"):
        import hooks.tarstream

        write, blocks, flag = hooks.tarstream.HashingSink.write, [0], Path(args["pause"])

        def pausing_write(self, data):
            blocks[0] += 1
            if blocks[0] == args["pause_after"]:
                Path(f"{flag}.reached").touch()
                while not flag.exists():
                    time.sleep(0.05)
            return write(self, data)

        hooks.tarstream.HashingSink.write = pausing_write
    src = Path(args["src"])
    items = [delivery.Item(p, p.name, "stage") for p in sorted(src.iterdir())]
    info = delivery.DeliveryInfo(args["dataset"], args.get("dag", "faults"), args["run"], args["try"],
                                 {"src": str(src)}, {})
    hook = ProductStoreHook(args["destination"], part_size_mib=5, concurrency=2,
                            lease_ttl=args.get("ttl", 600), lease_wait=args.get("wait", 60))
    try:
        report = hook.push(items, info, args["dataset"])
        out = {"ok": True, "uploaded": report.uploaded, "removed": report.removed}
    except Exception as exc:  # the class and message are what the test checks
        out = {"ok": False, "error": type(exc).__name__, "class": classify(exc), "message": str(exc)}
    print(json.dumps(out), flush=True)


def start_writer(env: dict, log: Path | None = None, **args) -> subprocess.Popen:
    code = "import sys; sys.path.insert(0, %r); from tests.e2e.test_delivery_faults import writer_main; " \
           "writer_main()" % str(REPO)
    err = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen([PY, "-c", code, json.dumps(args)], stdout=subprocess.PIPE, stderr=err,
                            text=True, env=env, cwd=str(REPO))


class Pause:
    """A writer held in the middle of its upload until :meth:`release`."""

    def __init__(self, tmp_path: Path, name: str):
        self.flag = tmp_path / f"{name}.go"

    def args(self, after: int = 2) -> dict:
        return {"pause": str(self.flag), "pause_after": after}

    def wait_reached(self, timeout: float = 180):
        wait_for(lambda: Path(f"{self.flag}.reached").exists(), timeout, "the writer to reach its pause")

    def release(self):
        self.flag.touch()


def outcome(proc: subprocess.Popen, timeout: float = 300) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"writer printed no result (exit {proc.returncode})"
    return json.loads(lines[-1])


# -- moto's server as a process we can stop ------------------------------------------------------
class MotoProcess:
    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("moto_server did not start")

    def stop(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self):
        self.resume()
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def moto_proc():
    server = MotoProcess()
    yield server
    server.close()


@pytest.fixture
def s3(moto_proc):
    """A fresh bucket, a client, and the environment a writer process needs (the connection
    with short timeouts and no retries, so a stopped server is noticed within seconds)."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_proc.endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"faults-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    conn = {"conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": moto_proc.endpoint, "region_name": "us-east-1",
                      "config_kwargs": {"s3": {"addressing_style": "path"}, "connect_timeout": 2,
                                        "read_timeout": 8, "retries": {"max_attempts": 1, "mode": "standard"}}}}
    env = {**os.environ, "AIRFLOW_CONN_CASAFLOW_S3": json.dumps(conn), "PYTHONPATH": str(REPO)}
    return client, bucket, env


def make_products(root: Path, files: dict[str, int], seed: str) -> Path:
    """Files of the given sizes with content determined by ``seed`` (different seeds: different bytes)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, size in files.items():
        block = hashlib.sha256(f"{seed}/{name}".encode()).digest() * 32768   # 1 MiB, distinct per seed
        with open(root / name, "wb") as fh:
            left = size
            while left:
                n = min(left, len(block))
                fh.write(block[:n])
                left -= n
    return root


def keys_under(client, bucket, prefix) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix):] for page in pages for o in page.get("Contents", []))


def assert_consistent(client, bucket, prefix, src: Path | None = None) -> dict:
    """The manifest lists exactly what the prefix holds, every object hashes to what it says and
    (with ``src``) to the writer's own files. Returns the manifest header."""
    from hooks import delivery

    head, entries = delivery.parse_manifest(
        client.get_object(Bucket=bucket, Key=prefix + delivery.MANIFEST_NAME)["Body"].read())
    assert keys_under(client, bucket, prefix) == sorted([e.key for e in entries] + [delivery.MANIFEST_NAME])
    for e in entries:
        body = client.get_object(Bucket=bucket, Key=prefix + e.key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == e.sha256 and len(body) == e.size, e.key
        if src is not None:
            assert body == (src / e.key).read_bytes(), e.key
    if src is not None:
        assert sorted(e.key for e in entries) == sorted(p.name for p in src.iterdir())
    return head


def lease_doc(client, bucket, dataset) -> dict | None:
    try:
        return json.loads(client.get_object(Bucket=bucket, Key=f"d/_leases/{dataset}.lease")["Body"].read())
    except client.exceptions.NoSuchKey:
        return None


def wait_for(pred, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# -- the tests ------------------------------------------------------------------------------------
def test_worker_killed_mid_stage_then_retry_is_byte_identical(tmp_path):
    """tarsplit is the cheapest real stage (no CASA): kill -9 its worker while it writes chunks,
    run it again in the same workspace, compare with a run that was never interrupted."""
    worker = str(BIN / "casa-worker")
    pkg_files = {f"f{i:02d}.dat": 12 * MiB for i in range(20)}

    def workspace(name):
        """The same package in a fresh workspace, down to the mtimes the tar headers record."""
        ws = tmp_path / name
        pkg = ws / "package" / "2011.0.00229.S"
        make_products(pkg / "member", pkg_files, "package")
        for path in sorted(pkg.rglob("*"), reverse=True) + [pkg]:
            os.utime(path, (1_700_000_000, 1_700_000_000))
        return ws

    def argv(ws):
        return [worker, "tarsplit", "--workspace", str(ws), "--param", "package=package/2011.0.00229.S",
                "--param", "outdir=transfer", "--param", "chunk_size=16M", "--param", "date=2026-11-22"]

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    clean = workspace("clean")
    assert subprocess.run(argv(clean), env=env, capture_output=True).returncode == 0

    ws = workspace("killed")
    proc = subprocess.Popen(argv(ws), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill it as soon as it has started writing chunks (a temporary or a first chunk)
    wait_for(lambda: (ws / "transfer").is_dir() and any((ws / "transfer").iterdir()), timeout=120,
             what="the first chunk")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    made = sorted(p.name for p in (ws / "transfer").iterdir())
    assert not (ws / "results" / "tarsplit.json").exists() or \
        json.loads((ws / "results" / "tarsplit.json").read_text())["status"] != "success"
    assert len([n for n in made if n.endswith(".tar")]) < len(list((clean / "transfer").glob("*.tar"))), \
        "the kill came too late to interrupt the stage"

    assert subprocess.run(argv(ws), env=env, capture_output=True).returncode == 0   # the retry
    want = {p.name: p.read_bytes() for p in (clean / "transfer").iterdir() if not p.name.startswith(".")}
    got = {p.name: p.read_bytes() for p in (ws / "transfer").iterdir() if not p.name.startswith(".")}
    assert got.keys() == want.keys() and all(got[k] == want[k] for k in want)
    assert not [p for p in (ws / "transfer").iterdir() if p.name.startswith(".")]    # no temporary left


def test_server_stopped_mid_push_fails_transient_then_retry_completes(s3, tmp_path, moto_proc):
    client, bucket, env = s3
    dest, prefix = f"s3://{bucket}/d", "d/ds-stop/"
    v1 = make_products(tmp_path / "v1", {"a.fits": 2 * MiB, "b.fits": 1 * MiB}, "v1")
    assert outcome(start_writer(env, destination=dest, dataset="ds-stop", src=str(v1), run="r0", **{"try": 1}))["ok"]
    v2 = make_products(tmp_path / "v2", {"a.fits": 2 * MiB, "big.ms.dat": 120 * MiB}, "v2")
    pause = Pause(tmp_path, "stop")
    writer = start_writer(env, destination=dest, dataset="ds-stop", src=str(v2), run="r1", **{"try": 1},
                          **pause.args(after=4))
    pause.wait_reached()          # the writer is in the middle of the big object's multipart upload
    moto_proc.stop()
    pause.release()
    try:
        result = outcome(writer, timeout=180)
    finally:
        moto_proc.resume()
    assert not result["ok"] and result["class"] == "transient", result
    assert "no manifest was written" in result["message"]
    assert "delivery_manifest.xml" not in keys_under(client, bucket, prefix)   # incomplete, and says so

    retry = outcome(start_writer(env, destination=dest, dataset="ds-stop", src=str(v2), run="r1", **{"try": 2}))
    assert retry["ok"], retry
    head = assert_consistent(client, bucket, prefix, v2)
    assert head["run"]["try_number"] == "2" and f"{prefix}b.fits" not in keys_under(client, bucket, "")


def test_two_pushes_at_once_one_waits(s3, tmp_path):
    client, bucket, env = s3
    dest, prefix = f"s3://{bucket}/d", "d/ds-two/"
    a = make_products(tmp_path / "a", {"x.fits": 40 * MiB, "only-a.fits": MiB}, "a")
    b = make_products(tmp_path / "b", {"x.fits": 40 * MiB, "only-b.fits": MiB}, "b")
    pause = Pause(tmp_path, "a")
    pa = start_writer(env, destination=dest, dataset="ds-two", src=str(a), run="manual__a", **{"try": 1},
                      **pause.args())
    pause.wait_reached()          # a holds the lease, half-way through x.fits
    log_b = tmp_path / "b.log"
    pb = start_writer(env, log_b, destination=dest, dataset="ds-two", src=str(b), run="manual__b", **{"try": 1},
                      wait=180)
    wait_for(lambda: "waiting up to" in log_b.read_text(), timeout=120, what="b to wait for the lease")
    assert "run 'manual__a', try 1" in log_b.read_text()
    pause.release()
    ra, rb = outcome(pa), outcome(pb)
    assert ra["ok"] and rb["ok"], (ra, rb)
    # b waited for a, then delivered over it: one complete delivery, b's, with a's extra product gone
    head = assert_consistent(client, bucket, prefix, b)
    assert head["run"]["run_id"] == "manual__b" and rb["removed"] == [f"{prefix}only-a.fits"]


def test_two_pushes_at_once_the_other_fails_naming_the_holder(s3, tmp_path):
    client, bucket, env = s3
    dest, prefix = f"s3://{bucket}/d", "d/ds-busy/"
    a = make_products(tmp_path / "a", {"x.fits": 40 * MiB}, "a")
    b = make_products(tmp_path / "b", {"x.fits": MiB}, "b")
    pause = Pause(tmp_path, "a")
    pa = start_writer(env, destination=dest, dataset="ds-busy", src=str(a), run="manual__a", **{"try": 1},
                      **pause.args())
    pause.wait_reached()
    rb = outcome(start_writer(env, destination=dest, dataset="ds-busy", src=str(b), run="manual__b",
                              dag="reprocess_catalog", **{"try": 1}, wait=1))
    pause.release()
    ra = outcome(pa)
    assert ra["ok"], ra
    assert not rb["ok"] and rb["error"] == "LeaseHeld", rb
    assert "dag 'faults', run 'manual__a', try 1" in rb["message"]
    head = assert_consistent(client, bucket, prefix, a)
    assert head["run"]["run_id"] == "manual__a"


def test_older_try_racing_a_newer_one_the_newer_stands(s3, tmp_path):
    client, bucket, env = s3
    dest, prefix = f"s3://{bucket}/d", "d/ds-race/"
    old = make_products(tmp_path / "old", {"x.fits": 100 * MiB, "y.fits": 30 * MiB, "old-only.fits": MiB}, "old")
    new = make_products(tmp_path / "new", {"x.fits": 3 * MiB, "y.fits": MiB}, "new")
    pause = Pause(tmp_path, "old")
    p_old = start_writer(env, destination=dest, dataset="ds-race", src=str(old), run="scheduled__1", **{"try": 1},
                         **pause.args(after=3))
    pause.wait_reached()          # the old try (a zombie, say) is half-way through uploading x.fits
    r_new = outcome(start_writer(env, destination=dest, dataset="ds-race", src=str(new), run="scheduled__1",
                                 **{"try": 2}, wait=0))
    pause.release()               # ...and wakes up after the newer try delivered
    r_old = outcome(p_old)
    assert r_new["ok"], r_new
    assert not r_old["ok"] and r_old["error"] == "LeaseLost" and "try 2" in r_old["message"], r_old
    head = assert_consistent(client, bucket, prefix, new)
    assert head["run"]["try_number"] == "2"
    assert lease_doc(client, bucket, "ds-race")["state"] == "released"


def test_redelivery_with_one_product_fewer_on_a_local_destination(tmp_path):
    """The same for a local directory: both kinds of reader stop seeing the dropped product."""
    from hooks import delivery

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    dest = tmp_path / "dest"
    v1 = make_products(tmp_path / "v1", {"a.fits": MiB, "plane3.fits": MiB}, "v1")
    v2 = make_products(tmp_path / "v2", {"a.fits": MiB}, "v2")
    for src, run in ((v1, "r1"), (v2, "r2")):
        assert outcome(start_writer(env, destination=str(dest), dataset="ds", src=str(src), run=run,
                                    **{"try": 1}))["ok"]
    listed = sorted(p.name for p in (dest / "ds").iterdir() if not p.name.startswith("."))
    _, entries = delivery.parse_manifest((dest / "ds" / delivery.MANIFEST_NAME).read_bytes())
    assert listed == ["a.fits", "delivery_manifest.xml"] and [e.key for e in entries] == ["a.fits"]
    assert (dest / "ds" / "a.fits").read_bytes() == (v2 / "a.fits").read_bytes()
