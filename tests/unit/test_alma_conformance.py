"""casaflow's manifest and AQUA trees against the table read from the reference's writer code
(tests/fixtures/alma_reference_xml.json, reference commit in the file), on synthetic inputs."""

from __future__ import annotations

import pytest
from lxml import etree

from casaflow.alma import aqua, context, exportdata, pipecontext
from tests import alma_conformance
from tests.unit.test_alma_context import OUS, _context


def test_table_names_the_reference_commit():
    assert alma_conformance.TABLE["reference"]["commit"] == "fbf19139c1e1be87e01ad7c653534520b6f1bead"
    for doc in ("pipeline_manifest", "pipeline_aquareport"):
        assert all(e["source"].startswith("pipeline/") for e in alma_conformance.TABLE[doc]["elements"])


def _aqua(tmp_path) -> bytes:
    rec = pipecontext.read(tmp_path, _context(tmp_path))
    report = aqua.build(context.Ppr(), rec, ["uid://A002/X1/X2"], aqua.record_from_context(rec), "6.6.6", "2025.1")
    return aqua.to_bytes(report)


def _manifest(with_aux: bool) -> bytes:
    ex = exportdata.Exported()
    ex.names = {"ppr": "p.pprequest.xml", "weblog": "p.weblog.tgz", "casa_commands": "p.casa_commands.log",
                "casa_pipescript": "p.casa_pipescript.py", "casa_piperestorescript": "p.casa_piperestorescript.py",
                "aqua_report": "p.pipeline_aquareport.xml", "auxproducts": "p.auxproducts.tgz"}
    ex.per_ms = {"a.ms": {"finalflags": "a.ms.flagversions.tgz", "applycmds": "a.ms.calapply.txt"}}
    ex.caltables = {"session_1": f"{OUS}.session_1.caltables.tgz"}
    keywords = {k: "1" for k in exportdata.HEADER_KEYS} | {"nspwnam": "1", "spwnam01": "X"} | {
        k: "1" for k in ("imagemin", "imagemax", "rms", "producttype", "pl_datatype", "pol", "datatype", "format",
                         "ous")}
    ex.images = [(f"{OUS}.J1_bp.spw0.mfs.regcal.I.pbcor.fits", "calibrator", keywords),
                 ("uid___A002_X1_X2.J1_chk.spw0.mfs.regcal.I.pbcor.fits", "calibrator", {}),
                 (f"{OUS}.T_sci.spw0.mfs.regcal.I.pbcor.fits", "target", keywords)]
    imaging = []
    if with_aux:
        imaging = ["a_targets.ms"]
        ex.aux_caltables = {"session_2": f"{OUS}.session_2.auxcaltables.tgz"}
        ex.aux_apply = {"a_targets.ms": "a_targets.ms.auxcalapply.txt"}
    p = exportdata.ExportParams()
    m = exportdata._manifest(None, f"{OUS}.hifa_calimage", OUS, "hifa_calimage", "6.6.6", "2025.1", ex, ["a.ms"],
                             imaging, {"a.ms": "session_1", "a_targets.ms": "session_2"}, p)
    return m.to_bytes()


def test_aqua_report_conforms(tmp_path):
    data = _aqua(tmp_path)
    assert alma_conformance.check(data, "pipeline_aquareport") == []
    root = etree.fromstring(data)
    # the score as the context holds it, never rounded
    assert root.find("QaPerStage/Stage/RepresentativeScore").get("Score") == "0.876543219"


@pytest.mark.parametrize("with_aux", [False, True])
def test_manifest_conforms_and_puts_per_eb_images_at_ous_level(with_aux):
    data = _manifest(with_aux)
    assert alma_conformance.check(data, "pipeline_manifest") == []
    ous = etree.fromstring(data).find("ous")
    assert [i.get("name").split(".")[0] for i in ous.findall("image")] == [OUS, "uid___A002_X1_X2", OUS]
    assert not ous.findall("session/asdm/image")
    if with_aux:     # a session only the imaging MSs are in comes after aux_products_file
        assert [c.tag for c in ous][-2:] == ["aux_products_file", "session"]


@pytest.mark.parametrize("mutate, expect", [
    (lambda r: r.find("ous/weblog").addprevious(r.find("ous/pipescript")), "out of order"),
    (lambda r: r.find("ous/casaversion").set("extra", "x"), "not in the reference's list"),
    (lambda r: r.find("ous/piperequest").attrib.pop("level"), "'ous' where 'level' is expected"),
    (lambda r: r.find("ous").append(etree.Element("flux_file")), "element not written by the reference"),
])
def test_checker_finds_what_differs(mutate, expect):
    root = etree.fromstring(_manifest(False))
    mutate(root)
    data = b'<?xml version="1.0" ?>\n' + etree.tostring(root)
    problems = alma_conformance.check(data, "pipeline_manifest")
    assert any(expect in p for p in problems), problems


def test_checker_finds_a_wrong_declaration():
    data = etree.tostring(etree.fromstring(_manifest(False)), xml_declaration=True, encoding="UTF-8")
    assert any("declaration" in p for p in alma_conformance.check(data, "pipeline_manifest"))


# -- the QaPerTopic children (almaifaqua.py get_*_topic: xml_root.extend(container)) -----------------
def test_extend_with_an_element_adds_its_children_only():
    """The premise of the table's QaPerTopic rows, shown with the library the reference uses."""
    import xml.etree.ElementTree as ET

    topic, box = ET.Element("Calibration"), ET.Element("FluxMeasurements")
    ET.SubElement(box, "FluxMeasurements", Origin="hifa_gfluxscale", Score="1.0")
    topic.extend(box)
    assert [(c.tag, c.get("Origin")) for c in topic] == [("FluxMeasurements", "hifa_gfluxscale")]
    topic.extend(ET.Element("FluxMeasurements"))       # no gfluxscale stage: nothing at all
    assert len(topic) == 1


def _stage(number, name, topic, score):
    s = {"score": score, "reason": f"{name} done", "hidden": False,
         "metric": {"name": "Unknown metric", "value": "N/A", "units": ""}, "selection": {}}
    return {"number": number, "name": name, "topics": [topic], "start": 0.0, "end": 1.0, "scores": [s],
            "representative": s}


def _sens(array="12m", drop=()):
    d = {"array": array, "bandwidth": {"value": 2.0, "unit": "GHz"}, "effective_bw": {"value": 0.0, "unit": "Hz"},
         "beam": {"major": {"value": 1.5, "unit": "arcsec"}, "minor": {"value": 1.0, "unit": "arcsec"},
                  "positionangle": {"value": 30.0, "unit": "deg"}},
         "cell": [{"value": 0.25, "unit": "arcsec"}] * 2, "bwmode": "cube", "intent": "TARGET", "field": "NGC1",
         "robust": 0.5, "uvtaper": [], "observed_sensitivity": {"value": 1.0, "unit": "mJy/beam"},
         "theoretical_sensitivity": {"value": 0.5, "unit": "mJy/beam"}, "pbcor_image_min": None,
         "pbcor_image_max": None, "nonpbcor_image_min": None, "nonpbcor_image_max": None, "imagename": "x.image",
         "datatype": "REGCAL_CONTLINE_ALL", "spw": "17", "is_representative": True}
    return {k: v for k, v in d.items() if k not in drop}


FLUX = {"spw_name": "X1#BB_2", "spw": 1, "flux_jy": 0.5, "error_jy": 0.01, "asdm": "uid___A002_X1_X2",
        "field": "J1", "freq_ghz": 101.125}


def _record(gfluxscale=True, importdata_rows=(), sens_rows=None):
    stages = [_stage(1, "hifa_importdata", "Dataset", 1.0), _stage(2, "hifa_flagdata", "Flagging", 0.9)]
    if gfluxscale:
        stages.append(_stage(3, "hifa_gfluxscale", "Calibration", 0.8))
    stages += [_stage(4, "hifa_imageprecheck", "Dataset", 0.85), _stage(5, "hif_makeimages", "Imaging", 0.7),
               _stage(6, "hif_makeimages", "Imaging", 0.75)]
    rows = [_sens()] if sens_rows is None else sens_rows
    return {"source": "test", "stages": stages, "project": None, "flux_measurements": list(importdata_rows),
            "importdata": [(1, list(importdata_rows))],
            "gfluxscale": [(3, 0.8, [FLUX])] if gfluxscale else [],
            "sensitivity_stages": [("hifa_imageprecheck", 4, 0.85, rows), ("hif_makeimages", 5, 0.7, rows),
                                   ("hif_makeimages", 6, 0.75, rows)]}


def _report(record, warn=None) -> bytes:
    return aqua.to_bytes(aqua.build(context.Ppr(), None, [], record, "6.6.6", "2025.1", report_time=0.0, warn=warn))


def test_topics_hold_the_stage_elements_directly(tmp_path):
    data = _report(_record(importdata_rows=[FLUX]))
    assert alma_conformance.check(data, "pipeline_aquareport") == []
    topics = etree.fromstring(data).find("QaPerTopic")
    assert [(c.tag, c.get("Origin")) for c in topics.find("Dataset")] == [
        ("Stage", None), ("Stage", None), ("FluxMeasurements", "hifa_importdata"),
        ("SensitivityEstimates", "hifa_imageprecheck")]
    assert [(c.tag, c.get("Origin"), c.get("Score")) for c in topics.find("Calibration")] == [
        ("Stage", None, None), ("FluxMeasurements", "hifa_gfluxscale", "0.8")]
    assert [(c.tag, c.get("StageNumber")) for c in topics.find("Imaging")] == [
        ("Stage", None), ("Stage", None), ("ImageSensitivities", "5"), ("ImageSensitivities", "6")]
    assert topics.find("Dataset/FluxMeasurements/FluxMeasurement").get("FluxJy") == "0.500000"
    assert topics.find("Calibration/FluxMeasurements").get("Score") == "0.8"
    assert not topics.findall(".//ImageSensitivity")
    assert not [e for e in topics.iter("FluxMeasurements") if e.find("FluxMeasurements") is not None]


def test_no_gfluxscale_means_no_calibration_flux_element_and_an_empty_importdata_one_stays():
    data = _report(_record(gfluxscale=False, importdata_rows=[]))
    assert alma_conformance.check(data, "pipeline_aquareport") == []
    topics = etree.fromstring(data).find("QaPerTopic")
    assert [c.tag for c in topics.find("Calibration")] == []
    flux = topics.findall("Dataset/FluxMeasurements")
    assert [(f.get("Origin"), f.get("Score"), len(f)) for f in flux] == [("hifa_importdata", "Undefined", 0)]


def _wrap(parent, tag, children_tag):
    box = etree.Element(tag)
    wrapped = parent.findall(children_tag)
    wrapped[0].addprevious(box)
    box.extend(wrapped)


@pytest.mark.parametrize("topic, container, children", [
    ("Dataset", "FluxMeasurements", "FluxMeasurements"),
    ("Calibration", "FluxMeasurements", "FluxMeasurements"),
    ("Dataset", "ImageSensitivity", "SensitivityEstimates"),
    ("Imaging", "ImageSensitivity", "ImageSensitivities"),
])
def test_a_container_the_reference_never_writes_fails_the_check(topic, container, children):
    """casaflow's session-1 report had these containers, and so did the table: this would have failed."""
    root = etree.fromstring(_report(_record(importdata_rows=[FLUX])))
    _wrap(root.find(f"QaPerTopic/{topic}"), container, children)
    problems = alma_conformance.check(b'<?xml version="1.0" ?>\n' + etree.tostring(root), "pipeline_aquareport")
    assert any(f"QaPerTopic/{topic}" in p for p in problems), problems


def test_an_empty_calibration_container_fails_the_check():
    root = etree.fromstring(_report(_record(gfluxscale=False)))
    etree.SubElement(root.find("QaPerTopic/Calibration"), "FluxMeasurements")
    problems = alma_conformance.check(b'<?xml version="1.0" ?>\n' + etree.tostring(root), "pipeline_aquareport")
    assert any("Calibration/FluxMeasurements: attributes missing" in p for p in problems), problems


def test_an_origin_the_writer_cannot_give_fails_the_check():
    root = etree.fromstring(_report(_record(importdata_rows=[FLUX])))
    root.find("QaPerTopic/Dataset/FluxMeasurements").set("Origin", "hifa_gfluxscale")
    problems = alma_conformance.check(b'<?xml version="1.0" ?>\n' + etree.tostring(root), "pipeline_aquareport")
    assert any("Origin='hifa_gfluxscale'" in p for p in problems), problems


# -- Sensitivity values (aqua.py xml_for_sensitivity) ---------------------------------------------
def test_sensitivity_values_and_a_missing_required_key_is_na_and_warned():
    warnings = []
    data = _report(_record(sens_rows=[_sens(), _sens(drop=("array", "spw"))]), warn=warnings.append)
    assert alma_conformance.check(data, "pipeline_aquareport") == []
    good, bad = etree.fromstring(data).findall("QaPerTopic/Imaging/ImageSensitivities")[0]
    assert (good.get("BandwidthHz"), good.get("EffectiveBandwidthHz"), good.get("Robust"), good.get("UVTaper")) == \
        (str(2.0e9), "N/A", "0.5", "[]")
    assert (good.get("SensitivityJyPerBeam"), good.get("ObservedSensitivityJyPerBeam")) == (str(1e-3), str(1e-3))
    assert (bad.get("Array"), bad.get("MsSpwId"), bad.get("BwMode")) == ("N/A", "N/A", "cube")
    # one warning per stage that has such rows (imageprecheck 4, makeimages 5 and 6)
    assert len(warnings) == 3 and all("Array, MsSpwId" in w for w in warnings)


def test_fallback_representative_as_the_score_pool_gives_it():
    """QAScorePool.representative: the lowest visible numerical score; with only None scores the
    pool's first; with an empty pool 'No QA scores registered'."""
    none = {"score": None, "reason": "not scored", "metric": {"name": "M", "value": 1, "units": ""}}
    qa = {"stages": [{"number": 1, "name": "hifa_importdata", "topic": "Dataset", "scores": [none]},
                     {"number": 2, "name": "hifa_flagdata", "topic": "Flagging", "scores": []},
                     {"number": 3, "name": "hifa_wvrgcal", "topic": "Calibration",
                      "scores": [{**none, "score": 0.9, "reason": "a"}, {**none, "score": 0.4, "reason": "b",
                                                                          "hidden": True}]}]}
    reps = [s["representative"]["reason"] for s in aqua.record_from_fallback(qa)["stages"]]
    assert reps == ["not scored", "No QA scores registered for this task", "a"]
