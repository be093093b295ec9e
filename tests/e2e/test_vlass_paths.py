"""The production code paths on the "paths" simulated data, stage by stage through the worker CLI
(issue 17, items 2 and 5): 1.08 deg images (the 1 deg + 2' cut-out is cut), 16 pointings with one
spw group flagged in 13 of them (the pre-imaging nfield rule skips it), one group without its long
baselines (its beam fails the post-imaging rule: VLASSRJ=T). The science is asserted as for the
tiny data; the keywords, comments, .com headers, weblog layout and manifest as the reference's
code writes them (exportvlassdata.py, imaging.get_vlass_image_type, makecutoutimages.py).
"""

from __future__ import annotations

import json
import shutil
import tarfile
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
from astropy.io import fits

from .conftest import run_worker, vlass_dataset

pytestmark = [pytest.mark.casa, pytest.mark.e2e]

OUS = "uid___A001_X1_Xpaths"


@pytest.fixture(scope="module")
def vlass_paths():
    return vlass_dataset("sim-vlass-paths", "paths")


def _ok(*args):
    proc = run_worker(*args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run(vlass_paths, tmp_path_factory):
    ws = tmp_path_factory.mktemp("vlass-paths")
    for name in ("SEIP_parameter.list", "CCIP_parameter.list", "reimaging_resources.tgz"):
        shutil.copyfile(vlass_paths["dir"] / name, ws / name)
    pims = vlass_paths["pims"].name
    (ws / pims).symlink_to(vlass_paths["pims"])
    w = ["--workspace", str(ws)]
    for args in (["vlass-importdata", "--param", f"vis={pims}"],
                 ["vlass-editimlist-seip", "--param", "parameter_list=SEIP_parameter.list"],
                 ["vlass-transformimagedata"], ["vlass-restorepims"], ["vlass-flagtargetsdata"],
                 ["vlass-editimlist-cube", "--param", "parameter_list=CCIP_parameter.list"]):
        _ok(*args, *w)
    cube = json.loads((ws / "results" / "vlass-editimlist-cube.json").read_text())
    for t in cube["outputs"]["targets"]:
        g = ["--param", f"group={json.dumps(t['group'])}", "--tag", t["tag"]]
        _ok("vlass-makeimages", *w, *g, "--param", 'tclean_overrides={"niter": 0}')
        for st in ("vlass-pbcor", "vlass-makermsimages", "vlass-makecutoutimages"):
            _ok(st, *w, *g)
    for args in (["vlass-planes"], ["vlass-analyzestokescubes"],
                 ["vlass-exportvlassdata", "--param", f"ous={OUS}"], ["vlass-weblog"]):
        _ok(*args, *w)
    return {"ws": ws, "cube": cube}


def _result(run, stage):
    return json.loads((run["ws"] / "results" / f"{stage}.json").read_text())


def _plane_fits(run):
    return sorted(p for p in (run["ws"] / "products").glob("*.fits") if ".com." not in p.name)


def test_mostly_flagged_group_skipped_by_the_pre_imaging_rule(run, vlass_paths):
    truth = vlass_paths["truth"]
    g = truth["mostly_flagged_group"]
    assert len(truth["fields"]) >= 12 and len(truth["mostly_flagged_fields"]) >= 12
    res = run["cube"]
    assert res["outputs"]["skipped"] == [g]
    stats = json.loads((run["ws"] / "context" / "cube_targets.json").read_text())["stats"]
    # not the 100 %-flagged rule: the group still has data, in the pointings left unflagged
    assert stats["flagpct_spwgroup"][g] < 1.0
    assert stats["nfield_above_flagpct"][g] == len(truth["mostly_flagged_fields"])
    assert any(f"spw=['{g}'] meets the plane rejection criteria" in w for w in res["warnings"]), res["warnings"]


def test_cutouts_are_one_degree_plus_two_arcmin(run, vlass_paths):
    pv = vlass_paths["truth"]["preset_values"]
    assert pv["imsize"] * pv["cell_arcsec"] / 3600 > 1.0 + 2 / 60
    n = int(Decimal(str(3600 * (1 + 2 / 60) / pv["cell_arcsec"])).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert n < pv["imsize"]
    fits_files = _plane_fits(run)
    assert fits_files
    for path in fits_files:
        hdr = fits.getheader(path)
        assert (hdr["NAXIS1"], hdr["NAXIS2"]) == (n, n), path.name
        assert abs(hdr["CDELT1"]) * 3600 == pytest.approx(pv["cell_arcsec"])
    boxes = [json.loads(p.read_text())["box"] for p in (run["ws"] / "context").glob("cutout.*.json")]
    lo, hi = pv["imsize"] // 2 - n / 2, pv["imsize"] // 2 + n / 2 - 1
    assert boxes and all(b == f"{lo},{lo},{hi},{hi}" for b in boxes)


def test_wide_beam_plane_rejected_after_imaging(run, vlass_paths):
    g = vlass_paths["truth"]["beam_rejected_group"]
    out = _result(run, "vlass-planes")["outputs"]
    assert out["rejected"] == [g] and g not in out["kept"] and out["kept"]
    suffix = "spw" + g.replace(",", "_")
    for path in _plane_fits(run):
        assert fits.getheader(path)["VLASSRJ"] is (f".{suffix}." in path.name), path.name
    planes = json.loads((run["ws"] / "context" / "planes.json").read_text())["planes"]
    dev = {p["group"]: p["beam_dev"] for p in planes}
    assert dev[g] > 0.2 and all(v < 0.2 for k, v in dev.items() if k != g)


def test_science_frequency_beam_flux_and_polarisation(run, vlass_paths):
    truth = vlass_paths["truth"]
    spw_mean = {s["id"]: s["mean_hz"] for s in truth["spws"]}
    src = max(truth["sources"], key=lambda s: s["i_jy"])
    imaged = [t["group"] for t in run["cube"]["outputs"]["targets"]]
    seen = set()
    for path in _plane_fits(run):
        group = next(g for g in imaged if f".spw{g.replace(',', '_')}." in path.name)
        with fits.open(path) as hdul:
            data, hdr = hdul[0].data, hdul[0].header
            assert hdr["CRVAL3"] == pytest.approx(np.mean([spw_mean[int(s)] for s in group.split(",")]), rel=1e-9)
            beams = hdul["BEAMS"].data if "BEAMS" in hdul else None
        if beams is not None:
            assert np.all(beams["BMAJ"] > 0) and np.all(beams["BMIN"] > 0)
        else:
            assert hdr["BMAJ"] > 0 and hdr["BMIN"] > 0
        if ".IQU." not in path.name or ".rms." in path.name:
            continue
        seen.add(group)
        x, y = int(round(hdr["CRPIX1"] - 1)), int(round(hdr["CRPIX2"] - 1))
        i, q, u = (float(data[k, 0, y, x]) for k in range(3))
        expected_i = src["i_jy"] * (hdr["CRVAL3"] / src["ref_freq_hz"]) ** src["alpha"]
        assert i == pytest.approx(expected_i, rel=0.15), path.name
        assert q / i == pytest.approx(src["q_jy"] / src["i_jy"], abs=0.03), path.name
        assert u / i == pytest.approx(src["u_jy"] / src["i_jy"], abs=0.03), path.name
    assert seen == set(imaged)


def test_keywords_and_comments_as_the_reference(run):
    for path in _plane_fits(run):
        hdr = fits.getheader(path)
        kind = "RMS_TT0" if ".rms." in path.name else "INTENSITY_PBCOR_TT0"
        assert hdr["VLASSITY"] == kind, path.name
        assert hdr.comments["VLASSRMS"] == "Median rms calculated from RMS_TT0 (I)"
        assert hdr.comments["VLASSPK"] == "Peak flux density of INTENSITY_PBCOR_TT0 (I)"
        assert hdr.comments["VLASSITY"] == "VLASS image type"


def test_com_fits_have_the_header_fix_and_comments(run):
    coms = sorted((run["ws"] / "products").glob("*.com.fits"))
    assert coms and len(coms) == 2 * len(run["cube"]["outputs"]["targets"])
    for path in coms:
        hdr = fits.getheader(path)
        plane = fits.getheader(path.with_name(path.name.replace(".com.fits", ".fits")))
        assert hdr["DATE-OBS"] == plane["DATE-OBS"] and hdr["DATE-END"] == plane["DATE-END"]
        assert hdr.comments["DATE-END"] == "Last scan finished" and hdr["RADESYS"].strip() == "ICRS"
        assert hdr["OBJECT"] == path.name.split(".")[4]
        assert hdr["VLASSPK"] == pytest.approx(plane["VLASSPK"]) and hdr["VLASSRMS"] == pytest.approx(plane["VLASSRMS"])
        assert hdr.comments["VLASSPK"] == "Peak flux density of INTENSITY_PBCOR_TT0 (I)"


def test_weblog_tarball_and_manifest_ous(run):
    from casaflow import xmlsafe

    with tarfile.open(run["ws"] / "products" / "weblog.tgz") as tar:
        names = tar.getnames()
    tops = {n.split("/")[0] for n in names}
    assert len(tops) == 1 and next(iter(tops)).startswith("pipeline-")
    assert f"{next(iter(tops))}/html/index.html" in names
    assert any(n.startswith(f"{next(iter(tops))}/html/thumbs/") and n.endswith(".png") for n in names)
    root = xmlsafe.parse_file(run["ws"] / "products" / "pipeline_manifest.xml", "manifest")
    assert root.get("name") == OUS and root.find("ous").get("name") == OUS
    assert root.find("ous/weblog").get("ous") == OUS and root.find("ous/casa_cmdlog").get("ous") == OUS
    assert "unknown" not in (run["ws"] / "products" / "pipeline_manifest.xml").read_text()


def test_bad_ous_refused(run):
    proc = run_worker("vlass-exportvlassdata", "--workspace", str(run["ws"]), "--param", "ous=<x>", "--tag", "bad")
    assert proc.returncode != 0 and "parameter 'ous'" in proc.stdout + proc.stderr
