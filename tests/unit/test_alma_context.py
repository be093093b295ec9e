"""Image names as the current reference writes them, and the inert reading of a pipeline
context (no CASA, no pipeline installed)."""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pytest

from casaflow.alma import context, naming, picklesafe, pipecontext
from casaflow.errors import InputError
from casaflow.simulate import alma_context as ac

OUS = "uid___A001_X3d5e_X12"


# -- names --------------------------------------------------------------------------------------
# intent code -> intent, from the reference's _known_intents (filenamer.py), written out here
REFERENCE_CODES = [("bp", "BANDPASS"), ("ph", "PHASE"), ("flux", "AMPLITUDE"), ("sci", "TARGET"), ("chk", "CHECK"),
                   ("pol", "POLARIZATION"), ("pang", "POLANGLE"), ("plk", "POLLEAKAGE")]


@pytest.mark.parametrize("code, intent", REFERENCE_CODES)
@pytest.mark.parametrize("datatype", ["regcal", "selfcal", None])
@pytest.mark.parametrize("specmode", ["mfs", "cont", "cube", "repBW"])
def test_every_intent_datatype_and_specmode_parses(code, intent, datatype, specmode):
    dt = f".{datatype}" if datatype else ""
    name = f"{OUS}.s23_0.J0006-0623_{code}.spw16_18.{specmode}{dt}.I.iter1.image.pbcor"
    p = naming.parse_image_name(name)
    assert p is not None, name
    assert (p["sourcetype"], p["source"], p["spw"], p["specmode"], p["datatype"], p["stokes"]) == \
        (intent, "J0006-0623", "16_18", specmode, datatype, "I")
    assert (p["stage"], p["sub"], p["iter"], p["pbcor"], p["kind"]) == (23, 0, 1, True, "image")


@pytest.mark.parametrize("suffix, kind, tt", [("image.tt0", "image", 0), ("image.tt1.pbcor", "image", 1),
                                              ("alpha", "alpha", None), ("alpha.error", "alpha", None),
                                              ("pb.tt0", "pb", 0), ("mask", "mask", None)])
def test_multiterm_and_aux_products_parse(suffix, kind, tt):
    p = naming.parse_image_name(f"{OUS}.s30_0.NGC 1_sci.spw0.cont.selfcal.I.iter2.{suffix}".replace(" ", "_"))
    assert (p["kind"], p["tt"], p["source"]) == (kind, tt, "NGC_1")


def test_session_and_eb_prefixes_and_polarization_maps():
    assert naming.parse_image_name("session_1.s12_0.J1_chk.spw0.mfs.regcal.I.iter1.image")["prefix"] == "session_1"
    eb = naming.parse_image_name("uid___A002_X1_X2.s12_0.J1_chk.spw0.mfs.regcal.I.iter1.image")
    assert (eb["prefix"], eb["sourcetype"]) == ("uid___A002_X1_X2", "CHECK")
    assert naming.parse_image_name(f"{OUS}.s9_0.J1_pol.spw0.mfs.regcal.POLA.iter1.image")["stokes"] == "POLA"
    # an intent outside _known_intents is written as it is (filenamer.Image.intent)
    assert naming.parse_image_name(f"{OUS}.s9_0.J1_DIFFGAINREF.spw0.mfs.regcal.I.iter1.image")["sourcetype"] == \
        "DIFFGAINREF"


@pytest.mark.parametrize("name", [
    f"{OUS}.s14_0.J1923-2904_check.spw0.mfs.I.iter1.image",       # casaflow's former code, not the reference's
    f"{OUS}.s14_0.J1923-2904_ph.spw0.mfs.rawcal.I.iter1.image",   # unknown datatype part
    f"{OUS}.s14_0.J1923-2904_ph.spw0.widefield.I.iter1.image",    # unknown specmode
])
def test_pipeline_looking_names_that_match_no_rule_are_warned(tmp_path, name):
    assert naming.parse_image_name(name) is None and naming.looks_like_image(name)
    (tmp_path / name).mkdir()
    (tmp_path / f"{OUS}.s15_0.J1_ph.spw0.mfs.regcal.I.iter1.image").mkdir()
    warnings = []
    items = context.find_images(tmp_path, warnings.append)
    assert [i.imagename for i in items] == [f"{OUS}.s15_0.J1_ph.spw0.mfs.regcal.I.iter1.image"]
    assert len(warnings) == 1 and name in warnings[0] and "matches no image naming rule" in warnings[0]


def test_directory_images_find_multiterm_and_prefer_pbcor(tmp_path):
    root = f"{OUS}.s30_0.T_sci.spw0.cont.selfcal.I.iter1"
    for ext in ("image.tt0", "image.tt1", "image.tt0.pbcor", "alpha", "alpha.error", "pb.tt0", "mask"):
        (tmp_path / f"{root}.{ext}").mkdir()
    pol = f"{OUS}.s12_0.J1_pol.spw0.mfs.regcal.IQUV.iter1"
    for ext in ("image", "image.pbcor", "pb", "mask"):
        (tmp_path / f"{pol}.{ext}").mkdir()
    for kind in ("POLI", "POLA"):
        (tmp_path / f"{OUS}.s12_0.J1_pol.spw0.mfs.regcal.{kind}.iter1.image").mkdir()
    items = {i.imagename: i for i in context.find_images(tmp_path, lambda m: None)}
    mt = items[f"{root}.image.pbcor"]
    assert mt.multiterm == 2 and mt.datatype == "selfcal"
    assert [n for n, _ in context.image_files(tmp_path, mt)] == [
        f"{root}.image.tt0.pbcor", f"{root}.alpha", f"{root}.alpha.error", f"{root}.pb.tt0", f"{root}.mask"]
    assert [n for n, _ in context.image_files(tmp_path, items[f"{pol}.image.pbcor"])] == [
        f"{pol}.image.pbcor", f"{pol}.pb", f"{pol}.mask", f"{OUS}.s12_0.J1_pol.spw0.mfs.regcal.POLI.iter1.image",
        f"{OUS}.s12_0.J1_pol.spw0.mfs.regcal.POLA.iter1.image"]


# -- the context --------------------------------------------------------------------------------
def _context(tmp_path, session="session_7", score=0.876543219):
    t = time.time()
    stage = {"number": 3, "start": t, "end": t + 60, "scores": [
        {"score": score, "reason": "flux scale", "metric": {"name": "FluxSNR", "value": 12.5, "units": ""},
         "selection": {"asdm": ["uid___A002_X1_X2"], "session": [session], "spw": ["1", "0"], "field": "J1"}}]}
    fm = ac.obj("pipeline.domain.fluxmeasurement.FluxMeasurement", spw_id=1, I=ac.flux_density(0.8123456),
                uncertainty=ac.obj("pipeline.domain.fluxmeasurement.FluxMeasurement", spw_id=1,
                                   I=ac.flux_density(0.004)))
    result = ac.result("pipeline.hifa.tasks.fluxscale.gcorfluxscale.GcorFluxscaleResults", stage,
                       "hifa_gfluxscale(vis=['uid___A002_X1_X2.ms'])",
                       items=[{"inputs": {"vis": "uid___A002_X1_X2.ms"}, "measurements": {1: [fm]}}])
    ms = dict(name=str(tmp_path / "uid___A002_X1_X2.ms"), _session=session, execblock_id="uid://A002/X1/X2",
              fields=[ac.obj("pipeline.domain.field.Field", id=1, name='"J1"')],
              spectral_windows=[ac.spectral_window(1, "X1#BB_2", 101.125e9, 250e6)], weights=np.arange(4.0))
    image = {"imagename": f"{OUS}.s5_0.J1_bp.spw1.mfs.regcal.I.iter1.image.pbcor", "sourcename": "J1",
             "sourcetype": "BANDPASS", "spwlist": "1", "specmode": "mfs", "stokes": "I",
             "datatype": "REGCAL_CONTLINE_ALL", "multiterm": None, "version": 1, "imagename_prefix": OUS}
    return ac.write(tmp_path, "pipeline-20261120T100000", ms_records=[ms], results=[result],
                    project={"summary": {"proposal_code": "2025.1.00123.S"},
                             "structure": {"recipe_name": "hifa_calimage", "ous_entity_id": "uid://A001/X1/X0",
                                           "ous_part_id": "X9", "ousstatus_entity_id": "uid://A001/X3d5e/X12"}},
                    calimages=[image], sciimages=[])


def test_context_written_with_reference_class_paths_is_read_by_attribute_names(tmp_path):
    path = _context(tmp_path)
    raw = path.read_bytes()
    assert b"pipeline.infrastructure.launcher" in raw and b"Context" in raw and b"casaflow" not in raw
    with pytest.raises(ModuleNotFoundError):          # the pipeline is not installed: pickle itself cannot
        pickle.loads(raw)
    rec = pipecontext.read(tmp_path, path)
    assert [(m.name, m.session, m.execblock_id) for m in rec.mses] == [("uid___A002_X1_X2.ms", "session_7",
                                                                        "uid://A002/X1/X2")]
    assert rec.mses[0].spws == {1: ("X1#BB_2", 101.125)}
    assert (rec.proposal_code, rec.recipe_name, rec.ousstatus_entity_id) == ("2025.1.00123.S", "hifa_calimage",
                                                                            "uid://A001/X3d5e/X12")
    st = rec.stages[0]
    assert (st["number"], st["name"], st["topics"]) == (3, "hifa_gfluxscale", ["Calibration"])
    assert st["representative"]["score"] == 0.876543219 and st["end"] - st["start"] == pytest.approx(60)
    number, score, rows = rec.gfluxscale[0]
    assert (number, score) == (3, 0.876543219)
    assert rows == [{"spw_name": "X1#BB_2", "spw": 1, "flux_jy": pytest.approx(0.8123456),
                     "error_jy": pytest.approx(0.004), "asdm": "uid___A002_X1_X2", "field": "J1",
                     "freq_ghz": pytest.approx(101.125)}]
    items = context.items_from_imlist(rec.calimlist)
    assert (items[0].sourcetype, items[0].datatype, items[0].prefix, items[0].stage) == (
        "BANDPASS", "REGCAL_CONTLINE_ALL", OUS, 5)


def test_context_written_with_dill_imported_is_still_the_reference_s_pickle(tmp_path):
    """dill extends pickle's type table when imported (Airflow brings it): the simulator must still
    write classes as the reference's globals, which the safe reader can read."""
    pytest.importorskip("dill")
    path = _context(tmp_path)
    raw = path.read_bytes()
    assert b"dill._dill" not in raw and b"pipeline.infrastructure.launcher" in raw
    assert pipecontext.read(tmp_path, path).mses[0].session == "session_7"


def test_sessions_come_from_the_context_or_the_parameter(tmp_path):
    rec = pipecontext.read(tmp_path, _context(tmp_path, session="session_3"))
    warnings = []
    assert context.assign_sessions(["uid___A002_X1_X2.ms"], [], rec, warnings.append) == {
        "uid___A002_X1_X2.ms": "session_3"}
    assert context.assign_sessions(["uid___A002_X1_X2.ms", "b.ms"], ["s_a"], rec, warnings.append) == {
        "uid___A002_X1_X2.ms": "s_a", "b.ms": "s_a"}
    assert not warnings
    assert context.assign_sessions(["b.ms"], [], rec, warnings.append) == {"b.ms": "session_1"}
    assert "b.ms" in warnings[0] and "not registered" in warnings[0]


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_hostile_context_runs_nothing_and_is_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "pipeline-20260101T000000.context"
    path.write_bytes(pickle.dumps(_Hostile(marker), protocol=protocol))
    obj = picklesafe.load(path)                 # read inertly: os.system is a placeholder
    assert isinstance(obj, picklesafe.Inert) and obj._args == (f"touch {marker}",)
    assert not marker.exists()
    with pytest.raises(InputError, match="pipeline-20260101T000000.context: not a pipeline context"):
        pipecontext.read(tmp_path, path)
    assert not marker.exists()


def test_hostile_object_inside_a_real_looking_context_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = _context(tmp_path)
    ctx = ac.obj("pipeline.infrastructure.launcher.Context", name="pipeline-x", results=[], payload=_Hostile(marker),
                 observing_run=None)
    path.write_bytes(ac.dumps(ctx))
    rec = pipecontext.read(tmp_path, path)
    assert rec.name == "pipeline-x" and not marker.exists()


@pytest.mark.parametrize("content, expect", [(b"not a pickle", "not a readable pickle"),
                                             (b"", "not a readable pickle")])
def test_unreadable_context_is_an_input_error_naming_it(tmp_path, content, expect):
    path = tmp_path / "pipeline-20260101T000000.context"
    path.write_bytes(content)
    with pytest.raises(InputError, match=f"pipeline context pipeline-20260101T000000.context: {expect}"):
        pipecontext.read(tmp_path, path)


def test_missing_stage_result_is_an_input_error_naming_it(tmp_path):
    path = _context(tmp_path)
    (tmp_path / "pipeline-20261120T100000" / "saved_state" / "result-stage3.pickle").unlink()
    with pytest.raises(InputError, match="pipeline-20261120T100000/saved_state/result-stage3.pickle is missing"):
        pipecontext.read(tmp_path, path)


def test_numpy_and_datetime_values_are_real(tmp_path):
    import datetime as dt

    data = pickle.dumps({"a": np.arange(3.0), "t": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                         "s": np.float64(2.5)}, protocol=pickle.HIGHEST_PROTOCOL)
    out = picklesafe.loads(data, "x")
    assert np.array_equal(out["a"], [0.0, 1.0, 2.0]) and out["t"].year == 2026 and float(out["s"]) == 2.5


# -- sessions per filtered list (ExportData._make_lists / _get_sessions, each list on its own) --------
CAL = ["uid___A002_X1_X2.ms", "uid___A002_X1_X3.ms"]
IMG = ["uid___A002_X1_X2_targets.ms", "uid___A002_X1_X3_targets.ms"]


def test_a_session_parameter_is_matched_by_position_against_each_list_on_its_own():
    s = context.session_lists(CAL, IMG, CAL + IMG, ["sA", "sB"], None, lambda m: None)
    assert s.calibration == {CAL[0]: "sA", CAL[1]: "sB"}
    # the imaging MSs are matched from the start of the list again, not after the calibration MSs
    assert s.imaging == {IMG[0]: "sA", IMG[1]: "sB"}
    # exportmses matches the one list of every MS: beyond the parameter's end, its last session
    assert s.every == {CAL[0]: "sA", CAL[1]: "sB", IMG[0]: "sB", IMG[1]: "sB"}
    assert s.merged == {CAL[0]: "sA", CAL[1]: "sB", IMG[0]: "sA", IMG[1]: "sB"}


@pytest.mark.parametrize("given", [["s1"], ["s1", "s2", "s3"]])
def test_the_restore_script_gets_the_session_parameter_verbatim(given):
    s = context.session_lists(CAL, [], CAL, given, None, lambda m: None)
    assert s.restore == given
    assert s.calibration == {CAL[0]: "s1", CAL[1]: "s1" if len(given) == 1 else "s2"}


def test_without_a_parameter_the_restore_script_gets_the_contexts_sessions_and_one_warning(tmp_path):
    rec = pipecontext.read(tmp_path, _context(tmp_path, session="session_3"))
    warnings = []
    s = context.session_lists(["uid___A002_X1_X2.ms"], [], ["uid___A002_X1_X2.ms"], [], rec, warnings.append)
    assert s.restore == ["session_3"] and not warnings
    s = context.session_lists(CAL, IMG, CAL + IMG, [], None, warnings.append)
    assert s.restore == ["session_1", "session_1"]
    assert len(warnings) == 1 and "no pipeline context" in warnings[0]     # once, not once per list
