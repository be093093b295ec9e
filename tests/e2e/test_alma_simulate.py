"""The simulated ALMA working directory and manual-reduction trees, checked with casatools."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytestmark = [pytest.mark.casa]


@pytest.fixture(scope="module")
def ct():
    from casaflow.casaenv import import_casa

    return import_casa()[0]


def test_working_dir_mses_have_intents_spws_and_pols_and_no_session_in_the_ms(alma_tiny, ct):
    truth, working = alma_tiny["truth"], alma_tiny["working"]
    assert len(truth["vis"]) == 2
    for k, vis in enumerate(truth["vis"]):
        msmd = ct.msmetadata()
        msmd.open(str(working / vis))
        try:
            intents = set(msmd.intents())
            assert {"CALIBRATE_BANDPASS#ON_SOURCE", "CALIBRATE_FLUX#ON_SOURCE", "CALIBRATE_PHASE#ON_SOURCE",
                    "OBSERVE_TARGET#ON_SOURCE"} <= intents
            schedule = list(msmd.schedule(0))
            # an ALMA MS records its execution block; the session is only in the pipeline context
            assert f"ExecBlock {truth['ebs'][k]}" in schedule and not any(e.startswith("Session") for e in schedule)
            for spw in truth["spws"]:
                freqs = msmd.chanfreqs(spw["id"])
                assert len(freqs) == truth["preset_values"]["nchan"]
                assert freqs[0] - msmd.chanwidths(spw["id"])[0] / 2 == pytest.approx(spw["start_hz"], rel=1e-9)
        finally:
            msmd.close()
        tb = ct.table()
        tb.open(str(working / vis / "POLARIZATION"))
        assert list(tb.getcell("CORR_TYPE", 0)) == [9, 10, 11, 12]      # XX XY YX YY
        tb.close()


def test_caltables_are_real_and_applied(alma_tiny, ct):
    working, truth = alma_tiny["working"], alma_tiny["truth"]
    for vis, tables in truth["caltables"].items():
        for t in tables:
            tb = ct.table()
            tb.open(str(working / t))
            assert tb.info()["type"] == "Calibration"
            assert tb.nrows() > 0
            tb.close()
        tb = ct.table()
        tb.open(str(working / vis))
        assert "CORRECTED_DATA" in tb.colnames()
        tb.close()


def test_pipeline_final_flag_version_restores_the_recorded_flags(alma_tiny, ct, tmp_path):
    from casaflow.casaenv import import_casa

    tasks = import_casa()[1]
    vis = alma_tiny["truth"]["vis"][0]
    copy = tmp_path / vis
    shutil.copytree(alma_tiny["working"] / vis, copy)
    shutil.copytree(alma_tiny["working"] / f"{vis}.flagversions", tmp_path / f"{vis}.flagversions")
    tb = ct.table()
    tb.open(str(copy))
    final = tb.getcol("FLAG")
    tb.close()
    assert 0 < final.mean() < 0.5
    tasks.flagdata(vis=str(copy), mode="unflag", flagbackup=False)
    tasks.flagmanager(vis=str(copy), mode="restore", versionname="Pipeline_Final")
    tb.open(str(copy))
    assert np.array_equal(tb.getcol("FLAG"), final)
    tb.close()


def test_images_carry_beams_and_recover_the_target_flux(alma_tiny, ct):
    working, truth = alma_tiny["working"], alma_tiny["truth"]
    target = next(s for s in truth["sources"] if s["name"] == "IRAS19250")
    for root in truth["images"]:
        tt = ".tt0" if ".selfcal." in root else ""
        for ext in (f"image{tt}", f"image{tt}.pbcor", f"pb{tt}", "mask"):
            assert (working / f"{root}.{ext}").is_dir(), f"{root}.{ext}"
        ia = ct.image()
        ia.open(str(working / f"{root}.image{tt}"))
        beam = ia.restoringbeam()
        beam = beam["beams"]["*0"]["*0"] if "beams" in beam else beam
        assert beam["major"]["value"] > 0
        ia.close()
    cont = next(r for r in truth["images"] if "_sci." in r and ".cont.regcal.IQUV." in r)
    ia = ct.image()
    ia.open(str(working / f"{cont}.image.pbcor"))
    peak_i = ia.getchunk()[..., 0, 0].max()
    ia.close()
    mean_freq = np.mean([s["start_hz"] + s["width_hz"] / 2 for s in truth["spws"]])
    expected = target["i_jy"] * (mean_freq / target["ref_freq_hz"]) ** target["alpha"]
    assert peak_i == pytest.approx(expected, rel=0.1)


def test_working_dir_has_ppr_commands_weblog_and_qa_record(alma_tiny):
    working = alma_tiny["working"]
    oussid = alma_tiny["truth"]["oussid"]
    assert (working / f"PPR_{oussid}.xml").is_file()
    log = (working / "casa_commands.log").read_text()
    assert log.count("applycal(") == 6 and "bandpass(" in log and "setjy(" in log
    assert list(working.glob("pipeline-*/html/index.html"))
    # a real run leaves its context, not casaflow's fallback QA record
    assert (working / alma_tiny["truth"]["context"]).is_file() and not (working / "pipeline_qa.json").exists()
    assert len(list(working.glob("pipeline-*/saved_state/result-stage*.pickle"))) == \
        len(alma_tiny["truth"]["stage_scores"])


def test_images_carry_the_current_names_of_every_intent_and_both_datatypes(alma_tiny):
    """Names as the current reference writes them: the datatype part after the specmode and the
    intent codes of filenamer._known_intents (written out here, not taken from casaflow)."""
    import re

    pattern = re.compile(r"^(uid___A001_X3d5e_X12|uid___A002_Xf00d12_X[0-9a-f]+)\.s\d+_0\.[A-Za-z0-9+-]+_"
                         r"(bp|ph|flux|sci|chk|pol|pang|plk)\.spw[0-9_]+\.(mfs|cont|cube)\.(regcal|selfcal)\."
                         r"(I|IQUV)\.iter1$")
    roots = alma_tiny["truth"]["images"]
    assert all(pattern.match(r) for r in roots), [r for r in roots if not pattern.match(r)]
    codes = {pattern.match(r).group(2) for r in roots}
    assert codes == {"bp", "ph", "flux", "sci", "chk", "pol", "pang", "plk"}
    assert {pattern.match(r).group(4) for r in roots} == {"regcal", "selfcal"}
    assert {pattern.match(r).group(3) for r in roots} == {"mfs", "cont", "cube"}
    working = alma_tiny["working"]
    pol = next(r for r in roots if "_pol." in r)
    assert (working / f"{pol}.image".replace(".IQUV.", ".POLI.")).is_dir()
    assert (working / f"{pol}.image".replace(".IQUV.", ".POLA.")).is_dir()
    mt = next(r for r in roots if ".selfcal." in r)
    assert all((working / f"{mt}.{e}").is_dir() for e in ("image.tt0", "image.tt1", "alpha", "alpha.error", "pb.tt0"))


@pytest.mark.parametrize("shape, n_exec", [("multi", 2), ("single", 1)])
def test_manual_tree_shapes(manual_trees, ct, shape, n_exec):
    sb = manual_trees[shape]
    xdirs = sorted(d for d in sb.iterdir() if d.is_dir() and d.name.startswith("X"))
    assert len(xdirs) == n_exec
    assert (sb / "Combined").is_dir() == (shape == "multi")
    for x in xdirs:
        uid = next(x.glob("*.ms.split")).name.removesuffix(".ms.split")
        for name in (f"{uid}.ms.scriptForCalibration.py", "checklist.txt", "qa2/qa2_part1.png", "qa2/textfile.txt",
                     f"{uid}.ms.split.bandpass.plots"):
            assert (x / name).exists(), name
        tb = ct.table()
        tb.open(str(x / f"{uid}.ms.split"))
        assert "CORRECTED_DATA" in tb.colnames()
        tb.close()
        tb.open(str(x / f"{uid}.ms.split.cal"))
        assert "CORRECTED_DATA" not in tb.colnames()
        tb.close()
        tb.open(str(x / f"{uid}.ms.split.bandpass"))
        assert tb.info()["type"] == "Calibration"
        tb.close()
