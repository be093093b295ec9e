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
