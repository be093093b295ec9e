"""A finished run's own record: its pickled context and per-stage results, read inertly.

Where the reference keeps them (commit fbf19139c1e1be87e01ad7c653534520b6f1bead):

* ``pipeline-<timestamp>.context`` in the working directory: ``Context.save`` pickles the
  ``pipeline.infrastructure.launcher.Context`` (``pipeline/infrastructure/launcher.py``);
* ``<context.name>/saved_state/result-stage<N>.pickle``: ``ResultsProxy.write``
  (``pipeline/infrastructure/basetask.py``); ``context.results`` holds the proxies, each with the
  pickle's ``_basename``.

Everything is read with :mod:`casaflow.alma.picklesafe` (nothing executed) and walked by the
reference's attribute names:

* ``context.observing_run.measurement_sets``: ``name``, ``_session`` (the ``session`` property's
  store), ``execblock_id``, ``fields`` (``id``, ``name``), ``spectral_windows`` (pickled state
  tuple, ``SpectralWindow.__getstate__`` order: ``id`` first, ``name`` seventh,
  ``_centre_frequency`` fifteenth);
* ``context.project_summary.proposal_code``; ``context.project_structure``: ``recipe_name``,
  ``ous_entity_id``, ``ous_part_id``, ``ousstatus_entity_id``;
* ``context.calimlist`` / ``context.sciimlist`` (``ImageLibrary._images``: plain dicts);
* ``context.selfcal_resources``, ``context.findroi_resources``;
* each result: ``stage_number``, ``pipeline_casa_task``, ``timestamps`` (``start``, ``end``),
  ``qa`` (``QAScorePool``: ``pool``, ``_representative``), each ``QAScore``: ``score``,
  ``longmsg``, ``weblog_location``, ``origin`` (``QAOrigin``: metric_name, metric_score,
  metric_units), ``applies_to`` (``TargetDataSelection``: session, vis, spw, field, intent, ant);
  a ``ResultsList`` keeps its items in ``_ResultsList__results``; hifa_importdata's flux
  measurements: ``setjy_results[0].measurements``; hifa_gfluxscale's: ``measurements``
  (field id -> ``FluxMeasurement``: ``spw_id``, ``I``, ``uncertainty``); sensitivities:
  ``sensitivities_for_aqua`` (hifa_imageprecheck, hif_makeimages).
"""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .picklesafe import Inert, load

CONTEXT_CLASS = "pipeline.infrastructure.launcher.Context"

# Result classes per AQUA topic, by class name: the ``qaadapter.registry.register_to_*_topic``
# calls in pipeline/h, pipeline/hif and pipeline/hifa ``tasks/*/__init__.py``.
TOPIC_CLASSES = {
    "Dataset": {"ALMAImportDataResults", "BpSolintResults", "ExportDataResults", "GaincalSnrResults",
                "ImagePreCheckResults", "ImportDataResults", "MsSplitResults", "MstransformResults", "RenormResults",
                "RestoreDataResults", "SelfcalResults", "UVcontSubResults"},
    "Flagging": {"ApplycalResults", "CorrectedampflagResults", "FlagDeterALMAResults", "FlagDeterBaseResults",
                 "FlagTargetsALMAResults", "FlagdataSetterResults", "FluxcalFlagResults", "LowgainflagResults",
                 "RawflagchansResults", "TsysflagResults"},
    "Calibration": {"AntposResults", "BandpassResults", "BandpassflagResults", "DiffGaincalResults",
                    "FluxCalibrationResults", "GaincalResults", "GcorFluxscaleResults", "GfluxscaleflagResults",
                    "PolcalResults", "PolcalflagResults", "SessionRefAntResults", "SpwPhaseupResults",
                    "TargetflagResults", "TsyscalResults", "WvrgcalResult", "WvrgcalflagResults"},
    "Imaging": {"BoxResult", "CheckProductSizeResult", "FindContResult", "FindROIResult", "MakeImListResult",
                "MakeImagesResult", "TcleanResult"},
}
HIDDEN = 3     # WebLogLocation.HIDDEN (enum.auto(): BANNER=1, ACCORDION=2, HIDDEN=3, UNSET=4)
NAMEDTUPLE_FIELDS = {"Timestamps": ("start", "end"), "QAOrigin": ("metric_name", "metric_score", "metric_units")}
SPW_STATE = {"id": 0, "name": 6, "_centre_frequency": 14}


@dataclass
class MsRecord:
    name: str                 # basename, e.g. uid___A002_X1_X2.ms
    session: str
    execblock_id: str
    fields: dict = field(default_factory=dict)          # id -> name
    spws: dict = field(default_factory=dict)            # id -> (name, centre frequency in GHz)


@dataclass
class RunRecord:
    path: Path
    name: str
    mses: list = field(default_factory=list)
    proposal_code: str = "Undefined"
    recipe_name: str = "Undefined"
    ous_entity_id: str = "Undefined"
    ous_part_id: str = "Undefined"
    ousstatus_entity_id: str = "Undefined"
    calimlist: list = field(default_factory=list)
    sciimlist: list = field(default_factory=list)
    selfcal_resources: list = field(default_factory=list)
    findroi_resources: list = field(default_factory=list)
    stages: list = field(default_factory=list)          # dicts, see _stage()
    flux_measurements: list = field(default_factory=list)   # hifa_importdata, all stages
    importdata: list = field(default_factory=list)          # [(stage number, rows)] per hifa_importdata
    gfluxscale: list = field(default_factory=list)          # [(stage number, score, rows)]
    sensitivity_stages: list = field(default_factory=list)  # [(name, number, score, [dict])]

    def ms(self, name: str) -> MsRecord | None:
        return next((m for m in self.mses if m.name == name), None)


# ------------------------------------------------------------------------------------------
def attr(obj, name, default=None):
    """An attribute of a placeholder (its pickled state), a dict key, or a namedtuple field."""
    if isinstance(obj, Inert):
        state = obj.attrs()
        if name in state:
            return state[name]
        fields = NAMEDTUPLE_FIELDS.get(obj._name)
        if fields and name in fields and len(obj._args) > fields.index(name):
            return obj._args[fields.index(name)]
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def items(obj) -> list:
    """A list, a set, or a placeholder of a list subclass / ResultsList."""
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, Inert):
        inner = attr(obj, "_ResultsList__results")
        if inner is not None:
            return items(inner)
        return list(obj._list)
    return []


def is_list(obj) -> bool:
    return isinstance(obj, (list, tuple)) or (isinstance(obj, Inert) and attr(obj, "_ResultsList__results") is not None)


def text(value, default="Undefined") -> str:
    return default if value is None else str(value)


def number(value):
    if isinstance(value, Inert):       # a measures.* value: (value, units) state
        state = value._state
        if isinstance(state, tuple) and len(state) == 2:
            return number(state[0]), state[1]
        return None
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def to_unit(measure, unit_key: str):
    """A pipeline measure (``FluxDensity``/``Frequency``: state (value, units dict)) in the unit
    whose factor the units dict holds under ``unit_key`` ('Jy' or 'hz')."""
    got = number(measure)
    if not isinstance(got, tuple):
        return None
    value, units = got
    try:
        return float(value) * float(units[unit_key])
    except (KeyError, TypeError, ValueError):
        return None


def epoch(value) -> float | None:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()
    return None


# ------------------------------------------------------------------------------------------
def find_context(working: Path) -> Path | None:
    """The newest ``pipeline-<timestamp>.context`` in the working directory."""
    found = sorted(p for p in Path(working).glob("pipeline-*.context") if p.is_file())
    return found[-1] if found else None


def read(working: Path, path: Path) -> RunRecord:
    ctx = load(path, f"pipeline context {path.name}")
    if not isinstance(ctx, Inert) or ctx.qualname != CONTEXT_CLASS:
        got = ctx.qualname if isinstance(ctx, Inert) else type(ctx).__name__
        raise InputError(f"pipeline context {path.name}: not a pipeline context (holds {got}, expected {CONTEXT_CLASS})")
    name = text(attr(ctx, "name"), "")
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"pipeline context {path.name}: context name {name!r} is not a directory name")
    rec = RunRecord(path=path, name=name)
    summary, structure = attr(ctx, "project_summary"), attr(ctx, "project_structure")
    rec.proposal_code = text(attr(summary, "proposal_code"))
    for key in ("recipe_name", "ous_entity_id", "ous_part_id", "ousstatus_entity_id"):
        setattr(rec, key, text(attr(structure, key)))
    for ms in items(attr(attr(ctx, "observing_run"), "measurement_sets")):
        rec.mses.append(_ms(ms))
    rec.calimlist = [dict(d) for d in items(attr(attr(ctx, "calimlist"), "_images")) if isinstance(d, dict)]
    rec.sciimlist = [dict(d) for d in items(attr(attr(ctx, "sciimlist"), "_images")) if isinstance(d, dict)]
    rec.selfcal_resources = [str(r) for r in items(attr(ctx, "selfcal_resources", []))]
    rec.findroi_resources = [str(r) for r in items(attr(ctx, "findroi_resources", []))]
    saved = Path(working) / name / "saved_state"
    for proxy in items(attr(ctx, "results")):
        basename = text(attr(proxy, "_basename"), "")
        if not basename.startswith("result-stage") or "/" in basename:
            raise InputError(f"pipeline context {path.name}: result proxy names {basename!r}, "
                             f"not a result-stage<N>.pickle")
        result_path = saved / basename
        if not result_path.is_file():
            raise InputError(f"pipeline context {path.name}: its result {name}/saved_state/{basename} is missing")
        _result(rec, load(result_path, f"stage result {name}/saved_state/{basename}"), basename)
    rec.stages.sort(key=lambda s: s["number"])
    return rec


def _ms(ms) -> MsRecord:
    fields = {attr(f, "id"): text(attr(f, "name"), "") for f in items(attr(ms, "fields"))}
    spws = {}
    for s in items(attr(ms, "spectral_windows")):
        state = s._state if isinstance(s, Inert) else None
        if isinstance(state, tuple) and len(state) > SPW_STATE["_centre_frequency"]:
            ghz = to_unit(state[SPW_STATE["_centre_frequency"]], "hz")
            spws[state[SPW_STATE["id"]]] = (str(state[SPW_STATE["name"]]), None if ghz is None else ghz / 1e9)
    return MsRecord(name=Path(text(attr(ms, "name"), "")).name, session=text(attr(ms, "_session"), "session_1"),
                    execblock_id=text(attr(ms, "execblock_id"), ""), fields=fields, spws=spws)


def _score(qa_score) -> dict:
    origin = attr(qa_score, "origin")
    sel = attr(qa_score, "applies_to")
    loc = attr(qa_score, "weblog_location")
    hidden = isinstance(loc, Inert) and loc._args[:1] == (HIDDEN,)
    metric = {"name": "Unknown metric", "value": "N/A", "units": ""}
    if origin is not None:
        metric = {"name": text(attr(origin, "metric_name"), "Unknown metric"),
                  "value": number(attr(origin, "metric_score", "N/A")), "units": text(attr(origin, "metric_units"), "")}
    return {"score": number(attr(qa_score, "score")), "reason": text(attr(qa_score, "longmsg"), ""),
            "hidden": hidden, "metric": metric,
            "selection": {k: [number(v) for v in items(attr(sel, k, set()))]
                          for k in ("vis", "session", "spw", "field", "intent", "ant")}}


def _topics(result) -> list[str]:
    classes = [r._name for r in items(result)] if is_list(result) else [result._name if isinstance(result, Inert) else ""]
    return [t for t, names in TOPIC_CLASSES.items() if all(c in names for c in classes)]


def _result(rec: RunRecord, result, basename: str) -> None:
    task = text(attr(result, "pipeline_casa_task"), "")
    stage_name = task.split("(")[0]
    number_ = attr(result, "stage_number")
    if not isinstance(number_, int):
        raise InputError(f"stage result {basename}: no stage_number")
    qa = attr(result, "qa")
    pool = [_score(s) for s in items(attr(qa, "pool", []))]
    rep = attr(qa, "_representative")
    if rep is not None:
        representative = _score(rep)
    else:
        visible = [s for s in pool if not s["hidden"] and s["score"] is not None]
        representative = (min(visible, key=lambda s: s["score"]) if visible else pool[0] if pool else
                          {"score": None, "reason": "No QA scores registered for this task", "hidden": False,
                           "metric": {"name": "Unknown metric", "value": "N/A", "units": ""},
                           "selection": {}})
    ts = attr(result, "timestamps")
    rec.stages.append({"number": number_, "name": stage_name, "task": task, "topics": _topics(result),
                       "start": epoch(attr(ts, "start")), "end": epoch(attr(ts, "end")),
                       "representative": representative, "scores": [s for s in pool if not s["hidden"]]})
    members = items(result) if is_list(result) else [result]
    if task.startswith("hifa_importdata("):
        rows = []
        for r in members:
            setjy = items(attr(r, "setjy_results", []))
            if setjy:
                rows += _flux_rows(rec, r, attr(setjy[0], "measurements", {}), importdata=True)
        rec.importdata.append((number_, rows))
        rec.flux_measurements += rows
    if task.startswith("hifa_gfluxscale("):
        rows = []
        for r in members:
            rows += _flux_rows(rec, r, attr(r, "measurements", {}))
        rec.gfluxscale.append((number_, representative["score"], rows))
    if stage_name in ("hifa_imageprecheck", "hif_makeimages"):
        sens = []
        for r in members:
            sens += [dict(d) for d in items(attr(r, "sensitivities_for_aqua", [])) if isinstance(d, dict)]
        rec.sensitivity_stages.append((stage_name, number_, representative["score"], sens))


def _flux_rows(rec: RunRecord, result, measurements, importdata: bool = False) -> list[dict]:
    vis = Path(text(attr(attr(result, "inputs", {}), "vis"), "")).name
    if importdata and not vis.endswith(".ms"):
        mses = items(attr(result, "mses", []))
        vis = Path(text(attr(mses[0], "name"), "")).name if mses else vis
    ms = rec.ms(vis)
    if ms is None or not isinstance(measurements, dict):
        return []
    rows = []
    for field_id, field_measurements in measurements.items():
        field_name = ms.fields.get(field_id, str(field_id))
        if field_name.startswith('"') and field_name.endswith('"'):
            field_name = field_name[1:-1]
        for m in sorted(items(field_measurements), key=lambda m: int(attr(m, "spw_id", 0))):
            spw_id = int(attr(m, "spw_id", 0))
            flux = to_unit(attr(m, "I"), "Jy")
            if flux is None:
                continue
            unc = to_unit(attr(attr(m, "uncertainty"), "I"), "Jy")
            spw_name, ghz = ms.spws.get(spw_id, ("", None))
            rows.append({"spw_name": spw_name, "spw": spw_id, "flux_jy": flux, "error_jy": unc or None,
                         "asdm": Path(ms.name).stem,
                         "field": field_name, "freq_ghz": ghz})
    return rows
