"""VLASS-SE-CUBE end to end through dag.test(), local mode, on the tiny simulated data.

Asserts science against the simulation truth, not just files: one IQU/V pair per imaged group,
header frequency = group mean, beams on every plane, the brightest source's I and fractional
Q/U, per-plane position correction, the skipped group and its warning, the pipeline manifest,
and every pushed object's SHA-256 against the delivery manifest (moto's S3 server over HTTP).
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from astropy.io import fits

from hooks import delivery

from .conftest import load_dag, vlass_conf, workspace_of

pytestmark = [pytest.mark.casa, pytest.mark.e2e]


@pytest.fixture(scope="module")
def good_run(airflow_db, vlass_tiny, s3_bucket_module, base_dir):
    client, bucket = s3_bucket_module
    dag = load_dag("vlass_se_cube")
    dr = dag.test(run_conf=vlass_conf(vlass_tiny, dataset_id="tiny-ok", products_destination=f"s3://{bucket}/vlass"))
    states = {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}
    return {"dr": dr, "states": states, "ws": workspace_of(base_dir, "vlass_se_cube", dr),
            "client": client, "bucket": bucket}


def test_run_succeeds_with_one_mapped_instance_per_group(good_run, vlass_tiny):
    assert good_run["dr"].state == "success", good_run["states"]
    truth = vlass_tiny["truth"]
    imaged = [g for g in truth["groups"] if g not in truth["flagged_groups"]]
    mapped = sorted(i for (t, i) in good_run["states"] if t == "plane.makeimages")
    assert mapped == list(range(len(imaged)))
    assert all(s == "success" for s in good_run["states"].values()), good_run["states"]


def _fits(ws):
    return sorted((ws / "products").glob("*.fits"))


def test_one_fits_pair_per_unflagged_group_with_group_frequency(good_run, vlass_tiny):
    truth = vlass_tiny["truth"]
    spw_mean = {s["id"]: s["mean_hz"] for s in truth["spws"]}
    names = [p.name for p in _fits(good_run["ws"]) if ".com." not in p.name]
    for g in truth["groups"]:
        suffix = "spw" + g.replace(",", "_")
        mine = [n for n in names if f".{suffix}." in n]
        if g in truth["flagged_groups"]:
            assert mine == []
            continue
        assert sorted(mine) == sorted(f"{truth['se_imagename']}.{suffix}.{s}.iter3.image.pbcor.tt0{r}.subim.fits"
                                      for s in ("IQU", "V") for r in ("", ".rms"))
        expected = np.mean([spw_mean[int(s)] for s in g.split(",")])
        for n in mine:
            hdr = fits.getheader(good_run["ws"] / "products" / n)
            assert hdr["CTYPE3"] == "FREQ" and hdr["CRVAL3"] == pytest.approx(expected, rel=1e-9)


def test_beam_on_every_plane(good_run):
    for path in _fits(good_run["ws"]):
        with fits.open(path) as hdul:
            nplanes = hdul[0].header.get("NAXIS4", 1) * hdul[0].header.get("NAXIS3", 1)
            if "BEAMS" in hdul:
                beams = hdul["BEAMS"].data
                assert len(beams) == nplanes and np.all(beams["BMAJ"] > 0) and np.all(beams["BMIN"] > 0)
            else:
                assert hdul[0].header["BMAJ"] > 0 and hdul[0].header["BMIN"] > 0, path.name


def test_brightest_source_matches_truth(good_run, vlass_tiny):
    truth = vlass_tiny["truth"]
    src = max(truth["sources"], key=lambda s: s["i_jy"])
    for path in _fits(good_run["ws"]):
        if ".IQU." not in path.name or ".rms." in path.name or ".com." in path.name:
            continue
        with fits.open(path) as hdul:
            data, hdr = hdul[0].data, hdul[0].header
        x = int(round(hdr["CRPIX1"] - 1)); y = int(round(hdr["CRPIX2"] - 1))
        i, q, u = (float(data[k, 0, y, x]) for k in range(3))   # (stokes, freq, y, x)
        expected_i = src["i_jy"] * (hdr["CRVAL3"] / src["ref_freq_hz"]) ** src["alpha"]
        assert i == pytest.approx(expected_i, rel=0.10), path.name
        assert q / i == pytest.approx(src["q_jy"] / src["i_jy"], abs=0.02), path.name
        assert u / i == pytest.approx(src["u_jy"] / src["i_jy"], abs=0.02), path.name


def test_position_correction_per_plane(good_run, vlass_tiny):
    truth = vlass_tiny["truth"]
    ra0, dec0 = truth["phasecenter_deg"]
    shifts = {}
    for path in _fits(good_run["ws"]):
        if ".com." in path.name:
            continue
        hdr = fits.getheader(path)
        history = [str(h) for h in hdr["HISTORY"]]
        assert history[-1].startswith("Position correction (") and history[-1].endswith("arcsec applied")
        assert hdr["ZD"] > 0 and hdr["TELMJD"] > 59000
        shift = math.hypot((hdr["CRVAL1"] - ra0) * math.cos(math.radians(dec0)), hdr["CRVAL2"] - dec0) * 3600
        shifts[hdr["CRVAL3"]] = shift
    freqs = sorted(shifts)
    assert len(freqs) >= 2 and all(s > 0 for s in shifts.values())
    # Delta scales as nu^-2: lower frequency planes move further.
    assert shifts[freqs[0]] / shifts[freqs[-1]] == pytest.approx((freqs[-1] / freqs[0]) ** 2, rel=0.02)


def test_skipped_group_warned(good_run, vlass_tiny):
    flagged = vlass_tiny["truth"]["flagged_groups"][0]
    res = json.loads((good_run["ws"] / "results" / "vlass-editimlist-cube.json").read_text())
    assert any(f"spw={flagged} is 100.0% flagged" in w for w in res["warnings"])
    assert flagged in res["outputs"]["skipped"]
    html = (good_run["ws"] / "weblog" / "index.html").read_text()
    assert f"VLASS Data for spw={flagged} is 100.0% flagged" in html


def test_pipeline_manifest_lists_exactly_the_exports(good_run):
    from casaflow import xmlsafe

    ws = good_run["ws"]
    root = xmlsafe.parse_file(ws / "products" / "pipeline_manifest.xml")
    listed = sorted(e.get("name").split("/")[-1] for e in root.iter("image"))
    exported = sorted(p.name for p in _fits(ws) if ".com." not in p.name)
    assert listed == exported
    assert sorted(e.get("name") for e in root.iter("parameter_list")) == ["CCIP_parameter.list", "SEIP_parameter.list"]
    assert root.find("ous/procedure_name").get("name") == "hifv_vlassCCIP"


def test_every_pushed_object_matches_the_delivery_manifest(good_run):
    client, bucket = good_run["client"], good_run["bucket"]
    body = client.get_object(Bucket=bucket, Key="vlass/tiny-ok/delivery_manifest.xml")["Body"].read()
    head, entries = delivery.parse_manifest(body)
    assert head["dataset"] == "tiny-ok" and head["run"]["dag_id"] == "vlass_se_cube"
    keys = {e.key for e in entries}
    local = {p.name for p in (good_run["ws"] / "products").iterdir() if p.is_file()}
    assert keys == local and "weblog.tgz" in keys and "pipeline_manifest.xml" in keys
    for e in entries:
        data = client.get_object(Bucket=bucket, Key=f"vlass/tiny-ok/{e.key}")["Body"].read()
        assert hashlib.sha256(data).hexdigest() == e.sha256 and len(data) == e.size
        # the producing stage, as the stage's own result recorded it
        expected = "vlass-weblog" if e.key == "weblog.tgz" else "vlass-exportvlassdata"
        assert e.stage == expected, (e.key, e.stage)


def test_weblog_has_the_plots_and_thumbnails(good_run):
    ws = good_run["ws"]
    html = (ws / "weblog" / "index.html").read_text()
    for plot in ("stokes_summary_u_vs_q_peak_stokesi.png", "stokes_summary_u_vs_q_peak_linpolint.png",
                 "stokes_summary_flux_vs_freq_peak_stokesi.png", "rms_Median_vs_freq.png"):
        assert plot in html and (ws / "weblog" / "stokes" / plot).stat().st_size > 1000
    assert len(list((ws / "weblog" / "thumbs").glob("*.png"))) == 4 * 3
