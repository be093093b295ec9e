"""ALMA naming rules, image selection and tarsplit on synthetic inputs (no CASA)."""

from __future__ import annotations

import hashlib
import os
import tarfile

import pytest

from casaflow.alma import context, naming, tarsplit
from casaflow.errors import InputError


@pytest.mark.parametrize("name, fits", [
    ("uid___A001_X1_X2.s38_0.NGC1_sci.spw25_27.cont.I.iter1.image.pbcor", "uid___A001_X1_X2.NGC1_sci.spw25_27.cont.I.pbcor.fits"),
    ("uid___A001_X1_X2.s38_0.NGC1_sci.spw25_27.cont.I.iter1.pb", "uid___A001_X1_X2.NGC1_sci.spw25_27.cont.I.pb.fits"),
    ("uid___A001_X1_X2.s38_0.NGC1_sci.spw25_27.cont.I.iter1.mask", "uid___A001_X1_X2.NGC1_sci.spw25_27.cont.I.mask.fits"),
    ("uid___A001_X1_X2.s38_0.NGC1_sci.spw25.cont.I.iter1.image.tt0.pbcor", "uid___A001_X1_X2.NGC1_sci.spw25.cont.I.tt0.pbcor.fits"),
])
def test_fitsname_rule(name, fits):
    assert naming.fitsname(name) == fits


@pytest.mark.parametrize("name, fits", [
    ("uid___A001_X1_X2.s23_0.J0006-0623_bp.spw0.mfs.regcal.I.iter0.image",
     "uid___A001_X1_X2.J0006-0623_bp.spw0.mfs.regcal.I.fits"),
    ("uid___A001_X1_X2.s30_0.NGC1_sci.spw25_27.cont.selfcal.I.iter1.image.tt0.pbcor",
     "uid___A001_X1_X2.NGC1_sci.spw25_27.cont.selfcal.I.tt0.pbcor.fits"),
    ("uid___A001_X1_X2.s30_0.NGC1_sci.spw25_27.cont.selfcal.I.iter1.alpha.error",
     "uid___A001_X1_X2.NGC1_sci.spw25_27.cont.selfcal.I.alpha.error.fits"),
    ("uid___A001_X1_X2.s30_0.NGC1_sci.spw25_27.cont.selfcal.I.iter1.pb.tt0",
     "uid___A001_X1_X2.NGC1_sci.spw25_27.cont.selfcal.I.pb.tt0.fits"),
    ("uid___A001_X1_X2.s20_0.J1_pol.spw0.mfs.regcal.POLI.iter1.image", "uid___A001_X1_X2.J1_pol.spw0.mfs.regcal.POLI.fits"),
])
def test_fitsname_rule_current_names(name, fits):
    assert naming.fitsname(name) == fits


def test_fitsname_version():
    assert naming.fitsname("a.s1_0.X_sci.spw1.cube.I.iter1.image", 3) == "a.X_sci.spw1.cube.I.v3.fits"


def test_calintents_defaults_wildcards_and_unknown():
    assert naming.expand_intents("") == list(naming.DEFAULT_CALINTENTS)
    assert naming.expand_intents("*PHASE*") == ["PHASE"]
    assert naming.expand_intents("POL*") == ["POLARIZATION", "POLANGLE", "POLLEAKAGE"]
    with pytest.raises(InputError, match="'BOGUS' matches no calibrator intent"):
        naming.expand_intents("PHASE,BOGUS")


def test_sessions_beyond_the_list_go_to_the_last():
    assert naming.session_names(["s1", "s2"], 4) == ["s1", "s2", "s2", "s2"]
    assert naming.session_names([], 2) == ["session_1", "session_1"]


def item(name):
    p = naming.parse_image_name(name)
    return context.ImageItem(name, p["source"], p["sourcetype"], p["prefix"], p["spw"], p["specmode"], p["stokes"],
                             p["stage"], 0, p["datatype"] or "")


def test_selection_keeps_datatypes_apart():
    """regcal and selfcal images of one selection are different products (the datatype is part
    of the reference's product key); an IQUV image suppresses only the I image of its datatype."""
    items = [item("o.s10_0.T_sci.spw1.cont.regcal.I.iter1.image.pbcor"),
             item("o.s12_0.T_sci.spw1.cont.selfcal.I.iter1.image.pbcor"),
             item("o.s14_0.T_sci.spw1.cont.regcal.IQUV.iter1.image.pbcor")]
    assert [i.imagename for i in context.select_images(items, ["TARGET"])] == [
        "o.s12_0.T_sci.spw1.cont.selfcal.I.iter1.image.pbcor", "o.s14_0.T_sci.spw1.cont.regcal.IQUV.iter1.image.pbcor"]


def test_selection_keeps_latest_per_key_and_iquv_suppresses_i():
    items = [item("o.s10_0.J1_bp.spw1.mfs.I.iter1.image"), item("o.s12_0.T_sci.spw1_2.cont.I.iter1.image.pbcor"),
             item("o.s14_0.J1_ph.spw1.mfs.I.iter1.image"), item("o.s20_0.T_sci.spw1_2.cont.IQUV.iter1.image.pbcor"),
             item("o.s22_0.J1_bp.spw1.mfs.I.iter1.image")]
    cal = context.select_images(items, ["BANDPASS", "PHASE"])
    # the latest bandpass item of the key wins and the original order is kept
    assert [i.imagename for i in cal] == ["o.s14_0.J1_ph.spw1.mfs.I.iter1.image", "o.s22_0.J1_bp.spw1.mfs.I.iter1.image"]
    assert [i.imagename for i in context.select_images(items, ["PHASE"])] == ["o.s14_0.J1_ph.spw1.mfs.I.iter1.image"]
    tgt = context.select_images(items, ["TARGET"])
    assert [i.stokes for i in tgt] == ["IQUV"]


def test_applycal_calls_parsed_without_eval(tmp_path):
    log = tmp_path / "casa_commands.log"
    log.write_text("# stage\napplycal(vis='/w/a.ms', field='F', gaintable=['/w/a.ms.bcal'], calwt=False)\n"
                   "applycal(vis='a.ms', field='F', gaintable=['a.ms.bcal', 'a.ms.g'], calwt=[False, False])\n"
                   "tclean(vis='a.ms')\n")
    calls = context.parse_applycal_calls(log)
    assert len(calls) == 1 and calls[0].gaintable == ["a.ms.bcal", "a.ms.g"]       # the later call wins
    log.write_text("applycal(vis=__import__('os').system('true'))\n")
    with pytest.raises(InputError, match="not parseable"):
        context.parse_applycal_calls(log)


def test_selfcal_tables_found_in_their_workdir_and_packed_flat(tmp_path):
    """hif_selfcal applies tables under sc_workdir_<field>_<band>/ (relative to the working
    directory); the reference packs each session's tables flat, by file name. Absolute paths (the
    run's working directory on another machine) are file names."""
    from casaflow.alma.exportdata import _session_caltables, calapply_text

    working, staging = tmp_path / "working", tmp_path / "staging"
    sc = working / "sc_workdir_M100_B3"
    for table in (sc / "M100_a_targets.ms_B3_inf_EB_0_p.g", working / "a.ms.bcal"):
        table.mkdir(parents=True)
        (table / "table.dat").write_bytes(table.name.encode())
    staging.mkdir()
    log = working / "casa_commands.log"
    log.write_text("applycal(vis='/lustre/run/working/a_targets.ms', field='M100', "
                   "gaintable=['sc_workdir_M100_B3/M100_a_targets.ms_B3_inf_EB_0_p.g', '/lustre/run/working/a.ms.bcal'], "
                   "calwt=[False, False])\n")
    calls = context.parse_applycal_calls(log)
    assert calls[0].gaintable == ["sc_workdir_M100_B3/M100_a_targets.ms_B3_inf_EB_0_p.g", "a.ms.bcal"]
    # The apply file names them as the tarball holds them: by file name (casaflow's apply lists run
    # in the directory the MS and the extracted tables are in; README, differs on purpose).
    assert "gaintable=['M100_a_targets.ms_B3_inf_EB_0_p.g', 'a.ms.bcal']" in calapply_text("a_targets.ms", calls)
    out = _session_caltables(working, staging, "uid___A001_X1_X2", ["a_targets.ms"], {"a_targets.ms": "session_1"},
                             calls, "auxcaltables", lambda name, role: name)
    assert out == {"session_1": "uid___A001_X1_X2.session_1.auxcaltables.tgz"}
    with tarfile.open(staging / out["session_1"]) as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == [
            "M100_a_targets.ms_B3_inf_EB_0_p.g/table.dat", "a.ms.bcal/table.dat"]
    # A path out of the working directory is refused, naming the line.
    log.write_text("applycal(vis='a.ms', gaintable=['sc_workdir/../../etc/x.g'])\n")
    with pytest.raises(InputError, match="line 1: gaintable"):
        context.parse_applycal_calls(log)


def test_the_imaging_stages_mses_are_imaging_mses(tmp_path):
    """hif_mstransform's _targets, hif_uvcontsub's _targets_line and the _imaging variants are the
    imaging MSs (aux products); only the others are calibration MSs (flags, apply lists, restore)."""
    names = ["uid___A002_X1_X2.ms", "uid___A002_X1_X2_targets.ms", "uid___A002_X1_X2_targets_line.ms",
             "uid___A002_X1_X2_imaging.ms", "uid___A002_X1_X2_imaging_line.ms"]
    for n in names:
        (tmp_path / n / "ANTENNA").mkdir(parents=True)
        (tmp_path / n / "table.dat").write_bytes(b"")
    calibration, imaging = context.find_mses(tmp_path, [])
    assert calibration == ["uid___A002_X1_X2.ms"] and sorted(imaging) == sorted(names[1:])
    assert context.find_mses(tmp_path, ["uid___A002_X1_X2.ms", "uid___A002_X1_X2_targets_line.ms"])[0] == \
        ["uid___A002_X1_X2.ms"]


def make_tree(root, big=300_000):
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "small.txt").write_bytes(b"x" * 1000)
    (root / "a" / "b" / "big.bin").write_bytes(os.urandom(big))
    (root / "a" / "b" / ("long-name-" * 20 + ".txt")).write_bytes(b"y" * 70_000)
    (root / "empty").mkdir()
    return root


def test_tarsplit_cuts_large_files_and_joins_them_back(tmp_path):
    pkg = make_tree(tmp_path / "2011.0.00229.S")
    out = tarsplit.split(pkg, tmp_path / "chunks", "100K", "2026-11-22")
    assert len(out["chunks"]) > 3
    for name in out["chunks"]:
        assert (tmp_path / "chunks" / name).stat().st_size <= 100 * 1024
    with tarfile.open(tmp_path / "chunks" / out["chunks"][1]) as tar:
        assert any(".tarsplit-part-" in n for n in tar.getnames())
    joined = tarsplit.join(tmp_path / "chunks" / out["checksums"], tmp_path / "joined")
    for p in pkg.rglob("*"):
        q = joined / p.relative_to(pkg)
        assert q.exists(), q
        if p.is_file():
            assert hashlib.sha256(q.read_bytes()).hexdigest() == hashlib.sha256(p.read_bytes()).hexdigest()
    assert not list(joined.rglob("*.tarsplit-part-*"))


def test_tarsplit_rejects_a_tampered_or_missing_chunk(tmp_path):
    pkg = make_tree(tmp_path / "P")
    out = tarsplit.split(pkg, tmp_path / "c", "100K", "2026-11-22")
    chunk = tmp_path / "c" / out["chunks"][0]
    data = bytearray(chunk.read_bytes())
    data[700] ^= 1
    chunk.write_bytes(bytes(data))
    with pytest.raises(InputError, match="SHA-256 does not match"):
        tarsplit.join(tmp_path / "c" / out["checksums"], tmp_path / "j")
    chunk.unlink()
    with pytest.raises(InputError, match="is missing"):
        tarsplit.join(tmp_path / "c" / out["checksums"], tmp_path / "j")
    assert not (tmp_path / "j" / "P").exists()


@pytest.mark.parametrize("bad, msg", [("1K", "too small"), ("lots", "expected a number")])
def test_tarsplit_bad_sizes(tmp_path, bad, msg):
    pkg = make_tree(tmp_path / "P")
    with pytest.raises(InputError, match=msg):
        tarsplit.split(pkg, tmp_path / "c", bad, "2026-11-22")


def test_tarsplit_rerun_with_another_size_leaves_only_the_new_set(tmp_path):
    pkg = make_tree(tmp_path / "P")
    first = tarsplit.split(pkg, tmp_path / "c", "100K", "2026-11-22")
    second = tarsplit.split(pkg, tmp_path / "c", "400K", "2026-11-22")
    assert len(second["chunks"]) < len(first["chunks"])
    assert sorted(p.name for p in (tmp_path / "c").glob("*.tar")) == second["chunks"]
    tarsplit.join(tmp_path / "c" / second["checksums"], tmp_path / "j")


@pytest.mark.parametrize("products_dir", [".", "..", "../elsewhere"])
def test_products_dir_must_be_inside_the_workspace(tmp_path, products_dir):
    from casaflow.alma.exportdata import validate_products_dir

    with pytest.raises(InputError, match="inside the workspace"):
        validate_products_dir(tmp_path, products_dir)


# -- auxproducts members and the export's QA (exportdata._aux_members, _qa_scores) ---------------
def _working(tmp_path, names):
    for n in names:
        (tmp_path / n).write_text(n)
    return tmp_path


AUX = ["flux.csv", "antennapos.csv", "b.ms.antennapos.json", "a.ms.antennapos.json", "cont.dat",
       "a.ms.flagtemplate.txt", "a.ms.flagtsystemplate.txt", "a_targets.ms.flagtargetstemplate.txt",
       "pipeline.timetracker.json"]


@pytest.mark.parametrize("imaging_only, has_imaging, expected", [
    # the reference's order: flux, antenna positions (the json files, else the csv), cont.dat,
    # flag templates, timetracker
    (False, False, ["flux.csv", "a.ms.antennapos.json", "b.ms.antennapos.json", "cont.dat", "a.ms.flagtemplate.txt",
                    "a.ms.flagtsystemplate.txt", "pipeline.timetracker.json"]),
    (False, True, ["flux.csv", "a.ms.antennapos.json", "b.ms.antennapos.json", "cont.dat",
                   "a.ms.flagtemplate.txt", "a.ms.flagtsystemplate.txt", "a_targets.ms.flagtargetstemplate.txt",
                   "pipeline.timetracker.json"]),
    # imaging_products_only: no flux.csv and no antennapos.csv, but the json files (PIPE-51) stay
    (True, True, ["a.ms.antennapos.json", "b.ms.antennapos.json", "cont.dat", "a_targets.ms.flagtargetstemplate.txt",
                  "pipeline.timetracker.json"]),
])
def test_aux_members_in_the_reference_order(tmp_path, imaging_only, has_imaging, expected):
    from casaflow.alma import exportdata

    working = _working(tmp_path, AUX)
    p = exportdata.ExportParams(imaging_products_only=imaging_only)
    assert [n for _, n in exportdata._aux_members(working, p, has_imaging, None)] == expected


def test_antennapos_csv_only_without_json_files(tmp_path):
    from casaflow.alma import exportdata

    working = _working(tmp_path, ["antennapos.csv", "cont.dat"])
    assert [n for _, n in exportdata._aux_members(working, exportdata.ExportParams(), False, None)] == [
        "antennapos.csv", "cont.dat"]
    only = exportdata.ExportParams(imaging_products_only=True)
    assert [n for _, n in exportdata._aux_members(working, only, False, None)] == ["cont.dat"]


@pytest.mark.parametrize("params, images, expected", [
    ({}, [("c.fits", "calibrator")], ("images", 1.0)),
    ({"imaging_products_only": True}, [("c.fits", "calibrator")], ("target images", 0.0)),
    ({"imaging_products_only": True}, [("c.fits", "calibrator"), ("t.fits", "target")], ("target images", 1.0)),
    ({"exportmses": True}, [], None),          # no image check in exportmses mode
])
def test_the_image_score_as_the_reference_counts(tmp_path, params, images, expected):
    from casaflow.alma import exportdata

    ex = exportdata.Exported()
    ex.images = [(n, t, {}) for n, t in images]
    scores = exportdata._qa_scores(tmp_path, ex, exportdata.ExportParams(**params), False, True)
    got = [(s["reason"].rsplit(" ", 1)[0], s["score"]) for s in scores if "images" in s["reason"]]
    assert got == ([] if expected is None else [expected])
