"""QA2 packaging on the simulated manual-reduction trees (the guide's shapes and modes) and on
exportdata's products, then the transfer chunks, and the alma_qa2_package DAG end to end."""

from __future__ import annotations

import hashlib
import json
import tarfile
import zipfile

import numpy as np
import pytest

from casaflow import xmlsafe

from .conftest import load_dag, run_worker

pytestmark = [pytest.mark.casa, pytest.mark.e2e]

HEADER = """Atacama Large Millimeter/submillimeter Array (ALMA)
#####
Cycle: 0 (Early science)
Project code:
SB name:
PI name: A. Astronomer
Comments from Reducer:
#####
"""
MEMBER = "2011.0.00229.S/sg_ouss_id/group_ouss_id/member_ouss_id"


def package(ws, origpath, mode, append="", packpath="package/2011.0.00229.S", source="origpath"):
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "README.header.txt").write_text(HEADER)
    proc = run_worker("qa2-package", "--workspace", str(ws), "--param", f"{source}={origpath}",
                      "--param", "readme=README.header.txt", "--param", f"packpath={packpath}",
                      "--param", f"mode={mode}", "--param", f"append={append}")
    return proc


def relpaths(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.name.startswith("."))


def link_tree(ws, tree):
    import os

    (ws / "input").mkdir(parents=True, exist_ok=True)
    target = ws / "input" / tree.name
    if not target.exists():
        os.symlink(tree, target)
    return f"input/{tree.name}"


@pytest.fixture(scope="module")
def hard(base_dir, manual_trees):
    ws = base_dir / "qa2" / "hard"
    proc = package(ws, link_tree(ws, manual_trees["multi"]), "hard")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ws


def test_fake_mode_builds_the_guides_structure(base_dir, manual_trees):
    ws = base_dir / "qa2" / "fake"
    proc = package(ws, link_tree(ws, manual_trees["multi"]), "fake")
    assert proc.returncode == 0, proc.stderr[-3000:]
    member = ws / "package" / MEMBER
    tree = relpaths(member)
    # The guide's example package, with this tree's execution uids.
    for uid, x in (("uid___A002_Xf00d12_X1a2b", "X1a2b"), ("uid___A002_Xf00d12_X2c3d", "X2c3d")):
        for path in (f"raw/{uid}.ms.split", f"calibrated/{uid}.ms.split.cal", f"calibration/{uid}.calibration",
                     f"calibration/{uid}.calibration.plots", f"qa/{x}.checklist.txt", f"qa/{uid}__qa2_part1.png",
                     f"qa/{uid}__textfile.txt", f"script/{uid}.ms.scriptForCalibration.py",
                     f"log/{uid}__casapy-20261120-101500.log",
                     f"calibration/{uid}.calibration/{uid}.ms.split.bandpass"):
            assert path in tree, path
    for path in ("product/calibrated_all_setup3_b6.clean.fits", "script/scriptForImaging.py",
                 "script/scriptForFluxCalibration.py", "log/ipython.log", "README"):
        assert path in tree, path
    assert sorted(p.name for p in member.iterdir() if p.is_dir()) == sorted(
        ["raw", "calibrated", "calibration", "script", "qa", "log", "product"])
    assert not [p for p in tree if p.endswith("calibrated.ms") or p.endswith("/uid___A002_Xf00d12_X1a2b.ms")]
    # Fake: placeholders only, dummy tickets.
    assert (member / "product" / "calibrated_all_setup3_b6.clean.fits").stat().st_size == 0
    with tarfile.open(ws / "package" / "2011.0.00229.S.ticket.tar") as tar:
        assert tar.getnames() == ["DUMMY_TICKET.txt"]


def test_hard_mode_splits_real_data_columns(hard, manual_trees):
    from casaflow.casaenv import import_casa

    ct = import_casa()[0]
    member = hard / "package" / MEMBER
    uid = "uid___A002_Xf00d12_X1a2b"
    tb = ct.table()
    tb.open(str(member / "raw" / f"{uid}.ms.split"))
    raw_cols, raw = tb.colnames(), tb.getcol("DATA")
    tb.close()
    assert "CORRECTED_DATA" not in raw_cols
    tb.open(str(manual_trees["multi"] / "X1a2b" / f"{uid}.ms.split"))
    assert np.array_equal(raw, tb.getcol("DATA"))
    tb.close()
    tb.open(str(member / "calibrated" / f"{uid}.ms.split.cal"))
    cal = tb.getcol("DATA")
    tb.close()
    tb.open(str(manual_trees["multi"] / "X1a2b" / f"{uid}.ms.split.cal"))
    assert np.array_equal(cal, tb.getcol("DATA"))
    tb.close()
    fits_path = member / "product" / "calibrated_all_setup3_b6.clean.fits"
    assert fits_path.read_bytes() == (manual_trees["multi"] / "Combined" / fits_path.name).read_bytes()
    readme = (member / "README").read_text()
    assert "Project code: 2011.0.00229.S" in readme and "SB name: IRC10216_setup3_b6_run_x2" in readme
    assert "|   |   |   |-- member_ouss_id/" in readme and "'raw' contains" in readme


@pytest.mark.parametrize("mode", ["hard", "ticket"])
def test_ticket_tar_and_zip_hold_readme_qa_scripts_and_size(base_dir, hard, manual_trees, mode):
    ws = hard if mode == "hard" else base_dir / "qa2" / "ticket"
    if mode == "ticket":
        proc = package(ws, link_tree(ws, manual_trees["multi"]), "ticket")
        assert proc.returncode == 0, proc.stderr[-3000:]
        # a dummy package...
        assert (ws / "package" / MEMBER / "product" / "calibrated_all_setup3_b6.clean.fits").stat().st_size == 0
    expected = {"README", "package_size.txt", "qa/X1a2b.checklist.txt", "qa/uid___A002_Xf00d12_X1a2b__qa2_part1.png",
                "script/scriptForImaging.py", "script/uid___A002_Xf00d12_X2c3d.ms.scriptForCalibration.py"}
    with tarfile.open(ws / "package" / "2011.0.00229.S.ticket.tar") as tar:
        names = set(tar.getnames())
        size_text = tar.extractfile("package_size.txt").read().decode()
    with zipfile.ZipFile(ws / "package" / "2011.0.00229.S.ticket.zip") as zf:
        assert set(zf.namelist()) == names
        assert zf.testzip() is None
    assert expected <= names
    assert int(size_text.split()[3]) > 10_000_000       # the real package's expected size, not the dummy's
    # the qa and script members are the real files, in both modes, not empty placeholders
    with tarfile.open(ws / "package" / "2011.0.00229.S.ticket.tar") as tar:
        for name in expected - {"README", "package_size.txt"}:
            data = tar.extractfile(name).read()
            assert data and data == (ws / "package" / MEMBER / name).read_bytes(), name
    script = next(manual_trees["multi"].glob("X*/*.ms.scriptForCalibration.py"))
    assert script.read_bytes() in {(ws / "package" / MEMBER / "script" / f).read_bytes()
                                   for f in ("uid___A002_Xf00d12_X1a2b.ms.scriptForCalibration.py",
                                             "uid___A002_Xf00d12_X2c3d.ms.scriptForCalibration.py")}


def test_append_member_adds_the_next_member_and_reruns_in_place(hard, manual_trees):
    src = link_tree(hard, manual_trees["single"])
    for _ in range(2):             # a second append of the same SB rebuilds member 2, not member 3
        proc = package(hard, src, "fake", append="member")
        assert proc.returncode == 0, proc.stderr[-3000:]
    group = hard / "package" / "2011.0.00229.S" / "sg_ouss_id" / "group_ouss_id"
    assert sorted(p.name for p in group.iterdir() if not p.name.startswith(".")) == ["member_ouss_id",
                                                                                    "member_ouss_id2"]
    assert (group / "member_ouss_id2" / "product" / "IRC10216_setup4.clean.fits").exists()
    assert (group / "member_ouss_id2" / "script" / "scriptForImaging.py").exists()


def test_origpath_in_none_of_the_shapes_is_rejected(base_dir, tmp_path):
    bad = tmp_path / "ws"
    (bad / "input" / "notansb" / "somedir").mkdir(parents=True)
    (bad / "input" / "notansb" / "notes.txt").write_text("x")
    proc = package(bad, "input/notansb", "fake")
    assert proc.returncode == 2
    assert "none of the QA2 guide's shapes" in json.loads(proc.stdout.strip().splitlines()[-1])["message"]
    assert not (bad / "package").exists()
    proc = package(bad, "input/notansb", "fake", append="member")
    assert proc.returncode == 2


def test_pipeline_products_package_by_ous_uids(base_dir, alma_tiny):
    ws = base_dir / "qa2" / "pipeline"
    import os
    import shutil

    shutil.rmtree(ws, ignore_errors=True)
    (ws / "input").mkdir(parents=True)
    os.symlink(alma_tiny["working"], ws / "input" / "working")
    proc = run_worker("alma-exportdata", "--workspace", str(ws), "--param", "working_dir=input/working")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = package(ws, "products", "hard", packpath="package/2025.1.00123.S", source="products_dir")
    assert proc.returncode == 0, proc.stderr[-3000:]
    member = ws / "package" / "2025.1.00123.S" / "science_goal.uid___A001_X3d5e_X10" / "group.uid___A001_X3d5e_X11" \
        / "member.uid___A001_X3d5e_X12"
    prefix = "uid___A001_X3d5e_X12.hifa_calimage"
    for path in (f"qa/{prefix}.weblog.tgz", f"qa/{prefix}.pipeline_aquareport.xml", f"qa/{prefix}.pipeline_manifest.xml",
                 f"script/{prefix}.casa_pipescript.py", f"log/{prefix}.casa_commands.log",
                 "calibration/uid___A002_Xf00d12_X1a2b.ms.flagversions.tgz",
                 "calibration/uid___A001_X3d5e_X12.session_2.caltables.tgz",
                 "product/uid___A001_X3d5e_X12.IRAS19250_sci.spw0_1.cont.regcal.IQUV.pbcor.fits"):
        assert (member / path).is_file(), path
    products = {p.name for p in (ws / "products").iterdir()}
    packaged = {p.name for p in member.rglob("*") if p.is_file() and p.parent != member}
    assert packaged == products


def test_chunks_reassemble_byte_identical_and_respect_the_limit(hard, tmp_path):
    from casaflow.alma import tarsplit

    proc = run_worker("tarsplit", "--workspace", str(hard), "--param", "package=package/2011.0.00229.S",
                      "--param", "chunk_size=3M", "--param", "date=2026-11-22")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])["outputs"]
    n = len(out["chunks"])
    assert n > 3 and out["chunks"][0] == f"2011.0.00229.S_2026_11_22_001_of_{n:03d}.tar"
    for chunk in out["chunks"]:
        path = hard / "transfer" / chunk
        assert path.stat().st_size <= 3 * 1024 * 1024
        with tarfile.open(path) as tar:            # each chunk is an ordinary tar file
            assert tar.getmembers()
    joined = tarsplit.join(hard / "transfer" / out["checksums"], tmp_path / "joined")
    original = hard / "package" / "2011.0.00229.S"
    assert relpaths(joined) == relpaths(original)
    for p in original.rglob("*"):
        if p.is_file():
            q = joined / p.relative_to(original)
            assert hashlib.sha256(q.read_bytes()).digest() == hashlib.sha256(p.read_bytes()).digest(), p


@pytest.fixture(scope="module")
def qa2_dag_run(airflow_db, manual_trees, s3_bucket_module, tmp_path_factory):
    header = tmp_path_factory.mktemp("hdr") / "README.header.txt"
    header.write_text(HEADER)
    client, bucket = s3_bucket_module
    dag = load_dag("alma_qa2_package")
    dr = dag.test(run_conf={"origpath": str(manual_trees["multi"]), "readme_header": str(header),
                            "project_code": "2011.0.00229.S", "mode": "hard", "chunk_size": "4M",
                            "transfer_date": "2026-11-22", "execution_mode": "local",
                            "products_destination": f"s3://{bucket}/qa2"})
    return {"dr": dr, "client": client, "bucket": bucket,
            "states": {ti.task_id: ti.state for ti in dr.get_task_instances()}}


def test_qa2_dag_delivers_chunks_tickets_and_manifest(qa2_dag_run):
    assert qa2_dag_run["dr"].state == "success", qa2_dag_run["states"]
    client, bucket = qa2_dag_run["client"], qa2_dag_run["bucket"]
    # one delivery per SB: <project>.<OUS or EB-derived id>/ (never the bare project code)
    manifests = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="qa2/")["Contents"]
                 if o["Key"].endswith("/delivery_manifest.xml")]
    assert len(manifests) == 1 and manifests[0].startswith("qa2/2011.0.00229.S."), manifests
    prefix = manifests[0][: -len("delivery_manifest.xml")]
    keys = {o["Key"][len(prefix):] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]}
    assert "2011.0.00229.S_2026_11_22.sha256" in keys and "delivery_manifest.xml" in keys
    assert {"ticket/2011.0.00229.S.ticket.tar", "ticket/2011.0.00229.S.ticket.zip", "casaflow_weblog.tgz"} <= keys
    chunks = sorted(k for k in keys if k.endswith(".tar") and not k.startswith("ticket/"))
    assert chunks and chunks[-1].endswith(f"_of_{len(chunks):03d}.tar")
    dm = xmlsafe.parse_bytes(client.get_object(Bucket=bucket, Key=prefix + "delivery_manifest.xml")["Body"].read(), "dm")
    objects = {o.get("key"): o.get("sha256") for o in dm.iter("object")}
    assert set(objects) == keys - {"delivery_manifest.xml"}
    for key in chunks:
        body = client.get_object(Bucket=bucket, Key=prefix + key)["Body"].read()
        assert len(body) <= 4 * 1024 * 1024 and hashlib.sha256(body).hexdigest() == objects[key]
