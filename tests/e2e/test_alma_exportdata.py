"""ALMA exportdata end to end: the DAG through dag.test() (local mode, pushed to moto's S3 over
HTTP), then the stage's parameters through the worker CLI, on the tiny simulated working
directory. Products are checked by using them: flags restored, apply lists run, FITS opened."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import tarfile

import numpy as np
import pytest
from astropy.io import fits

from casaflow import xmlsafe

from .conftest import load_dag, run_worker, workspace_of

pytestmark = [pytest.mark.casa, pytest.mark.e2e]

PREFIX = "uid___A001_X3d5e_X12.hifa_calimage"
OUS = "uid___A001_X3d5e_X12"


@pytest.fixture(scope="module")
def dag_run(airflow_db, alma_tiny, s3_bucket_module, base_dir):
    client, bucket = s3_bucket_module
    dag = load_dag("alma_exportdata")
    dr = dag.test(run_conf={"working_dir": str(alma_tiny["working"]), "execution_mode": "local",
                            "products_destination": f"s3://{bucket}/alma"})
    ws = workspace_of(base_dir, "alma_exportdata", dr)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    return {"dr": dr, "states": states, "ws": ws, "products": ws / "products", "client": client, "bucket": bucket}


def test_dag_passes_the_selection_params_through(airflow_db, alma_tiny, base_dir, tmp_path):
    """The nine parameters reach the stage from the DAG's Params (the variants below then run the
    stage itself, which is the very command the DAG runs)."""
    dag = load_dag("alma_exportdata")
    dr = dag.test(run_conf={"working_dir": str(alma_tiny["working"]), "execution_mode": "local",
                            "calintents": "*PHASE*", "exportmses": True, "products_dir": "delivery",
                            "products_destination": str(tmp_path / "dest")})
    assert dr.state == "success"
    ws = workspace_of(base_dir, "alma_exportdata", dr)
    names = {p.name for p in (ws / "delivery").iterdir()}
    cal = [n for n in names if n.endswith(".fits") and "_sci." not in n]
    assert cal and all("_ph." in n for n in cal)
    assert f"{alma_tiny['truth']['vis'][0]}.tgz" in names and not any(n.endswith(".calapply.txt") for n in names)
    assert (tmp_path / "dest" / OUS / "delivery_manifest.xml").is_file()


def export(base_dir, alma_tiny, name, **params):
    """Run the stage by the CLI in a fresh workspace holding a link to the working directory."""
    ws = base_dir / "alma-export" / name
    shutil.rmtree(ws, ignore_errors=True)
    (ws / "input").mkdir(parents=True)
    os.symlink(alma_tiny["working"], ws / "input" / "working")
    args = ["alma-exportdata", "--workspace", str(ws), "--param", "working_dir=input/working"]
    for k, v in params.items():
        args += ["--param", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    proc = run_worker(*args)
    return proc, ws


def fits_names(products):
    return sorted(p.name for p in products.glob("*.fits"))


def test_dag_succeeds_and_delivers_every_object(dag_run):
    assert dag_run["dr"].state == "success", dag_run["states"]
    client, bucket = dag_run["client"], dag_run["bucket"]
    listing = client.list_objects_v2(Bucket=bucket, Prefix=f"alma/{OUS}/")
    keys = {o["Key"].split(f"alma/{OUS}/", 1)[1] for o in listing.get("Contents", [])}
    local = {p.name for p in dag_run["products"].iterdir()}
    assert local <= keys and "delivery_manifest.xml" in keys and "casaflow_weblog.tgz" in keys
    dm = xmlsafe.parse_bytes(client.get_object(Bucket=bucket, Key=f"alma/{OUS}/delivery_manifest.xml")["Body"].read(),
                             "delivery manifest")
    for obj in dm.iter("object"):
        body = client.get_object(Bucket=bucket, Key=f"alma/{OUS}/{obj.get('key')}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == obj.get("sha256")


def test_run_weblog_shows_stages_products_and_aqua_scores(dag_run):
    page = (dag_run["ws"] / "weblog" / "index.html").read_text()
    assert "alma-exportdata" in page and "hifa_exportdata" in page and "aqua_scores.png" in page
    assert f"{PREFIX}.pipeline_manifest.xml" in page and "Flux measurements" in page
    assert (dag_run["ws"] / "weblog" / "aqua_scores.png").stat().st_size > 1000


def test_every_product_has_its_reference_name(dag_run, alma_tiny):
    names = {p.name for p in dag_run["products"].iterdir()}
    vises = alma_tiny["truth"]["vis"]
    expected = {f"{PREFIX}.pprequest.xml", f"{PREFIX}.weblog.tgz", f"{PREFIX}.casa_commands.log",
                f"{PREFIX}.casa_pipescript.py", f"{PREFIX}.casa_piperestorescript.py", f"{PREFIX}.pipeline_manifest.xml",
                f"{PREFIX}.pipeline_aquareport.xml", f"{PREFIX}.auxproducts.tgz",
                f"{OUS}.session_1.caltables.tgz", f"{OUS}.session_2.caltables.tgz",
                *(f"{v}.flagversions.tgz" for v in vises), *(f"{v}.calapply.txt" for v in vises)}
    assert expected <= names
    assert f"{OUS}.IRAS19250_sci.spw0_1.cont.IQUV.pbcor.fits" in names
    # The Stokes-I continuum image is suppressed by the IQUV one with the same key (PIPE-2465).
    assert f"{OUS}.IRAS19250_sci.spw0_1.cont.I.pbcor.fits" not in names
    assert f"{OUS}.J1924-2914_bp.spw0.mfs.I.pbcor.fits" in names and f"{OUS}.J1923-2904_ph.spw1.mfs.I.pb.fits" in names
    restore = (dag_run["products"] / f"{PREFIX}.casa_piperestorescript.py").read_text()
    assert "hifa_restoredata (vis=['uid___A002_Xf00d12_X1a2b', 'uid___A002_Xf00d12_X2c3d'], " \
           "session=['session_1', 'session_2'], ocorr_mode='ca')" in restore


def test_manifest_lists_exactly_what_was_exported(dag_run):
    products = dag_run["products"]
    root = xmlsafe.parse_file(products / f"{PREFIX}.pipeline_manifest.xml")
    ous = root.find("ous")
    assert root.get("name") == OUS and ous.get("name") == OUS
    listed = {el.get("name") for el in root.iter() if el.tag not in ("piperesults", "ous", "session", "asdm",
                                                                     "casaversion", "pipeline_version",
                                                                     "procedure_name", "aux_asdm")
              and el.get("name") not in (None, "Undefined")}
    assert listed == {p.name for p in products.iterdir()}
    sessions = [s.get("name") for s in ous.findall("session")]
    assert sessions == ["session_1", "session_2"]
    assert ous.find("manifest").get("ous") == PREFIX and ous.find("aqua_report").get("ous") == OUS
    for img in ous.findall("image"):
        if img.get("name").endswith("pbcor.fits"):
            assert img.get("datatype") == "pbcor" and img.get("bmaj") != "N/A" and img.get("ous") == OUS
        assert img.get("imtype") in ("calibrator", "target")
    targets = {i.get("name") for i in ous.findall("image") if i.get("imtype") == "target"}
    assert all("_sci." in t for t in targets)


def test_aqua_report_parses_and_lists_stages_and_exported_products(dag_run):
    products = dag_run["products"]
    aqua = xmlsafe.parse_file(products / f"{PREFIX}.pipeline_aquareport.xml")
    assert [c.tag for c in aqua] == ["ProjectStructure", "QaSummary", "QaPerStage", "QaPerTopic"]
    assert aqua.findtext("ProjectStructure/ProposalCode") == "2025.1.00123.S"
    assert aqua.findtext("ProjectStructure/ExecBlockId") == "uid://A002/Xf00d12/X1a2b, uid://A002/Xf00d12/X2c3d"
    stages = aqua.findall("QaPerStage/Stage")
    assert stages[-1].get("Name") == "hifa_exportdata"
    export = stages[-1].find("RepresentativeScore")
    assert export.get("Score") == "1.0" and export.get("Reason") == "All expected pipeline products have been exported"
    assert [t.tag for t in aqua.find("QaPerTopic")] == ["Dataset", "Flagging", "Calibration", "Imaging"]
    flux = aqua.findall("QaPerTopic/Calibration/FluxMeasurements/FluxMeasurements/FluxMeasurement")
    assert flux and all(abs(float(f.get("FluxJy")) - 0.8) < 0.05 for f in flux)   # truth: 0.8 Jy at 100 GHz
    sens = aqua.findall("QaPerTopic/Imaging/ImageSensitivity/ImageSensitivities/Sensitivity")
    assert sens and all(s.get("ImageName").endswith(".image.pbcor") for s in sens)
    # ... and it is inside the weblog tarball, beside the weblog's html.
    with tarfile.open(products / f"{PREFIX}.weblog.tgz") as tar:
        names = tar.getnames()
        member = next(n for n in names if n.endswith(f"html/{PREFIX}.pipeline_aquareport.xml"))
        assert tar.extractfile(member).read() == (products / f"{PREFIX}.pipeline_aquareport.xml").read_bytes()
    assert all(n.startswith("pipeline-20261120T100000/html") for n in names)


def test_flags_restored_from_the_export_equal_pipeline_final(dag_run, alma_tiny, tmp_path):
    from casaflow.alma import flags
    from casaflow.casarun import Casa

    casa = Casa(tmp_path, "test", tmp_path / "casa.log")
    for vis in alma_tiny["truth"]["vis"]:
        copy = tmp_path / vis
        shutil.copytree(alma_tiny["working"] / vis, copy)
        tb = casa.tool("table")
        tb.open(str(alma_tiny["working"] / f"{vis}.flagversions" / "flags.Pipeline_Final"))
        original = tb.getcol("FLAG")
        tb.close()
        casa.task("flagdata", vis=str(copy), mode="unflag", flagbackup=False)
        flags.restore_from_tarball(casa, dag_run["products"] / f"{vis}.flagversions.tgz", copy)
        tb.open(str(copy))
        assert np.array_equal(tb.getcol("FLAG"), original)
        tb.close()
        listing = (tmp_path / f"{vis}.flagversions" / "FLAG_VERSION_LIST").read_text()
        assert listing.splitlines()[0] == "Pipeline_Final : Final pipeline flags"


def test_every_calapply_line_is_an_applycal_that_runs(dag_run, alma_tiny, tmp_path, monkeypatch):
    from casaflow import safetar
    from casaflow.casarun import Casa

    casa = Casa(tmp_path, "test", tmp_path / "casa.log")
    for sess in ("session_1", "session_2"):
        safetar.extract(dag_run["products"] / f"{OUS}.{sess}.caltables.tgz", tmp_path)
    monkeypatch.chdir(tmp_path)
    for vis in alma_tiny["truth"]["vis"]:
        shutil.copytree(alma_tiny["working"] / vis, tmp_path / vis)
        lines = (dag_run["products"] / f"{vis}.calapply.txt").read_text().splitlines()
        assert lines[0] == f"# Apply file for {vis}"
        assert len(lines) == 4
        for line in lines[1:]:
            call = ast.parse(line, mode="eval").body
            assert call.func.id == "applycal"
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
            assert list(kwargs) == ["vis", "field", "intent", "spw", "antenna", "gaintable", "gainfield", "spwmap",
                                    "interp", "calwt"]
            casa.task("applycal", **kwargs, flagbackup=False)      # raises on failure or SEVERE
        tb = casa.tool("table")
        tb.open(vis)
        corrected = tb.getcol("CORRECTED_DATA")
        tb.close()
        tb.open(str(alma_tiny["working"] / vis))
        assert np.allclose(corrected, tb.getcol("CORRECTED_DATA"), atol=1e-5)
        tb.close()


def test_rerun_gives_identical_products(base_dir, alma_tiny):
    proc1, ws1 = export(base_dir, alma_tiny, "rerun")
    assert proc1.returncode == 0, proc1.stderr[-3000:]
    first = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (ws1 / "products").iterdir()}
    proc2, _ = run_worker("alma-exportdata", "--workspace", str(ws1), "--param", "working_dir=input/working"), ws1
    assert proc2.returncode == 0
    second = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (ws1 / "products").iterdir()}
    # The AQUA report carries its report date, and the weblog tarball carries the AQUA report.
    varying = {f"{PREFIX}.pipeline_aquareport.xml", f"{PREFIX}.weblog.tgz"}
    assert set(first) == set(second)
    assert {k: v for k, v in first.items() if k not in varying} == {k: v for k, v in second.items() if k not in varying}
    assert not [p for p in ws1.iterdir() if p.name.startswith(".products")]      # no staging left behind


@pytest.mark.parametrize("params, cal_types, has_calprods", [
    ({"calintents": "PHASE"}, {"_ph"}, True),
    ({"calintents": "*BAND*"}, {"_bp"}, True),
    ({"calintents": "PHASE,BANDPASS"}, {"_ph", "_bp"}, True),
    ({"imaging_products_only": True}, set(), False),
    ({"exportmses": True, "vis": ["uid___A002_Xf00d12_X1a2b.ms"]}, {"_ph", "_bp"}, False),   # vis ignored
])
def test_selection_parameters(base_dir, alma_tiny, params, cal_types, has_calprods):
    # (a path with '[' or '*' is one casacore's exportfits cannot write to)
    name = re.sub(r"[^A-Za-z0-9_-]", "", "sel-" + "-".join(f"{k}{v}" for k, v in params.items()))
    proc, ws = export(base_dir, alma_tiny, name, **params)
    assert proc.returncode == 0, proc.stderr[-3000:]
    products = ws / "products"
    names = {p.name for p in products.iterdir()}
    cal = [n for n in fits_names(products) if "_sci." not in n]
    assert {"_" + n.split("_")[-1].split(".")[0] for n in cal} == cal_types
    assert any("_sci." in n for n in fits_names(products))          # target images always
    assert any(n.endswith(".flagversions.tgz") for n in names) == has_calprods
    assert any(n.endswith(".calapply.txt") for n in names) == has_calprods
    assert any(n.endswith(".caltables.tgz") for n in names) == has_calprods
    assert (f"{PREFIX}.casa_piperestorescript.py" in names) == has_calprods
    mses = sorted(n for n in names if n.endswith(".ms.tgz"))
    if params.get("exportmses"):
        assert mses == sorted(f"{v}.tgz" for v in alma_tiny["truth"]["vis"] + alma_tiny["truth"]["targets_ms"])
        with tarfile.open(products / mses[0]) as tar:
            assert f"{mses[0].removesuffix('.tgz')}/table.dat" in tar.getnames()
    else:
        assert not mses
    manifest = xmlsafe.parse_file(products / f"{PREFIX}.pipeline_manifest.xml")
    listed = {el.get("name") for el in manifest.iter("image")}
    assert listed == set(fits_names(products))


def test_explicit_image_lists(base_dir, alma_tiny):
    cal = "uid___A001_X3d5e_X12.s12_0.J1924-2914_bp.spw1.mfs.I.iter1.image"
    tgt = "uid___A001_X3d5e_X12.s16_0.IRAS19250_sci.spw0.mfs.I.iter1.image.pbcor"
    proc, ws = export(base_dir, alma_tiny, "explicit", calimages=[cal], targetimages=[tgt])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert fits_names(ws / "products") == [f"{OUS}.IRAS19250_sci.spw0.mfs.I.pbcor.fits",
                                           f"{OUS}.J1924-2914_bp.spw1.mfs.I.fits"]
    with fits.open(ws / "products" / f"{OUS}.IRAS19250_sci.spw0.mfs.I.pbcor.fits") as hdul:
        assert hdul[0].data.shape[-2:] == (80, 80) and hdul[0].header["BUNIT"] == "Jy/beam"


def _tree_state(path):
    return sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*"))


@pytest.mark.parametrize("case, expect", [
    ("no-ms", "no MeasurementSet"),
    ("ppr-not-xml", "not well-formed XML"),
    ("ppr-entity", "DOCTYPE/entity"),
    ("calintent", "matches no calibrator intent"),
    ("products-file", "is not a directory"),
    ("missing-image", "not found"),
])
def test_bad_inputs_rejected_with_nothing_modified(base_dir, alma_tiny, tmp_path, case, expect):
    ws = tmp_path / "ws"
    working = ws / "input" / "working"
    working.mkdir(parents=True)
    params = {}
    if case == "no-ms":
        (working / "casa_commands.log").write_text("")
    elif case.startswith("ppr"):
        text = "this is not xml" if case == "ppr-not-xml" else \
            '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x "boom">]><SciPipeRequest>&x;</SciPipeRequest>'
        (working / "PPR_uid___A001_X1_X2.xml").write_text(text)
    else:
        shutil.rmtree(working)
        os.symlink(alma_tiny["working"], working)
        if case == "calintent":
            params["calintents"] = "PHASE,NOTANINTENT"
        elif case == "products-file":
            (ws / "products").write_text("a file")
        elif case == "missing-image":
            params["targetimages"] = ["no_such.image"]
    before = _tree_state(working.resolve())
    args = ["alma-exportdata", "--workspace", str(ws), "--param", "working_dir=input/working"]
    for k, v in params.items():
        args += ["--param", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    proc = run_worker(*args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failure_class"] == "input" and expect in result["message"], result["message"]
    assert _tree_state(working.resolve()) == before
    assert case == "products-file" or not (ws / "products").exists()
    assert not [p for p in ws.iterdir() if ".staging" in p.name]
