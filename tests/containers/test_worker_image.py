"""The casa-worker image run as its pod runs it: uid 10001, read-only root filesystem, every
capability dropped, no privilege escalation, no network, /tmp as scratch, the workspace at the same
path as in local mode. Real stages (the tiny VLASS chain through one makeimages, one ALMA export)
run in the image and in local mode; their products must be the same."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ..conftest import SHARED
from ..e2e.conftest import run_worker
from . import engine
from .helpers import in_pod, last_json

pytestmark = [pytest.mark.containers, pytest.mark.casa]

def test_image_python_user_and_packages(images):
    """The interpreter has tarfile's extraction filters, the user is 10001, no Airflow is installed,
    the root filesystem is read-only and there is no network."""
    probe = ("import json, os, socket, sys, tarfile, importlib.util as u\n"
             "try:\n    open('/opt/casaflow/x', 'w'); ro = False\nexcept OSError:\n    ro = True\n"
             "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=3); net = True\nexcept OSError:\n    net = False\n"
             "print(json.dumps({'version': sys.version_info[:3], 'filter': hasattr(tarfile, 'data_filter'),"
             " 'uid': os.getuid(), 'airflow': u.find_spec('airflow') is not None,"
             " 'casatools': u.find_spec('casatools') is not None, 'ro': ro, 'net': net}))\n")
    proc = engine.run("run", *engine.pod_flags(), "--entrypoint", "python", images["worker"], "-c", probe)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert tuple(info["version"]) >= (3, 11, 4) and info["version"][:2] == [3, 11] and info["filter"]
    assert info["uid"] == engine.WORKER_UID and info["casatools"] and not info["airflow"]
    assert info["ro"] and not info["net"]
    listing = engine.run("run", *engine.pod_flags(), images["worker"], "--list")
    assert listing.returncode == 0, listing.stderr
    assert "vlass-makeimages" in listing.stdout and "alma-exportdata" in listing.stdout


def _images_of(result: dict) -> list[str]:
    return sorted(p["path"] for p in result["products"] if p["path"].endswith((".image", ".image.tt0")))


def _pixels(path: Path):
    from casaflow.casaenv import import_casa

    ct, _ = import_casa()
    ia = ct.image()
    ia.open(str(path))
    try:
        return ia.getchunk(), ia.shape()
    finally:
        ia.close()


def test_vlass_chain_in_the_image_equals_local_mode(vlass_chains):
    r = vlass_chains["results"]
    for stage in r["local"]:
        lo, po = r["local"][stage], r["pod"][stage]
        assert lo["status"] == po["status"] == "success", stage
        assert lo["outputs"] == po["outputs"] or stage == "vlass-importdata", stage
        assert [(p["path"], p["kind"]) for p in lo["products"]] == [(p["path"], p["kind"]) for p in po["products"]], stage
    # The images of the makeimages group: same products, same pixels (CASA image tables carry
    # their creation time, so they are compared by content, not by checksum).
    made = _images_of(r["local"]["vlass-makeimages"])
    assert made and made == _images_of(r["pod"]["vlass-makeimages"])
    for rel in made:
        a, shape_a = _pixels(vlass_chains["local"] / rel)
        b, shape_b = _pixels(vlass_chains["pod"] / rel)
        assert list(shape_a) == list(shape_b) and np.isfinite(a).all() and a.std() > 0, rel
        assert np.allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.abs(a).max())), rel
    # Everything the pod wrote (all but the inputs the test copied in) is the worker's.
    inputs = {"SEIP_parameter.list", "CCIP_parameter.list", "reimaging_resources.tgz"}
    owners = {p.stat().st_uid for p in vlass_chains["pod"].rglob("*")
              if not p.is_symlink() and p.relative_to(vlass_chains["pod"]).as_posix() not in inputs}
    assert owners == {engine.WORKER_UID}


# The AQUA report carries its report date and the weblog tarball carries the AQUA report
# (tests/e2e/test_alma_exportdata.py, test_rerun_gives_identical_products).
def _varying(prefix: str) -> set:
    return {f"{prefix}.pipeline_aquareport.xml", f"{prefix}.weblog.tgz"}


def _checksums(products: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(products.iterdir()) if p.is_file()}


def test_alma_export_in_the_image_equals_local_mode(images, alma_tiny, tmp_path):
    os.chmod(tmp_path, 0o755)
    out = {}
    for mode in ("local", "pod"):
        ws = tmp_path / mode
        (ws / "input").mkdir(parents=True)
        os.symlink(alma_tiny["working"], ws / "input" / "working")
        args = ["alma-exportdata", "--workspace", str(ws), "--param", "working_dir=input/working"]
        if mode == "local":
            proc = run_worker(*args)
        else:
            for p in (ws, ws / "input"):
                os.chown(p, engine.WORKER_UID, engine.WORKER_UID)
            proc = in_pod(images["worker"], ws, *args, ro=[SHARED])
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out[mode] = (last_json(proc), ws)
    (lres, lws), (pres, pws) = out["local"], out["pod"]
    manifest = next(p["path"] for p in lres["products"] if p["path"].endswith("pipeline_manifest.xml"))
    prefix = Path(manifest).name.rsplit(".pipeline_manifest.xml", 1)[0]
    lsum, psum = _checksums(lws / "products"), _checksums(pws / "products")
    assert set(lsum) == set(psum) and f"{prefix}.pipeline_manifest.xml" in lsum
    assert len(lsum) > len(_varying(prefix)) + 1
    same = {k: v for k, v in lsum.items() if k not in _varying(prefix)}
    assert same == {k: v for k, v in psum.items() if k not in _varying(prefix)}


def test_input_error_exits_2_in_the_image(images, tmp_path):
    ws = tmp_path / "bad"
    ws.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chown(ws, engine.WORKER_UID, engine.WORKER_UID)
    proc = in_pod(images["worker"], ws, "vlass-importdata", "--workspace", str(ws), "--param", "vis=nothere.ms")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "nothere.ms" in last_json(proc)["message"]
