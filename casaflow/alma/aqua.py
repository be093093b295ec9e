"""The AQUA report (``<prefix>.pipeline_aquareport.xml``), reference §7.7.

Made from the run's QA record (stages with scores, metrics and data selections; flux
measurements; image sensitivities) plus exportdata's own stage. Element and attribute names and
orders are the reference's.
"""

from __future__ import annotations

import datetime as dt
import time

from lxml import etree

from .. import xmlsafe

TOPICS = ("Dataset", "Flagging", "Calibration", "Imaging")

# Registered metrics and their formats; percentages drop the '%'.
METRIC_FORMATS = {"%ApplycalFlags": "{:0.3%}", "%OnlineShadowTemplateFlags": "{:0.3%}", "%TsysCaltableFlags": "{:0.3%}",
                  "%HighLowGainFlags": "{:0.3%}", "%RawBadchansFlags": "{:0.3%}", "%FluxcalFlags": "{:0.3%}",
                  "MissingIntentsMark": "{:0.3f}", "ScoreChecksources": "{:0.3f}", "ScoreParallacticAngle": "{:0.3f}",
                  "PhaseRmsRatio": "{:0.3f}"}


def format_metric(name: str, value) -> str:
    fmt = METRIC_FORMATS.get(name, "{:0.3f}")
    try:
        number = float(value)
        if fmt.endswith("%}"):
            number /= 100.0          # the record keeps percentages as percent values
        return fmt.format(number).rstrip("%")
    except (TypeError, ValueError):
        return str(value)


def _joined(values) -> str:
    return ",".join(str(v) for v in values) if values else "N/A"


def _score_elements(parent, tag: str, score: dict) -> None:
    el = etree.SubElement(parent, tag, Score=_fmt_score(score.get("score")), Reason=score.get("reason", ""))
    m = score.get("metric") or {}
    name = m.get("name", "Unknown metric")
    etree.SubElement(el, "Metric", Name=name,
                     Value=format_metric(name, m["value"]) if m.get("value", "N/A") != "N/A" else "N/A",
                     Units=m.get("units", ""))
    sel = score.get("selection") or {}
    attrs = {"Asdm": _joined(sel.get("asdm")), "Session": _joined(sel.get("session")),
             "Spw": _joined(sorted(sel.get("spw") or [], key=lambda s: (len(str(s)), str(s)))),
             "Intent": _joined(sorted(sel.get("intent") or []))}
    if sel.get("field"):
        attrs["Field"] = sel["field"]
    if sel.get("antenna"):
        attrs["Antenna"] = sel["antenna"]
    etree.SubElement(el, "DataSelection", attrs)


def _fmt_score(value) -> str:
    return "None" if value is None else str(round(float(value), 4))


def _stage(parent, stage: dict) -> None:
    el = etree.SubElement(parent, "Stage", Number=str(stage["number"]), Name=stage["name"])
    visible = [s for s in stage.get("scores", []) if not s.get("hidden")]
    if visible:
        rep = min(visible, key=lambda s: s["score"])
        _score_elements(el, "RepresentativeScore", rep)
    else:
        _score_elements(el, "RepresentativeScore", {"score": None, "reason": "No QA scores registered for this task"})
    for s in visible:
        _score_elements(el, "SubScore", s)


def representative(stage: dict):
    scores = [s["score"] for s in stage.get("scores", []) if not s.get("hidden") and s.get("score") is not None]
    return min(scores) if scores else None


def _flux(parent, origin: str, rows: list[dict], score) -> None:
    box = etree.SubElement(parent, "FluxMeasurements", Origin=origin, Score=score)
    for r in rows:
        etree.SubElement(box, "FluxMeasurement", SpwName=r["spw_name"], MsSpwId=str(r["spw"]),
                         FluxJy=f"{r['flux_jy']:.6f}", ErrorJy=f"{r['error_jy']:.6f}" if r.get("error_jy") else "",
                         Asdm=r["asdm"], Field=r["field"].strip("\"'"), FrequencyGHz=f"{r['freq_ghz']:.6f}")


def _num(value, fmt="{}") -> str:
    try:
        if value is None or value == "":
            return "N/A"
        return fmt.format(float(value))
    except (TypeError, ValueError):
        return "N/A"


def _sensitivity(parent, s: dict) -> None:
    theo = s.get("theoretical_jy")
    theo_s = "N/A" if theo is None or float(theo) < 0 else _num(theo)
    etree.SubElement(parent, "Sensitivity", {
        "Array": s.get("array", "N/A"), "BandwidthHz": _num(s.get("bandwidth_hz")),
        "EffectiveBandwidthHz": _num(s.get("effective_bandwidth_hz")),
        "BeamMajArcsec": _num(s.get("beam_maj_arcsec")), "BeamMinArcsec": _num(s.get("beam_min_arcsec")),
        "BeamPosAngDeg": _num(s.get("beam_pa_deg")), "BwMode": s.get("bwmode", "N/A"),
        "CellXArcsec": _num(s.get("cell_arcsec")), "CellYArcsec": _num(s.get("cell_arcsec")),
        "Intent": s.get("intent", "N/A"), "Field": s.get("field", "N/A"), "Robust": _num(s.get("robust")),
        "UVTaper": s.get("uvtaper") or "N/A",
        "SensitivityJyPerBeam": _num(s.get("observed_jy")), "TheoreticalSensitivityJyPerBeam": theo_s,
        "ObservedSensitivityJyPerBeam": _num(s.get("observed_jy")), "MsSpwId": str(s.get("spw", "N/A")),
        "IsRepresentative": str(bool(s.get("is_representative"))),
        "PbcorImageMinJyPerBeam": _num(s.get("pbcor_min")), "PbcorImageMaxJyPerBeam": _num(s.get("pbcor_max")),
        "ImageMinJyPerBeam": _num(s.get("image_min")), "ImageMaxJyPerBeam": _num(s.get("image_max")),
        "ImageName": s.get("image", "N/A"), "DataType": s.get("datatype", "N/A")})


def build(ppr, ebs: list[str], qa: dict, export_stage: dict, casa_version: str, pipeline_version: str,
          report_time: float | None = None) -> etree._Element:
    """``ppr``: context.Ppr; ``qa``: the run's QA record; ``export_stage``: exportdata's stage
    record in the same form (number, name, topic, start, end, scores)."""
    stages = [*qa.get("stages", []), export_stage]
    root = etree.Element("PipelineAquaReport")
    ps = etree.SubElement(root, "ProjectStructure")
    etree.SubElement(ps, "ProposalCode").text = ppr.project or "Undefined"
    etree.SubElement(ps, "ProcessingRequestEntityId").text = "Undefined"
    etree.SubElement(ps, "ProcessingProcedure").text = ppr.recipe or "Undefined"
    etree.SubElement(ps, "OusEntityId").text = ppr.ous_entity or "Undefined"
    etree.SubElement(ps, "OusPartId").text = ppr.ous_part or "Undefined"
    etree.SubElement(ps, "OusStatusEntityId").text = ppr.mous or "Undefined"
    etree.SubElement(ps, "ExecBlockId").text = ", ".join(ebs) if ebs else "Undefined"

    summary = etree.SubElement(root, "QaSummary")
    now = report_time if report_time is not None else time.time()
    etree.SubElement(summary, "ReportDate").text = dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S")
    starts = [s["start"] for s in stages if s.get("start")]
    ends = [s["end"] for s in stages if s.get("end")]
    elapsed = dt.timedelta(seconds=int(max(ends) - min(starts))) if starts and ends else "Undefined"
    etree.SubElement(summary, "ProcessingTime").text = str(elapsed)
    etree.SubElement(summary, "CasaVersion").text = casa_version
    etree.SubElement(summary, "PipelineVersion").text = pipeline_version
    etree.SubElement(summary, "FinalScore").text = "Undefined"

    per_stage = etree.SubElement(root, "QaPerStage")
    for st in sorted(stages, key=lambda s: s["number"]):
        _stage(per_stage, st)

    per_topic = etree.SubElement(root, "QaPerTopic")
    for topic in TOPICS:
        members = [s for s in stages if s.get("topic") == topic]
        reps = [r for r in (representative(s) for s in members) if r is not None]
        el = etree.SubElement(per_topic, topic, Score=_fmt_score(min(reps)) if reps else "Undefined")
        for st in sorted(members, key=lambda s: s["number"]):
            _stage(el, st)
        if topic == "Dataset" and qa.get("flux_measurements"):
            _flux(etree.SubElement(el, "FluxMeasurements"), "hifa_importdata", qa["flux_measurements"], "Undefined")
        if topic == "Calibration":
            gf = next((s for s in stages if s["name"] == "hifa_gfluxscale"), None)
            score = _fmt_score(representative(gf)) if gf else "Undefined"
            _flux(etree.SubElement(el, "FluxMeasurements"), "hifa_gfluxscale", qa.get("gfluxscale", []), score)
        if topic == "Imaging" and qa.get("sensitivities"):
            mk = [s for s in stages if s["name"] == "hif_makeimages"]
            last = mk[-1] if mk else {"number": "N/A"}
            box = etree.SubElement(etree.SubElement(el, "ImageSensitivity"), "ImageSensitivities",
                                   Origin="hif_makeimages", StageNumber=str(last["number"]),
                                   Score=_fmt_score(representative(last)) if mk else "Undefined")
            for s in qa["sensitivities"]:
                _sensitivity(box, s)
    return root


def to_bytes(root: etree._Element) -> bytes:
    return xmlsafe.to_bytes(root)
