"""The pickled pipeline context and stage results a finished ALMA run leaves, for the simulator.

A real run leaves ``pipeline-<timestamp>.context`` (``Context.save``) and
``pipeline-<timestamp>/saved_state/result-stage<N>.pickle`` (``ResultsProxy.write``). The
pipeline is not installed here, so the objects are small stand-in classes whose ``__module__``
and ``__qualname__`` are the reference's (commit fbf19139c1e1be87e01ad7c653534520b6f1bead) and
whose attributes carry the reference's names; :class:`RefPickler` writes those classes by name
without importing them. The pickles therefore look to a reader exactly like the pipeline's.
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import io
import pickle
import uuid
from pathlib import Path

_classes: dict[str, type] = {}


def ref_class(path: str, **namespace) -> type:
    """A stand-in class named ``path`` (``package.module.Class``)."""
    if path not in _classes:
        module, name = path.rsplit(".", 1)
        _classes[path] = type(name, (), {"__module__": module, "__qualname__": name, "_reference_class": True,
                                         **namespace})
    return _classes[path]


def obj(path: str, **attrs):
    """An instance of the stand-in class ``path`` with ``attrs`` as its ``__dict__``."""
    o = object.__new__(ref_class(path))
    o.__dict__.update(attrs)
    return o


def _namedtuple(path: str, fields: tuple[str, ...]) -> type:
    if path not in _classes:
        module, name = path.rsplit(".", 1)
        cls = collections.namedtuple(name, fields, module=module)
        cls._reference_class = True
        _classes[path] = cls
    return _classes[path]


def _state_class(path: str) -> type:
    """A stand-in for a class whose ``__getstate__`` returns a tuple (measures, SpectralWindow)."""
    return ref_class(path, __getstate__=lambda self: self._tuple_state)


def with_state(path: str, state: tuple):
    o = object.__new__(_state_class(path))
    o.__dict__["_tuple_state"] = state
    return o


def enum_member(path: str, value: int):
    cls = ref_class(path, __reduce__=lambda self: (type(self), (self.__dict__["value"],)))
    o = object.__new__(cls)
    o.__dict__["value"] = value
    return o


class RefPickler(pickle._Pickler):
    """Writes stand-in classes as the reference's globals (``STACK_GLOBAL module name``).

    Classes are caught in :meth:`save`, before the type dispatch table: a library that extends
    pickle's table (dill does, on import: it then writes classes as ``dill._dill._create_type``)
    must not change what the simulator writes."""

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, type) and obj.__dict__.get("_reference_class"):
            memo = self.memo.get(id(obj))
            if memo is not None:
                self.write(self.get(memo[0]))
            else:
                self.save_global(obj)
            return
        super().save(obj, save_persistent_id)

    def save_global(self, o, name=None):
        if isinstance(o, type) and o.__dict__.get("_reference_class"):
            self.save(o.__module__)
            self.save(o.__qualname__)
            self.write(pickle.STACK_GLOBAL)
            self.memoize(o)
            return
        super().save_global(o, name)


def dumps(o) -> bytes:
    buf = io.BytesIO()
    RefPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(o)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# The reference's classes and values, built from what the simulator made.
JANSKY = {"name": "JANSKY", "symbol": "Jy", "Jy": decimal.Decimal("1")}
HERTZ = {"name": "HERTZ", "symbol": "Hz", "hz": decimal.Decimal("1")}
WEBLOG_ACCORDION = 2          # pipelineqa.WebLogLocation: BANNER=1, ACCORDION=2, HIDDEN=3, UNSET=4


def flux_density(jy: float):
    return with_state("pipeline.domain.measures.FluxDensity", (decimal.Decimal(repr(float(jy))), JANSKY))


def frequency(hz: float):
    return with_state("pipeline.domain.measures.Frequency", (decimal.Decimal(repr(float(hz))), HERTZ))


def spectral_window(spw_id: int, name: str, centre_hz: float, bandwidth_hz: float):
    """State in ``SpectralWindow.__getstate__`` order (25 fields)."""
    half = bandwidth_hz / 2
    state = (spw_id, "ALMA_RB_03", frequency(bandwidth_hz), "TDM", {"TARGET"}, frequency(centre_hz - half), name,
             1, 1, "", None, frequency(centre_hz), frequency(centre_hz - half), frequency(centre_hz + half),
             frequency(centre_hz), None, "TOPO", "", [], 1, 0, None, False, None, [])
    return with_state("pipeline.domain.spectralwindow.SpectralWindow", state)


def qa_score(s: dict):
    """A recorder score dict as a ``pipelineqa.QAScore``."""
    sel = s.get("selection") or {}
    applies = obj("pipeline.infrastructure.pipelineqa.TargetDataSelection",
                  session=set(sel.get("session") or ()), vis={f"{a}.ms" for a in sel.get("asdm") or ()}, scan=set(),
                  spw={int(x) for x in sel.get("spw") or ()}, field={sel["field"]} if sel.get("field") else set(),
                  intent=set(sel.get("intent") or ()), ant={sel["antenna"]} if sel.get("antenna") else set(),
                  pol=set())
    m = s.get("metric") or {}
    origin = _namedtuple("pipeline.infrastructure.pipelineqa.QAOrigin", ("metric_name", "metric_score", "metric_units"))(
        m.get("name", "Unknown metric"), m.get("value", "N/A"), m.get("units", ""))
    return obj("pipeline.infrastructure.pipelineqa.QAScore", score=s["score"], longmsg=s["reason"], shortmsg=s["reason"],
               applies_to=applies, origin=origin, hierarchy="",
               weblog_location=enum_member("pipeline.infrastructure.pipelineqa.WebLogLocation", WEBLOG_ACCORDION))


def timestamps(start: float, end: float):
    cls = _namedtuple("pipeline.infrastructure.basetask.Timestamps", ("start", "end"))
    return cls(dt.datetime.fromtimestamp(start, dt.timezone.utc), dt.datetime.fromtimestamp(end, dt.timezone.utc))


def result(cls_path: str, stage: dict, task: str, items: list | None = None, **attrs):
    """A stage result: a ``ResultsList`` of ``items`` (or one result) with the stage's QA pool."""
    pool = obj("pipeline.infrastructure.pipelineqa.QAScorePool", pool=[qa_score(s) for s in stage["scores"]],
               _representative=None)
    common = dict(_uuid=uuid.UUID(int=stage["number"]), qa=pool, _metadata={}, stage_number=stage["number"],
                  pipeline_casa_task=task, timestamps=timestamps(stage["start"], stage["end"]))
    if items is None:
        return obj(cls_path, **common, **attrs)
    members = [obj(cls_path, _uuid=uuid.UUID(int=1000 * stage["number"] + k), qa=obj(
        "pipeline.infrastructure.pipelineqa.QAScorePool", pool=[], _representative=None), _metadata={},
        stage_number=stage["number"], **it) for k, it in enumerate(items)]
    return obj("pipeline.infrastructure.basetask.ResultsList", **common, _ResultsList__results=members)


def write(working: Path, name: str, *, ms_records: list, results: list, project: dict, calimages: list,
          sciimages: list, selfcal_resources: list | None = None) -> Path:
    """Write ``<name>.context`` and ``<name>/saved_state/result-stage<N>.pickle`` into ``working``."""
    saved = working / name / "saved_state"
    saved.mkdir(parents=True, exist_ok=True)
    ctx = obj("pipeline.infrastructure.launcher.Context", name=name, output_dir=str(working),
              _products_dir="../products", report_dir=str(working / name / "html"),
              logs={"casa_commands": "casa_commands.log", "pipeline_script": "casa_pipescript.py",
                    "pipeline_restore_script": "casa_piperestorescript.py", "aqua_report": "pipeline_aquareport.xml"},
              results=[], task_counter=len(results), subtask_counter=0, processing_intents={})
    mses = [obj("pipeline.domain.measurementset.MeasurementSet", **m) for m in ms_records]
    ctx.__dict__.update(
        observing_run=obj("pipeline.domain.observingrun.ObservingRun", measurement_sets=mses, ms_datatable_name="",
                          ms_reduction_group={}, org_directions={}, virtual_science_spw_ids={},
                          virtual_science_spw_names={}),
        project_summary=obj("pipeline.infrastructure.project.ProjectSummary", **project["summary"]),
        project_structure=obj("pipeline.infrastructure.project.ProjectStructure", **project["structure"]),
        calimlist=obj("pipeline.infrastructure.imagelibrary.ImageLibrary", _images=calimages),
        sciimlist=obj("pipeline.infrastructure.imagelibrary.ImageLibrary", _images=sciimages),
        selfcal_resources=list(selfcal_resources or []), findroi_resources=[], selfcal_targets=[],
        contfile="cont.dat", linesfile="lines.dat")
    for r in results:
        basename = f"result-stage{r.stage_number}.pickle"
        (saved / basename).write_bytes(dumps(r))
        ctx.results.append(obj("pipeline.infrastructure.basetask.ResultsProxy", _context=ctx, uuid=r._uuid,
                               _basename=basename))
    path = working / f"{name}.context"
    path.write_bytes(dumps(ctx))
    return path
