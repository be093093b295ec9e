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
from tests import alma_conformance

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
    assert "alma-exportdata" in page and "hif_makeimages" in page and "aqua_scores.png" in page
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
    assert f"{OUS}.IRAS19250_sci.spw0_1.cont.regcal.IQUV.pbcor.fits" in names
    # The Stokes-I continuum image is suppressed by the IQUV one with the same key (PIPE-2465)...
    assert f"{OUS}.IRAS19250_sci.spw0_1.cont.regcal.I.pbcor.fits" not in names
    # ... but not the self-calibrated one (the datatype is part of the key).
    assert f"{OUS}.IRAS19250_sci.spw0_1.cont.selfcal.I.tt0.pbcor.fits" in names
    assert f"{OUS}.J1924-2914_bp.spw0.mfs.regcal.I.pbcor.fits" in names
    assert f"{OUS}.J1923-2904_ph.spw1.mfs.regcal.I.pb.fits" in names
    restore = (dag_run["products"] / f"{PREFIX}.casa_piperestorescript.py").read_text()
    assert "hifa_restoredata (vis=['uid___A002_Xf00d12_X1a2b', 'uid___A002_Xf00d12_X2c3d'], " \
           "session=['session_1', 'session_2'], ocorr_mode='ca')" in restore


def test_every_image_exported_under_its_reference_fits_name(dag_run, alma_tiny):
    """Count and names from the simulation's truth (what it made, and the FITS names the archive
    expects for them): all intents, both datatypes, every specmode, .tt0/.tt1/.alpha, .pb,
    .mask, POLI/POLA; the check images of both EBs; nothing else."""
    truth = alma_tiny["truth"]["image_products"]
    expected = sorted(f for item in truth if item["exported"] for f in item["fits"])
    assert fits_names(dag_run["products"]) == expected
    assert len(expected) == 44
    for item in truth:
        if item["intent"] == "CHECK":
            assert item["exported"] and item["prefix"].startswith("uid___A002_")
    with fits.open(dag_run["products"] / f"{OUS}.J1924-2914_pol.spw0.mfs.regcal.POLI.fits") as hdul:
        assert hdul[0].data is not None and hdul[0].header["BUNIT"]


def test_manifest_and_aqua_report_conform_to_the_reference_table(dag_run):
    for name, document in ((f"{PREFIX}.pipeline_manifest.xml", "pipeline_manifest"),
                           (f"{PREFIX}.pipeline_aquareport.xml", "pipeline_aquareport")):
        assert alma_conformance.check((dag_run["products"] / name).read_bytes(), document) == []


def test_sessions_and_caltables_as_the_context_records_them(dag_run, alma_tiny):
    """The MSs carry no session; the context does (session_1, session_2): one caltables tarball
    per session holding that session's MS's caltables."""
    truth = alma_tiny["truth"]
    root = xmlsafe.parse_file(dag_run["products"] / f"{PREFIX}.pipeline_manifest.xml")
    got = {s.get("name"): [a.get("name") for a in s.findall("asdm")] for s in root.find("ous").findall("session")}
    assert got == {sess: [vis] for sess, vis in zip(truth["sessions"], truth["vis"])}
    for sess, vis in zip(truth["sessions"], truth["vis"]):
        with tarfile.open(dag_run["products"] / f"{OUS}.{sess}.caltables.tgz") as tar:
            assert sorted({n.split("/")[0] for n in tar.getnames()}) == sorted(truth["caltables"][vis])
    # per-EB (check source) images are listed at OUS level, as the reference lists them
    ous = root.find("ous")
    assert not ous.findall("session/asdm/image")
    per_eb = {i.get("name") for i in ous.findall("image") if i.get("name").startswith("uid___A002_")}
    assert len(per_eb) == 6


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


def test_aqua_report_holds_the_contexts_stages_scores_and_fluxes(dag_run, alma_tiny):
    truth = alma_tiny["truth"]
    products = dag_run["products"]
    aqua = xmlsafe.parse_file(products / f"{PREFIX}.pipeline_aquareport.xml")
    assert [c.tag for c in aqua] == ["ProjectStructure", "QaSummary", "QaPerStage", "QaPerTopic"]
    assert aqua.findtext("ProjectStructure/ProposalCode") == "2025.1.00123.S"
    assert aqua.findtext("ProjectStructure/ExecBlockId") == ", ".join(truth["ebs"])
    # the run's versions (its weblog), not casaflow's
    assert aqua.findtext("QaSummary/PipelineVersion") == "2025.1.0.36"
    stages = aqua.findall("QaPerStage/Stage")
    # the stages of the run, without the exporting stage itself (the reference builds the report
    # from the results before its own)
    assert [s.get("Number") for s in stages] == sorted(truth["stage_scores"], key=int)
    assert "hifa_exportdata" not in {s.get("Name") for s in stages}
    for st in stages:
        subs = [float(x.get("Score")) for x in st.findall("SubScore")]
        assert subs == truth["stage_scores"][st.get("Number")]          # unrounded, as the context holds them
        rep = st.find("RepresentativeScore").get("Score")
        assert rep == (str(min(subs)) if subs else "None")
    assert [t.tag for t in aqua.find("QaPerTopic")] == ["Dataset", "Flagging", "Calibration", "Imaging"]
    flux = aqua.findall("QaPerTopic/Calibration/FluxMeasurements/FluxMeasurement")
    assert [(f.get("Asdm"), int(f.get("MsSpwId")), float(f.get("FluxJy"))) for f in flux] == [
        (g["asdm"], g["spw"], round(g["flux_jy"], 6)) for g in truth["gfluxscale"]]
    assert all(abs(float(f.get("FluxJy")) - 0.8) < 0.05 for f in flux)   # the sky: 0.8 Jy at 100 GHz
    # one ImageSensitivities per hif_makeimages stage, and the imageprecheck's estimates in Dataset
    per_stage = aqua.findall("QaPerTopic/Imaging/ImageSensitivities")
    assert [p.get("StageNumber") for p in per_stage] == [s.get("Number") for s in stages
                                                         if s.get("Name") == "hif_makeimages"]
    sens = aqua.findall("QaPerTopic/Imaging/ImageSensitivities/Sensitivity")
    assert len(sens) == 6 and all(s.get("ImageName").endswith(".image.pbcor") for s in sens)
    assert aqua.findall("QaPerTopic/Dataset/SensitivityEstimates/Sensitivity")
    # ... and it is inside the weblog tarball where the weblog links it: html/pipeline_aquareport.xml
    with tarfile.open(products / f"{PREFIX}.weblog.tgz") as tar:
        names = tar.getnames()
        member = "pipeline-20261120T100000/html/pipeline_aquareport.xml"
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
    # the reference exports the calibrator images in every mode (_export_images is unconditional)
    ({"imaging_products_only": True}, {"_ph", "_bp", "_flux", "_pol", "_chk"}, False),
    ({"calintents": "POL*"}, {"_pol", "_pang", "_plk"}, True),
    ({"exportmses": True, "vis": ["uid___A002_Xf00d12_X1a2b.ms"]},                           # vis ignored
     {"_ph", "_bp", "_flux", "_pol", "_chk"}, False),
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


def test_session_parameter_matched_against_each_list_on_its_own(base_dir, alma_tiny):
    """``session`` is matched by position against the calibration MSs and, separately, against
    the imaging MSs (ExportData._make_lists / _get_sessions); the restore script gets it verbatim."""
    truth = alma_tiny["truth"]
    proc, ws = export(base_dir, alma_tiny, "sessions", session=["sX", "sY", "sZ"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    products = ws / "products"
    root = xmlsafe.parse_file(products / f"{PREFIX}.pipeline_manifest.xml")
    got = {s.get("name"): [a.get("name") for a in s.findall("asdm")] for s in root.find("ous").findall("session")}
    assert got == {"sX": [truth["vis"][0]], "sY": [truth["vis"][1]]}
    assert {f"{OUS}.sX.caltables.tgz", f"{OUS}.sY.caltables.tgz"} <= {p.name for p in products.iterdir()}
    restore = (products / f"{PREFIX}.casa_piperestorescript.py").read_text()
    assert "session=['sX', 'sY', 'sZ'], ocorr_mode='ca')" in restore
    sessions = json.loads((ws / "results" / "alma-exportdata.json").read_text())["outputs"]["sessions"]
    assert [sessions[v] for v in truth["targets_ms"]] == ["sX", "sY"][:len(truth["targets_ms"])]


def test_explicit_image_lists(base_dir, alma_tiny):
    roots = alma_tiny["truth"]["images"]
    cal = next(r for r in roots if "J1924-2914_bp.spw1." in r) + ".image"
    tgt = next(r for r in roots if "IRAS19250_sci.spw0.mfs." in r) + ".image.pbcor"
    proc, ws = export(base_dir, alma_tiny, "explicit", calimages=[cal], targetimages=[tgt])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert fits_names(ws / "products") == [f"{OUS}.IRAS19250_sci.spw0.mfs.regcal.I.pbcor.fits",
                                           f"{OUS}.J1924-2914_bp.spw1.mfs.regcal.I.fits"]
    with fits.open(ws / "products" / f"{OUS}.IRAS19250_sci.spw0.mfs.regcal.I.pbcor.fits") as hdul:
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


def test_old_naming_fixture_exports_and_warns(base_dir, alma_tiny):
    """A run from before PIPE-1710 without a context: images found by their old names, the
    fallback QA record used and warned about, the image that matches no rule warned about by
    name in the task log, result.json and the weblog."""
    from casaflow import weblog

    old = alma_tiny["truth"]["old_naming"]
    ws = base_dir / "alma-export" / "old-naming"
    shutil.rmtree(ws, ignore_errors=True)
    (ws / "input").mkdir(parents=True)
    os.symlink(alma_tiny["dir"] / old["working"], ws / "input" / "working")
    proc = run_worker("alma-exportdata", "--workspace", str(ws), "--param", "working_dir=input/working")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert fits_names(ws / "products") == old["expected_fits"]
    result = json.loads((ws / "results" / "alma-exportdata.json").read_text())
    warnings = result["warnings"]
    assert old["unmatched"] and all(any(name in w and "matches no image naming rule" in w for w in warnings)
                                    for name in old["unmatched"])
    assert any("pipeline_qa.json" in w and "no pipeline context" in w for w in warnings)
    assert any("session_1" in w for w in warnings)          # no context: sessions not known
    assert all(name in proc.stderr for name in old["unmatched"])          # the task log
    page = weblog.render(ws, "old naming").read_text()
    assert all(name in page for name in old["unmatched"])
    aqua = xmlsafe.parse_file(ws / "products" / f"{PREFIX}.pipeline_aquareport.xml")
    stage_scores = alma_tiny["truth"]["stage_scores"]
    for st in aqua.findall("QaPerStage/Stage"):
        assert [float(x.get("Score")) for x in st.findall("SubScore")] == stage_scores[st.get("Number")]


def test_hostile_context_is_refused_without_running_anything(base_dir, alma_tiny, tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    ws = tmp_path / "ws"
    working = ws / "input" / "working"
    working.mkdir(parents=True)
    for p in alma_tiny["working"].iterdir():
        if not p.name.endswith(".context"):
            os.symlink(p, working / p.name)
    (working / "pipeline-20261120T100000.context").write_bytes(pickle.dumps(Hostile()))
    proc = run_worker("alma-exportdata", "--workspace", str(ws), "--param", "working_dir=input/working")
    assert proc.returncode == 2, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failure_class"] == "input"
    assert "pipeline-20261120T100000.context: not a pipeline context" in result["message"]
    assert not marker.exists() and not (ws / "products").exists()
