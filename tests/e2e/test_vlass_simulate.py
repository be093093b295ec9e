"""The simulated VLASS PIMS and its continuum-run resources, checked with casatools, and a dirty
image of it against the truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from casaflow import safetar

pytestmark = [pytest.mark.casa]


@pytest.fixture(scope="module")
def casa(tmp_path_factory):
    from casaflow.casarun import Casa

    ws = tmp_path_factory.mktemp("vlass-sim-check")
    return Casa(ws, "test", ws / "casa.log")


def test_pims_spws_polarisations_intents_and_fields(vlass_tiny, casa):
    truth, pims = vlass_tiny["truth"], vlass_tiny["pims"]
    msmd = casa.tool("msmetadata")
    msmd.open(str(pims))
    try:
        assert set(msmd.intents()) == {"OBSERVE_TARGET#UNSPECIFIED"}
        assert list(msmd.fieldnames()) == truth["fields"]
        for spw in truth["spws"]:
            freqs = msmd.chanfreqs(spw["id"])
            assert len(freqs) == spw["nchan"]
            assert np.mean(freqs) == pytest.approx(spw["mean_hz"], rel=1e-9)
            assert 2e9 <= freqs.min() and freqs.max() <= 4e9
    finally:
        msmd.close()
    tb = casa.tool("table")
    tb.open(str(pims / "POLARIZATION"))
    assert list(tb.getcell("CORR_TYPE", 0)) == [5, 6, 7, 8]            # RR RL LR LL
    tb.close()


def test_tarball_holds_exactly_the_restore_members(vlass_tiny):
    res = vlass_tiny["truth"]["resources"]
    se_vis = vlass_tiny["truth"]["se_vis"]
    tops = {m.name.split("/")[0] for m in safetar.list_members(vlass_tiny["resources"])}
    model = res["selfcal_table"].split(".hifv_selfcal")[0]
    assert model == se_vis
    expected = {f"{se_vis}.flagversions", res["selfcal_table"], res["tier1_mask"], res["tier2_mask"]}
    models = {t for t in tops if t.endswith((".model.tt0", ".model.tt1"))}
    assert tops == expected | models and len(models) == 2


def test_statwt_1_restores_the_recorded_flags_and_selfcal_table_is_a_caltable(vlass_tiny, casa, tmp_path,
                                                                            monkeypatch):
    from casaflow.vlass.transform import split_for_imaging

    truth = vlass_tiny["truth"]
    monkeypatch.chdir(tmp_path)
    split_for_imaging(casa, str(vlass_tiny["pims"]), truth["se_vis"])    # then the resources, as restorepims
    safetar.extract(vlass_tiny["resources"], tmp_path)
    tb = casa.tool("table")
    tb.open(str(tmp_path / truth["resources"]["flag_version"]))
    recorded = tb.getcol("FLAG")
    tb.close()
    casa.task("flagmanager", vis=truth["se_vis"], mode="restore", versionname="statwt_1")
    tb.open(truth["se_vis"])
    flags, ddid = tb.getcol("FLAG"), tb.getcol("DATA_DESC_ID")
    tb.close()
    assert np.array_equal(flags, recorded)
    tb.open(f"{truth['se_vis']}/DATA_DESCRIPTION")
    spw_of_ddid = tb.getcol("SPECTRAL_WINDOW_ID")
    tb.close()
    spw = spw_of_ddid[ddid]
    flagged_rows = np.zeros(len(spw), bool)
    for group in truth["flagged_groups"]:
        flagged_rows |= np.isin(spw, [int(s) for s in group.split(",")])
    assert flags[:, :, flagged_rows].all()                  # the group the continuum run flagged
    assert 0 < flags[:, :, ~flagged_rows].mean() < 0.1      # and its antenna/scan flags elsewhere
    tb.open(truth["resources"]["selfcal_table"])
    assert tb.info()["type"] == "Calibration" and tb.nrows() > 0
    gains = tb.getcol("CPARAM")
    tb.close()
    assert np.allclose(np.abs(gains[~np.isclose(gains, 0)]), 1.0, atol=1e-3)     # phase-only


def test_dirty_image_recovers_the_brightest_source(vlass_tiny, casa, tmp_path, monkeypatch):
    truth = vlass_tiny["truth"]
    monkeypatch.chdir(tmp_path)
    preset = truth["preset_values"]
    src = max(truth["sources"], key=lambda s: s["i_jy"])
    used = [s for s in truth["spws"] if not any(str(s["id"]) in g.split(",") for g in truth["flagged_groups"])]
    spw = ",".join(str(s["id"]) for s in used)
    casa.task("tclean", vis=str(vlass_tiny["pims"]), imagename="dirty", spw=spw, datacolumn="data", specmode="mfs",
              gridder="mosaic", stokes="IQUV", imsize=[preset["imsize"]] * 2, cell=f"{preset['cell_arcsec']}arcsec",
              phasecenter=truth["phasecenter"], niter=0, pbcor=True, weighting="natural", parallel=False)
    ia = casa.tool("image")
    ia.open("dirty.image.pbcor")
    cs = ia.coordsys()
    world = cs.toworld([0, 0, 0, 0], format="n")["numeric"]
    world[0], world[1] = math.radians(src["ra_deg"]), math.radians(src["dec_deg"])
    px = [int(round(v)) for v in cs.topixel(world)["numeric"][:2]]
    iquv = ia.getchunk()[px[0], px[1], :, 0]
    freq = cs.toworld([0, 0, 0, 0], format="n")["numeric"][3]
    ia.close()
    expected_i = src["i_jy"] * (freq / src["ref_freq_hz"]) ** src["alpha"]
    assert iquv[0] == pytest.approx(expected_i, rel=0.10)
    assert iquv[1] / iquv[0] == pytest.approx(src["q_jy"] / src["i_jy"], abs=0.02)
    assert iquv[2] / iquv[0] == pytest.approx(src["u_jy"] / src["i_jy"], abs=0.02)
