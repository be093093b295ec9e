"""The AQUA report (``<prefix>.pipeline_aquareport.xml``) as the reference writes it.

Read from (commit fbf19139c1e1be87e01ad7c653534520b6f1bead): ``pipeline/h/tasks/exportdata/aqua.py``
(``AquaXmlGenerator``: project structure, QA summary, per stage, per topic; metric formats;
``xml_for_sensitivity``) and ``pipeline/hifa/tasks/exportdata/almaifaqua.py``
(``AlmaAquaXmlGenerator``: OUS ids and ExecBlockId; flux measurements of hifa_importdata in
Dataset and of hifa_gfluxscale in Calibration; ``SensitivityEstimates`` of hifa_imageprecheck in
Dataset; one ``ImageSensitivities`` per hif_makeimages stage in Imaging).

The report is made from the run's record: :func:`record_from_context` turns a
:class:`~casaflow.alma.pipecontext.RunRecord` into it; :func:`record_from_fallback` turns the
fallback ``pipeline_qa.json`` into the same form. Scores are written as the reference writes
them, ``str()`` of the value, never rounded.
"""

from __future__ import annotations

import datetime as dt
import time

from lxml import etree

from .. import xmlsafe

UNDEFINED = "Undefined"
TOPICS = ("Dataset", "Flagging", "Calibration", "Imaging")

# The registered metrics (``aqua.xml_generator_for_metric`` calls in pipeline/h*, pipeline/hifa);
# every other metric uses the generic '{:0.3f}'. A '%' format is applied to the fraction and
# the trailing '%' trimmed.
METRIC_FORMATS = {"%ApplycalFlags": "{:0.3%}", "%FluxcalFlags": "{:0.3%}", "%HighLowGainFlags": "{:0.3%}",
                  "%OnlineShadowTemplateFlags": "{:0.3%}", "%RawBadchansFlags": "{:0.3%}",
                  "%TsysCaltableFlags": "{:0.3%}", "MissingIntentsMark": "{:0.3f}",
                  "NumberOfPointingOutliers": "{:d}", "OnOffElevationDifference": "{:0.3f}deg",
                  "PhaseRmsRatio": "{:0.3f}", "ScoreChecksources": "{:0.3}", "ScoreParallacticAngle": "{:0.3f}",
                  "SingleDishImageMaskedPixels": "{:0.3}", "LowTransmissionFlags": "{:0.3f}",
                  "AmpVsTimePlotQuality": "{:0.3f}", "XX-YY.deviation": "{:d}"}

NO_SCORE = {"score": None, "reason": "No QA scores registered for this task", "hidden": False,
            "metric": {"name": "Unknown metric", "value": "N/A", "units": ""}, "selection": {}}


def format_metric(name: str, value) -> str:
    spec = METRIC_FORMATS.get(name, "{:0.3f}")
    try:
        out = spec.format(value)
    except (ValueError, TypeError):
        return str(value)
    except Exception:
        return UNDEFINED
    return out[:-1] if spec.endswith("%}") else out


def _score_str(value) -> str:
    return str(value)


# ------------------------------------------------------------------------------------------
def record_from_context(run) -> dict:
    """The report's input from a run's context (pipecontext.RunRecord)."""
    return {"source": "context", "stages": run.stages, "flux_measurements": run.flux_measurements,
            "importdata": run.importdata,
            "gfluxscale": run.gfluxscale, "sensitivity_stages": run.sensitivity_stages,
            "project": {"proposal_code": run.proposal_code, "recipe_name": run.recipe_name,
                        "ous_entity_id": run.ous_entity_id, "ous_part_id": run.ous_part_id,
                        "ousstatus_entity_id": run.ousstatus_entity_id}}


def record_from_fallback(qa: dict) -> dict:
    """The same input from the documented fallback ``pipeline_qa.json`` (casaflow's own format:
    stages with number, name, topic, start, end, scores; flux rows; flat sensitivity rows; metric
    values as the pipeline's metric_score, percentages as fractions)."""
    stages = []
    for st in qa.get("stages", []):
        scores = []
        for s in st.get("scores", []):
            m = dict(s.get("metric") or {})
            sel = s.get("selection") or {}
            scores.append({**s, "metric": m, "selection": {"vis": sel.get("asdm", []), "session": sel.get("session", []),
                                                           "spw": sel.get("spw", []), "intent": sel.get("intent", []),
                                                           "field": [sel["field"]] if sel.get("field") else [],
                                                           "ant": [sel["antenna"]] if sel.get("antenna") else []}})
        visible = [s for s in scores if not s.get("hidden") and s.get("score") is not None]
        stages.append({"number": st["number"], "name": st["name"], "topics": [st.get("topic")],
                       "start": st.get("start"), "end": st.get("end"), "scores": [s for s in scores if not s.get("hidden")],
                       # QAScorePool.representative: an empty pool gives NO_SCORE, a pool of None scores
                       # its first score
                       "representative": min(visible, key=lambda s: s["score"]) if visible else
                       scores[0] if scores else NO_SCORE})
    gf = next((s for s in stages if s["name"] == "hifa_gfluxscale"), None)
    imp = [s["number"] for s in stages if s["name"] == "hifa_importdata"]
    mk = [s for s in stages if s["name"] == "hif_makeimages"]
    sens = [{"array": r.get("array"), "bandwidth": {"value": r.get("bandwidth_hz"), "unit": "Hz"},
             "effective_bw": {"value": r.get("effective_bandwidth_hz"), "unit": "Hz"},
             "beam": {"major": {"value": r.get("beam_maj_arcsec"), "unit": "arcsec"},
                      "minor": {"value": r.get("beam_min_arcsec"), "unit": "arcsec"},
                      "positionangle": {"value": r.get("beam_pa_deg"), "unit": "deg"}},
             "cell": [{"value": r.get("cell_arcsec"), "unit": "arcsec"}] * 2, "bwmode": r.get("bwmode"),
             "intent": r.get("intent"), "field": r.get("field"), "robust": r.get("robust"), "uvtaper": r.get("uvtaper"),
             "observed_sensitivity": {"value": r.get("observed_jy"), "unit": "Jy/beam"},
             "theoretical_sensitivity": {"value": r.get("theoretical_jy"), "unit": "Jy/beam"},
             "pbcor_image_min": {"value": r.get("pbcor_min"), "unit": "Jy/beam"},
             "pbcor_image_max": {"value": r.get("pbcor_max"), "unit": "Jy/beam"},
             "nonpbcor_image_min": {"value": r.get("image_min"), "unit": "Jy/beam"},
             "nonpbcor_image_max": {"value": r.get("image_max"), "unit": "Jy/beam"},
             "imagename": r.get("image"), "datatype": r.get("datatype"),
             "spw": None if r.get("spw") is None else str(r.get("spw")),
             "is_representative": r.get("is_representative")} for r in qa.get("sensitivities", [])]
    flux = qa.get("flux_measurements", [])
    return {"source": "pipeline_qa.json", "stages": stages, "flux_measurements": flux,
            # the fallback's flux rows are hifa_importdata's: they go to its first stage
            "importdata": [(n, flux if i == 0 else []) for i, n in enumerate(imp)],
            "gfluxscale": [(gf["number"], gf["representative"]["score"], qa.get("gfluxscale", []))] if gf else [],
            "sensitivity_stages": [("hif_makeimages", mk[-1]["number"], mk[-1]["representative"]["score"], sens)]
            if mk else [], "project": None}


# ------------------------------------------------------------------------------------------
def _metric(parent, score: dict) -> None:
    m = score.get("metric") or NO_SCORE["metric"]
    name = str(m.get("name", "Unknown metric"))
    etree.SubElement(parent, "Metric", Name=name, Value=format_metric(name, m.get("value", "N/A")),
                     Units=str(m.get("units", "")))


def _asdm(vis) -> str:
    name = str(vis).rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def _selection(parent, score: dict) -> None:
    sel = score.get("selection") or {}
    vis = sel.get("vis") or []
    sessions = sel.get("session") or []
    attrs = {"Asdm": ",".join(_asdm(v) for v in vis) if vis else "N/A",
             "Session": ",".join(str(s) for s in sessions) if sessions else "N/A",
             "Spw": ",".join(sorted(str(s) for s in sel.get("spw") or [])) or "N/A",
             "Intent": ",".join(sorted(str(s) for s in sel.get("intent") or [])) or "N/A"}
    fields = ",".join(sorted(str(s) for s in sel.get("field") or []))
    if fields:
        attrs["Field"] = fields
    ants = ",".join(sorted(str(s) for s in sel.get("ant") or []))
    if ants:
        attrs["Antenna"] = ants
    etree.SubElement(parent, "DataSelection", attrs)


def _score_element(parent, tag: str, score: dict) -> None:
    el = etree.SubElement(parent, tag, Score=_score_str(score.get("score")), Reason=str(score.get("reason", "")))
    _metric(el, score)
    _selection(el, score)


def _per_stage(parent, stages: list[dict]) -> None:
    for st in sorted(stages, key=lambda s: s["number"]):
        el = etree.SubElement(parent, "Stage", Number=str(st["number"]), Name=st["name"])
        _score_element(el, "RepresentativeScore", st.get("representative") or NO_SCORE)
        for s in st.get("scores", []):
            _score_element(el, "SubScore", s)


def _flux_stage(parent, origin: str, score: str, rows: list[dict]) -> None:
    box = etree.SubElement(parent, "FluxMeasurements", Origin=origin, Score=score)
    for r in rows:
        err = r.get("error_jy")
        etree.SubElement(box, "FluxMeasurement", SpwName=str(r.get("spw_name", "")), MsSpwId=str(r["spw"]),
                         FluxJy=f"{float(r['flux_jy']):.6f}", ErrorJy=f"{float(err):.6f}" if err else "",
                         Asdm=str(r["asdm"]), Field=str(r["field"]).strip('"'),
                         FrequencyGHz=f"{float(r['freq_ghz']):.6f}" if r.get("freq_ghz") is not None else "")


# Unit factors for the quantities in sensitivity dicts (CASA quanta {'value', 'unit'} or strings).
_UNITS = {"Hz": {"Hz": 1.0, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9},
          "arcsec": {"arcsec": 1.0, "arcmin": 60.0, "deg": 3600.0, "rad": 206264.80624709636, "mas": 1e-3},
          "deg": {"deg": 1.0, "rad": 57.29577951308232, "arcsec": 1 / 3600.0},
          "Jy/beam": {"Jy/beam": 1.0, "mJy/beam": 1e-3, "uJy/beam": 1e-6, "Jy": 1.0, "mJy": 1e-3, "uJy": 1e-6}}


def _quantity(q, unit: str) -> str:
    """``str(qa.getvalue(qa.convert(q, unit))[0])``, or 'N/A' when it cannot be converted."""
    try:
        if isinstance(q, dict):
            value, u = q["value"], q.get("unit", unit)
        else:
            import re

            m = re.match(r"^\s*([-+0-9.eE]+)\s*(\S*)\s*$", str(q))
            value, u = m.group(1), m.group(2) or unit
        if isinstance(value, (list, tuple)):
            value = value[0]
        return str(float(value) * _UNITS[unit][u])
    except Exception:
        return "N/A"


# Keys the reference's ``xml_for_sensitivity`` reads as ``d[key]`` with no default: when one is
# missing the reference raises and writes no AQUA report at all ('Undefined' in the manifest).
REQUIRED_SENSITIVITY_KEYS = {"array": "Array", "bwmode": "BwMode", "intent": "Intent", "field": "Field",
                             "spw": "MsSpwId"}


def _sensitivity(parent, d: dict, stage_name: str, missing: set | None = None) -> None:
    def required(key):
        """casaflow keeps the report: a missing (or None) required value is 'N/A', and warned."""
        v = d.get(key)
        if v is None:
            if missing is not None:
                missing.add(REQUIRED_SENSITIVITY_KEYS[key])
            return "N/A"
        return str(v)

    def q(key, unit, sub=None):
        v = d.get(key)
        if sub is not None:
            v = (v or {})[sub] if isinstance(v, dict) else (v[sub] if isinstance(v, (list, tuple)) and len(v) > sub else None)
        return "N/A" if v is None else _quantity(v, unit)

    eff = q("effective_bw", "Hz")
    theo = "N/A"
    t = d.get("theoretical_sensitivity")
    if t is not None:
        value = t.get("value") if isinstance(t, dict) else None
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        try:
            theo = "N/A" if float(value) < 0 else _quantity(t, "Jy/beam")
        except (TypeError, ValueError):
            theo = "N/A"
    observed = q("observed_sensitivity", "Jy/beam")
    rep = d.get("is_representative")
    etree.SubElement(parent, "Sensitivity", {
        "Array": required("array"), "BandwidthHz": q("bandwidth", "Hz"),
        "EffectiveBandwidthHz": "N/A" if eff == "0.0" else eff,
        "BeamMajArcsec": q("beam", "arcsec", "major"), "BeamMinArcsec": q("beam", "arcsec", "minor"),
        "BeamPosAngDeg": q("beam", "deg", "positionangle"), "BwMode": required("bwmode"),
        "CellXArcsec": q("cell", "arcsec", 0), "CellYArcsec": q("cell", "arcsec", 1),
        "Intent": required("intent"), "Field": required("field"), "Robust": str(d.get("robust", "")),
        "UVTaper": str(d.get("uvtaper", "")),
        "SensitivityJyPerBeam": theo if stage_name == "hifa_imageprecheck" else observed,
        "TheoreticalSensitivityJyPerBeam": theo, "ObservedSensitivityJyPerBeam": observed,
        "MsSpwId": required("spw"), "IsRepresentative": "N/A" if rep is None else str(rep),
        "PbcorImageMinJyPerBeam": q("pbcor_image_min", "Jy/beam"), "PbcorImageMaxJyPerBeam": q("pbcor_image_max", "Jy/beam"),
        "ImageMinJyPerBeam": q("nonpbcor_image_min", "Jy/beam"), "ImageMaxJyPerBeam": q("nonpbcor_image_max", "Jy/beam"),
        "ImageName": "N/A" if d.get("imagename") is None else str(d["imagename"]),
        "DataType": "N/A" if d.get("datatype") is None else str(d["datatype"])})


def _sensitivity_stages(parent, record: dict, tag: str, topic_numbers: set, warn=None) -> None:
    """One ``<tag Origin StageNumber Score>`` per hifa_imageprecheck / hif_makeimages stage of the
    topic, in stage order, directly under the topic element: the reference's
    ``sensitivity_xml_for_stages`` builds them inside an ``ImageSensitivity`` element and the
    topic ``extend``s itself with that element's children, so the container is never written."""
    stages = [s for s in record["sensitivity_stages"]
              if s[0] in ("hifa_imageprecheck", "hif_makeimages") and s[1] in topic_numbers]
    for name, number, score, rows in sorted(stages, key=lambda s: s[1]):
        el = etree.SubElement(parent, tag, Origin=name, StageNumber=str(number), Score=_score_str(score))
        missing: set = set()
        for d in rows:
            _sensitivity(el, d, name, missing)
        if missing and warn is not None:
            warn(f"AQUA report: stage {number} ({name}) has sensitivities without {', '.join(sorted(missing))}; "
                 f"written as N/A (the reference writes no AQUA report then)")


def build(ppr, run, ebs: list[str], record: dict, casa_version: str, pipeline_version: str,
          report_time: float | None = None, warn=None) -> etree._Element:
    """``ppr``: context.Ppr (used when there is no context); ``run``: the RunRecord or None;
    ``record``: :func:`record_from_context` or :func:`record_from_fallback`; ``warn``: called
    with a message for each stage whose sensitivities lack a value the reference requires."""
    stages = record["stages"]
    proj = record.get("project") or {"proposal_code": ppr.project or UNDEFINED, "recipe_name": ppr.recipe or UNDEFINED,
                                     "ous_entity_id": ppr.ous_entity or UNDEFINED,
                                     "ous_part_id": ppr.ous_part or UNDEFINED,
                                     "ousstatus_entity_id": ppr.mous or UNDEFINED}
    root = etree.Element("PipelineAquaReport")
    ps = etree.SubElement(root, "ProjectStructure")
    etree.SubElement(ps, "ProposalCode").text = proj["proposal_code"]
    etree.SubElement(ps, "ProcessingRequestEntityId").text = UNDEFINED
    etree.SubElement(ps, "ProcessingProcedure").text = proj["recipe_name"]
    etree.SubElement(ps, "OusEntityId").text = proj["ous_entity_id"]
    etree.SubElement(ps, "OusPartId").text = proj["ous_part_id"]
    etree.SubElement(ps, "OusStatusEntityId").text = proj["ousstatus_entity_id"]
    etree.SubElement(ps, "ExecBlockId").text = ", ".join(ebs) if ebs else UNDEFINED

    summary = etree.SubElement(root, "QaSummary")
    now = report_time if report_time is not None else time.time()
    etree.SubElement(summary, "ReportDate").text = dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S")
    first, last = (stages[0], stages[-1]) if stages else (None, None)
    if first and first.get("start") is not None and last.get("end") is not None:
        elapsed = str(dt.timedelta(seconds=int(last["end"] - first["start"])))
    else:
        elapsed = UNDEFINED
    etree.SubElement(summary, "ProcessingTime").text = elapsed
    etree.SubElement(summary, "CasaVersion").text = casa_version
    etree.SubElement(summary, "PipelineVersion").text = pipeline_version
    etree.SubElement(summary, "FinalScore").text = UNDEFINED

    _per_stage(etree.SubElement(root, "QaPerStage"), stages)

    per_topic = etree.SubElement(root, "QaPerTopic")
    for topic in TOPICS:
        members = [s for s in stages if topic in (s.get("topics") or [])]
        reps = [s["representative"]["score"] for s in members if (s.get("representative") or {}).get("score") is not None]
        el = etree.SubElement(per_topic, topic, Score=_score_str(min(reps)) if reps else UNDEFINED)
        _per_stage(el, members)
        numbers = {s["number"] for s in members}
        # The reference's almaifaqua topics ``extend`` themselves with a FluxMeasurements (and an
        # ImageSensitivity) container, which adds the container's children only.
        if topic == "Dataset":
            # one element per hifa_importdata stage, even with no measurements; none without one
            for number, rows in record["importdata"]:
                if number in numbers:
                    _flux_stage(el, "hifa_importdata", UNDEFINED, rows)
            _sensitivity_stages(el, record, "SensitivityEstimates", numbers, warn)
        if topic == "Calibration":
            # one element per hifa_gfluxscale stage; nothing without one
            for number, score, rows in record["gfluxscale"]:
                if number in numbers:
                    _flux_stage(el, "hifa_gfluxscale", _score_str(score), rows)
        if topic == "Imaging":
            _sensitivity_stages(el, record, "ImageSensitivities", numbers, warn)
    return root


def to_bytes(root: etree._Element) -> bytes:
    """As ``aqua.export_to_disk`` writes it (minidom pretty-print)."""
    return xmlsafe.to_reference_bytes(root)
