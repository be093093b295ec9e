"""VLASS stages one by one through the worker CLI, on the tiny simulated data: validation errors
(message content asserted, nothing processed) and restorepims re-run safety."""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest

from casaflow.vlass.restorepims import HEADER, RULE

from .conftest import run_worker

pytestmark = [pytest.mark.casa]


@pytest.fixture(scope="module")
def prepared(vlass_tiny, tmp_path_factory):
    """A workspace taken through import, SEIP editimlist and transformimagedata."""
    ws = tmp_path_factory.mktemp("vlass-stages")
    for name in ("SEIP_parameter.list", "reimaging_resources.tgz"):
        shutil.copyfile(vlass_tiny["dir"] / name, ws / name)
    pims = vlass_tiny["pims"].name    # resources are keyed on the MS name: keep it
    (ws / pims).symlink_to(vlass_tiny["pims"])
    for args in (["vlass-importdata", "--param", f"vis={pims}"],
                 ["vlass-editimlist-seip", "--param", "parameter_list=SEIP_parameter.list"],
                 ["vlass-transformimagedata"]):
        proc = run_worker(*args, "--workspace", str(ws))
        assert proc.returncode == 0, proc.stdout[-3000:]
    vis = json.loads((ws / "context" / "imaging_ms.json").read_text())["vis"]
    return ws, vis


def clone(prepared, tmp_path):
    ws, vis = prepared
    dst = tmp_path / "ws"
    shutil.copytree(ws, dst, symlinks=True)
    return dst, vis


def columns(ws, vis, *cols):
    from casaflow.casaenv import import_casa

    ct, _ = import_casa()
    tb = ct.table()
    tb.open(str(ws / vis))
    try:
        return {c: tb.getcol(c) for c in cols if c in tb.colnames()}
    finally:
        tb.close()


def result(proc):
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_missing_resources_listed_and_nothing_processed(prepared, tmp_path):
    ws, vis = clone(prepared, tmp_path)
    with tarfile.open(ws / "reimaging_resources.tgz") as src, tarfile.open(ws / "partial.tgz", "w:gz") as dst:
        for m in src.getmembers():
            if "phase-self-cal" not in m.name and "combined-tier2" not in m.name:
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    before = columns(ws, vis, "FLAG", "WEIGHT")
    proc = run_worker("vlass-restorepims", "--workspace", str(ws), "--param", "reimaging_resources=partial.tgz")
    assert proc.returncode == 2
    msg = result(proc)["message"]
    assert RULE in msg and HEADER in msg
    assert "selfcal_table       : ('" in msg and "phase-self-cal.tbl*', False)" in msg
    assert "tier2_mask          : ('" in msg and "flag_version        : ([" in msg and "], True)" in msg
    after = columns(ws, vis, "FLAG", "WEIGHT", "MODEL_DATA")
    assert "MODEL_DATA" not in after   # nothing processed
    assert np.array_equal(before["FLAG"], after["FLAG"]) and np.array_equal(before["WEIGHT"], after["WEIGHT"])
    assert not (ws / f"{vis}.flagversions" / "flags.hifv_restorepims_initial").exists()


def test_missing_tarball_reported_as_resource(prepared, tmp_path):
    ws, _ = clone(prepared, tmp_path)
    proc = run_worker("vlass-restorepims", "--workspace", str(ws), "--param", "reimaging_resources=nope.tgz")
    assert proc.returncode == 2
    assert "reimaging_resources : ('" in result(proc)["message"] and "nope.tgz', False)" in result(proc)["message"]


def test_restorepims_rerun_gives_identical_flags_and_weights(prepared, tmp_path):
    ws, vis = clone(prepared, tmp_path)
    first = run_worker("vlass-restorepims", "--workspace", str(ws))
    assert first.returncode == 0, result(first)["message"]
    a = columns(ws, vis, "FLAG", "WEIGHT", "SIGMA", "CORRECTED_DATA")
    assert a["FLAG"].any() and not a["FLAG"].all()
    second = run_worker("vlass-restorepims", "--workspace", str(ws))
    assert second.returncode == 0, result(second)["message"]
    assert result(second)["outputs"]["rerun"] is True
    b = columns(ws, vis, "FLAG", "WEIGHT", "SIGMA", "CORRECTED_DATA")
    assert np.array_equal(a["FLAG"], b["FLAG"])
    assert np.allclose(a["WEIGHT"], b["WEIGHT"], rtol=1e-6)
    assert np.allclose(a["CORRECTED_DATA"], b["CORRECTED_DATA"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("spw,message", [
    ("['2','2:0~15']", "spw element '2:0~15' has a channel selection"),
    ("['1~4']", "spw element '1~4' uses range syntax"),
    ("['2','42']", "spw group '42' names unknown spw(s) ['42']"),
    ("['2','0']", "spw group '0' selects no data"),
    ("['5']", "every spw group of CCIP_parameter.list was skipped"),
])
def test_cube_editimlist_errors(prepared, tmp_path, vlass_tiny, spw, message):
    ws, _ = clone(prepared, tmp_path)
    text = (vlass_tiny["dir"] / "CCIP_parameter.list").read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("spw=")] + [f"spw={spw}"]
    (ws / "CCIP_parameter.list").write_text("\n".join(lines) + "\n")
    if spw == "['5']":   # the fully flagged group must be flagged: restore the SE flags first
        assert run_worker("vlass-restorepims", "--workspace", str(ws)).returncode == 0
    proc = run_worker("vlass-editimlist-cube", "--workspace", str(ws), "--param", "parameter_list=CCIP_parameter.list")
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert message in result(proc)["message"]
    assert not (ws / "context" / "cube_targets.json").exists()


@pytest.fixture(scope="module")
def cube_ready(prepared, tmp_path_factory, vlass_tiny):
    """A clone of ``prepared`` taken on through restorepims, flagtargetsdata and the cube editimlist."""
    ws, vis = prepared
    dst = tmp_path_factory.mktemp("vlass-cube") / "ws"
    shutil.copytree(ws, dst, symlinks=True)
    shutil.copyfile(vlass_tiny["dir"] / "CCIP_parameter.list", dst / "CCIP_parameter.list")
    for args in (["vlass-restorepims"], ["vlass-flagtargetsdata"],
                 ["vlass-editimlist-cube", "--param", "parameter_list=CCIP_parameter.list"]):
        proc = run_worker(*args, "--workspace", str(dst))
        assert proc.returncode == 0, proc.stdout[-3000:]
    groups = json.loads((dst / "results" / "vlass-editimlist-cube.json").read_text())["outputs"]["groups"]
    return dst, groups


def _tclean_calls(ws, since: int) -> list[str]:
    text = (ws / "casa_commands.log").read_text()[since:]
    return [ln for ln in text.splitlines() if ln.startswith("tclean(")]


def test_group_overrides_reach_every_iteration(cube_ready):
    """The documented example shape: niter, nsigma and cycleniter for one group (each used to be
    passed to tclean twice and crash the call)."""
    ws, groups = cube_ready
    group = groups[0]
    since = len((ws / "casa_commands.log").read_text())
    proc = run_worker("vlass-makeimages", "--workspace", str(ws), "--param", f"group={json.dumps(group)}",
                      "--param", 'tclean_overrides={"niter": 7, "nsigma": 1.5, "cycleniter": 3}')
    assert proc.returncode == 0, proc.stdout[-3000:]
    calls = _tclean_calls(ws, since)
    assert len(calls) == 4
    assert ["niter=0," in calls[0]] + ["niter=7," in c for c in calls[1:]] == [True] * 4
    assert all("nsigma=1.5," in c and "cycleniter=3," in c for c in calls)
    assert result(proc)["outputs"]["image"].endswith(".iter3.image.tt0")


@pytest.mark.parametrize("given,named", [('{"vis": "other.ms"}', "vis choose the data or the outputs"),
                                         ('{"nitre": 5}', "nitre is not a tclean parameter")])
def test_group_overrides_refused_before_imaging(cube_ready, given, named):
    ws, groups = cube_ready
    since = len((ws / "casa_commands.log").read_text())
    proc = run_worker("vlass-makeimages", "--workspace", str(ws), "--param", f"group={json.dumps(groups[-1])}",
                      "--param", f"tclean_overrides={given}")
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert named in result(proc)["message"]
    assert _tclean_calls(ws, since) == []     # nothing imaged


def _weight_at(ws, image: str, direction: dict) -> float:
    from casaflow.casaenv import import_casa

    ct, _ = import_casa()
    ia = ct.image()
    ia.open(str(ws / image))
    try:
        pix = ia.topixel([f"{direction['m0']['value']}rad", f"{direction['m1']['value']}rad"])["numeric"]
        return float(ia.pixelvalue([int(round(pix[0])), int(round(pix[1])), 0, 0])["value"]["value"])
    finally:
        ia.close()


def test_flag_template_flags_one_field_in_the_images(prepared, cube_ready, tmp_path, vlass_tiny):
    """A template given as a stage input flags one pointing: its data are flagged in the MS and its
    weight is gone from the group's image, while another pointing's weight is unchanged."""
    from casaflow.casaenv import import_casa

    ws, vis = clone(prepared, tmp_path)
    ct, _ = import_casa()
    msmd = ct.msmetadata()
    msmd.open(str(ws / vis))
    try:
        names = msmd.fieldnames()
        centres = {n: msmd.phasecenter(i) for i, n in enumerate(names)}
    finally:
        msmd.close()
    flagged, kept = names[0], names[-1]
    (ws / "input").mkdir(exist_ok=True)
    (ws / "input" / "my.flagtargetstemplate.txt").write_text(
        f"# one pointing is bad\nmode='manual' field='{flagged}' reason='test'\n")
    shutil.copyfile(vlass_tiny["dir"] / "CCIP_parameter.list", ws / "CCIP_parameter.list")
    assert run_worker("vlass-restorepims", "--workspace", str(ws)).returncode == 0
    proc = run_worker("vlass-flagtargetsdata", "--workspace", str(ws),
                      "--param", "filetemplate=input/my.flagtargetstemplate.txt")
    assert proc.returncode == 0, proc.stdout[-3000:]
    out = result(proc)["outputs"]
    assert out["template_applied"] and out["template_commands"] == 1
    assert out["flagged_percent"]["template"] > out["flagged_percent"]["before"]
    ref_ws, groups = cube_ready
    group = groups[0]
    for w in (ws, ref_ws):
        if w is ws:
            assert run_worker("vlass-editimlist-cube", "--workspace", str(ws),
                              "--param", "parameter_list=CCIP_parameter.list").returncode == 0
        image = json.loads((w / "context" / "cube_targets.json").read_text())["targets"][0]["imagename"]
        if not list(w.glob(f"{image}.IQUV.iter3.weight.tt0")):
            proc = run_worker("vlass-makeimages", "--workspace", str(w), "--param", f"group={json.dumps(group)}",
                              "--param", 'tclean_overrides={"niter": 0}')
            assert proc.returncode == 0, proc.stdout[-3000:]
    # The weight image is normalised and the tiny mosaic's pointings overlap heavily, so compare the
    # flagged pointing's centre with another's: equal without the template, lower with it.
    weight = f"{image}.IQUV.iter3.weight.tt0"
    ref_ratio = _weight_at(ref_ws, weight, centres[flagged]) / _weight_at(ref_ws, weight, centres[kept])
    ratio = _weight_at(ws, weight, centres[flagged]) / _weight_at(ws, weight, centres[kept])
    assert ref_ratio == pytest.approx(1.0, abs=0.02)
    assert ratio < 0.93, (ratio, ref_ratio)


def test_flag_template_with_file_commands_refused(prepared, tmp_path):
    ws, vis = clone(prepared, tmp_path)
    (ws / "bad.txt").write_text("mode='manual' field='0'\nmode='list' inpfile='/etc/passwd'\n")
    before = columns(ws, vis, "FLAG")["FLAG"]
    proc = run_worker("vlass-flagtargetsdata", "--workspace", str(ws), "--param", "filetemplate=bad.txt")
    assert proc.returncode == 2
    assert "flag template bad.txt line 2: inpfile not allowed" in result(proc)["message"]
    assert np.array_equal(before, columns(ws, vis, "FLAG")["FLAG"])
