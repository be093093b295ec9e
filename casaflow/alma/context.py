"""What a finished ALMA pipeline run left in its working directory, found from the directory.

The reference exporter reads a pickled pipeline context; casaflow reads what the run wrote to
disk instead, so any working directory can be exported without the pipeline's code:

* the **PPR** (``PPR_*.xml`` or the ``pprfile`` pattern): project code, OUS ids, recipe;
* the **MSs** (``*.ms`` directories): calibration MSs, and the imaging MSs (``*_targets.ms``),
  with their **sessions** read by msmetadata from the OBSERVATION table's schedule
  (``Session <name>``; ``session_1`` when absent, as the reference does);
* the **applied calibrations**: the ``applycal`` calls in ``casa_commands.log``, the run's own
  record of what it applied (the last call per vis, field, intent, spw and antenna wins);
* the **images**, by their ``hif_makeimages`` names (``<ous>.s<N>_<M>.<source>_<type>.spw...``);
* the **QA record** ``pipeline_qa.json`` (stage scores, flux measurements, sensitivities), the
  stand-in for the context's results the AQUA report is made from;
* the weblog (``pipeline-*/html``), ``casa_commands.log`` and ``casa_pipescript.py``.
"""

from __future__ import annotations

import ast
import fnmatch
import json
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

from .. import paths, xmlsafe
from ..errors import InputError
from . import naming

PPR_NS_FREE = "{*}"  # PPR files come with or without a namespace


@dataclass
class Ppr:
    path: Path | None = None
    project: str = "Undefined"
    recipe: str = ""
    mous: str = ""          # uid://...
    sous: str = ""
    gous: str = ""
    ous_entity: str = ""
    ous_part: str = ""

    @property
    def oussid(self) -> str:
        return naming.uid_to_fs(self.mous) if self.mous else "unknown"


@dataclass
class ApplyCall:
    vis: str
    field: str = ""
    intent: str = ""
    spw: str = ""
    antenna: str = ""
    gaintable: list = dc_field(default_factory=list)
    gainfield: list = dc_field(default_factory=list)
    spwmap: list = dc_field(default_factory=list)
    interp: list = dc_field(default_factory=list)
    calwt: list = dc_field(default_factory=list)

    def key(self) -> tuple:
        return (self.vis, self.field, self.intent, self.spw, self.antenna)


@dataclass
class ImageItem:
    """One entry of the image list: a pipeline image and what its name says."""

    imagename: str          # base name in the working directory, e.g. ...iter1.image.pbcor
    sourcename: str
    sourcetype: str         # BANDPASS, PHASE, ..., TARGET
    prefix: str
    spw: str
    specmode: str
    stokes: str
    stage: int
    multiterm: bool
    version: int = 1

    def key(self, with_stokes: bool = True) -> tuple:
        return (self.sourcename, self.sourcetype, self.prefix, self.spw, self.specmode,
                self.stokes if with_stokes else None, self.version)


# ------------------------------------------------------------------------------------------
def find_ppr(working: Path, pattern: str) -> Path | None:
    """``pprfile``: '' means the template ``PPR_*.xml``; otherwise a name or glob pattern."""
    pattern = pattern or "PPR_*.xml"
    if "/" in pattern or pattern.startswith(".."):
        raise InputError(f"parameter 'pprfile': {pattern!r} must be a file name or pattern in the working directory")
    matches = sorted(p for p in working.glob(pattern) if p.is_file())
    return matches[0] if matches else None


def read_ppr(path: Path | None) -> Ppr:
    if path is None:
        return Ppr()
    root = xmlsafe.parse_file(path, f"PPR {path.name}")

    def text(xpath: str) -> str:
        el = root.find(xpath)
        return (el.text or "").strip() if el is not None else ""

    def attr(xpath: str, name: str) -> str:
        el = root.find(xpath)
        return el.get(name, "") if el is not None else ""

    ppr = Ppr(path=path, project=text(f".//{PPR_NS_FREE}ProposalCode") or "Undefined",
              recipe=text(f".//{PPR_NS_FREE}ProcedureTitle"),
              mous=attr(f".//{PPR_NS_FREE}OUSStatusRef", "entityId"),
              sous=attr(f".//{PPR_NS_FREE}ScienceGoalOUSStatusRef", "entityId"),
              gous=attr(f".//{PPR_NS_FREE}GroupOUSStatusRef", "entityId"),
              ous_entity=attr(f".//{PPR_NS_FREE}ObsUnitSetRef", "entityId"),
              ous_part=attr(f".//{PPR_NS_FREE}ObsUnitSetRef", "partId"))
    if ppr.mous:
        naming.uid_to_fs(ppr.mous)            # validates: a malformed uid is an input error
    return ppr


def is_ms(path: Path) -> bool:
    return path.is_dir() and (path / "table.dat").is_file() and (path / "ANTENNA").is_dir()


def find_mses(working: Path, vis: list[str]) -> tuple[list[str], list[str]]:
    """(calibration MSs, imaging MSs), basenames. ``vis`` restricts the calibration list."""
    found = sorted(p.name for p in working.glob("*.ms") if is_ms(p))
    imaging = [v for v in found if v.endswith("_targets.ms")]
    calibration = [v for v in found if v not in imaging]
    if vis:
        for v in vis:
            if not is_ms(working / v):
                raise InputError(f"parameter 'vis': {v!r} is not a MeasurementSet in {working}")
        calibration = [v for v in vis if not v.endswith("_targets.ms")]
    if not calibration and not imaging:
        raise InputError(f"working directory {working}: no MeasurementSet (*.ms) found")
    return calibration, imaging


def _schedule(casa, vis: Path) -> list[str]:
    """The OBSERVATION table's schedule entries (``SchedulingBlock ...``, ``ExecBlock ...``, ...)."""
    msmd = casa.tool("msmetadata")
    msmd.open(str(vis))
    try:
        return [str(s) for s in msmd.schedule(0)]
    except RuntimeError:
        return []
    finally:
        msmd.close()


def _schedule_entry(casa, vis: Path, key: str) -> str:
    return next((e.split(None, 1)[1].strip() for e in _schedule(casa, vis) if e.startswith(f"{key} ")), "")


def ms_session(casa, vis: Path) -> str:
    """The session an MS belongs to, from its OBSERVATION schedule; 'session_1' if not recorded."""
    return _schedule_entry(casa, vis, "Session") or "session_1"


def execblock_uid(casa, vis: Path) -> str:
    """The execution block's uid, from the schedule, else from an ALMA-style MS name."""
    uid = _schedule_entry(casa, vis, "ExecBlock")
    stem = vis.name.removesuffix(".ms")
    return uid or (naming.fs_to_uid(stem) if naming.UID_FS_RE.match(stem) else "")


def assign_sessions(casa, working: Path, vises: list[str], sessions: list[str]) -> dict[str, str]:
    if sessions:
        return dict(zip(vises, naming.session_names(sessions, len(vises))))
    return {v: ms_session(casa, working / v) for v in vises}


def ordered_unique(values) -> list:
    out: list = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


# ------------------------------------------------------------------------------------------
_APPLY_FIELDS = ("vis", "field", "intent", "spw", "antenna", "gaintable", "gainfield", "spwmap", "interp", "calwt")


def _basename(value, what: str) -> str:
    """The file name of a path read from a log: a plain name ('..' refused, casaflow.paths)."""
    name = Path(str(value)).name
    return paths.relative_name(name, what, single=True) if name else name


def parse_applycal_calls(log_path: Path) -> list[ApplyCall]:
    """Every ``applycal(...)`` line of a casa_commands.log, parsed without evaluating code."""
    if not log_path.is_file():
        return []
    calls: list[ApplyCall] = []
    for n, line in enumerate(log_path.read_text(errors="replace").splitlines(), 1):
        line = line.strip()
        if not line.startswith("applycal("):
            continue
        try:
            node = ast.parse(line, mode="eval").body
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        except (SyntaxError, ValueError) as exc:
            raise InputError(f"{log_path.name} line {n}: applycal call not parseable ({exc})") from None
        if "vis" not in kwargs:
            continue

        def as_list(v):
            return list(v) if isinstance(v, (list, tuple)) else ([] if v in ("", None) else [v])

        calls.append(ApplyCall(
            vis=_basename(kwargs["vis"], f"{log_path.name} line {n}: vis"), field=str(kwargs.get("field", "")),
            intent=str(kwargs.get("intent", "")), spw=str(kwargs.get("spw", "")),
            antenna=str(kwargs.get("antenna", "")),
            gaintable=[_basename(t, f"{log_path.name} line {n}: gaintable") for t in as_list(kwargs.get("gaintable"))],
            gainfield=as_list(kwargs.get("gainfield")), spwmap=as_list(kwargs.get("spwmap")),
            interp=as_list(kwargs.get("interp")), calwt=as_list(kwargs.get("calwt", True))))
    latest: dict[tuple, ApplyCall] = {}
    for c in calls:                      # a later call for the same selection replaces the earlier
        latest.pop(c.key(), None)
        latest[c.key()] = c
    return list(latest.values())


def applied_tables(calls: list[ApplyCall], vis: str) -> list[str]:
    return ordered_unique(t for c in calls if c.vis == vis for t in c.gaintable)


# ------------------------------------------------------------------------------------------
def find_images(working: Path) -> list[ImageItem]:
    """The run's image list, in the order the run made them (stage, then name). Per image root
    only the last iteration counts, and the pb-corrected image is preferred, as the pipeline
    records it."""
    best: dict[tuple, tuple[tuple, ImageItem]] = {}     # image root -> (rank, item)
    for p in sorted(working.iterdir()):
        parsed = naming.parse_image_name(p.name)
        if not parsed or not p.is_dir():
            continue
        if parsed["multiterm"] and parsed["tt"] != ".tt0":
            continue
        root = (parsed["prefix"], parsed["stage"], parsed["sub"], parsed["source"], parsed["suffix"], parsed["spw"],
                parsed["specmode"], parsed["stokes"])
        item = ImageItem(p.name, parsed["source"], parsed["sourcetype"], parsed["prefix"],
                         parsed["spw"].replace("_", ","), parsed["specmode"], parsed["stokes"], parsed["stage"],
                         parsed["multiterm"])
        rank = (parsed["iter"], parsed["pbcor"] is not None)
        old = best.get(root)
        if old is None or rank > old[0]:
            best[root] = (rank, item)
    return [item for _, item in sorted(best.values(), key=lambda ri: (ri[1].stage, ri[1].imagename))]


def select_images(items: list[ImageItem], intents: list[str]) -> list[ImageItem]:
    """§7.4: keep the latest item per key, walking backwards; for TARGET an IQUV item suppresses
    the Stokes-I item with the same key; the original order is kept."""
    chosen: list[ImageItem] = []
    seen: set = set()
    iquv_keys = {it.key(with_stokes=False) for it in items if it.sourcetype == "TARGET" and it.stokes == "IQUV"}
    for it in reversed(items):
        if it.sourcetype not in intents:
            continue
        if it.key() in seen:
            continue
        if it.sourcetype == "TARGET" and it.stokes == "I" and it.key(with_stokes=False) in iquv_keys:
            continue
        seen.add(it.key())
        chosen.append(it)
    return list(reversed(chosen))


def image_files(working: Path, item: ImageItem) -> list[Path]:
    """The files exported for one item (§7.4): the image (all terms, plus alpha for multiterm),
    the pb, the mask (when the rules allow), and POLI/POLA for POLARIZATION."""
    name = item.imagename
    root = name.split(".image")[0]
    files = []
    if item.multiterm:
        base = name.replace(".tt0", ".tt{}")
        k = 0
        while (working / base.format(k)).exists():
            files.append(working / base.format(k))
            k += 1
        files += [working / f"{root}.alpha", working / f"{root}.alpha.error"]
        files.append(working / f"{root}.pb.tt0")
    else:
        files += [working / name, working / f"{root}.pb"]
    mask, cleanmask = working / f"{root}.mask", working / f"{root}.cleanmask"
    if mask.exists() and (not cleanmask.exists() or ("IQUV" in mask.name and "IQUV" in cleanmask.name)):
        files.append(mask)
    if item.sourcetype == "POLARIZATION" and "IQUV" in name:
        files += [working / name.replace("IQUV", "POLI"), working / name.replace("IQUV", "POLA")]
    return [f for f in files if f.exists()]


def explicit_images(working: Path, names: list[str], param: str) -> list[Path]:
    out = []
    for n in names:
        p = working / n
        if not p.exists() or "/" in n or n.startswith(".."):
            raise InputError(f"parameter {param!r}: image {n!r} not found in {working}")
        out.append(p)
    return out


def find_weblog(working: Path) -> Path | None:
    """The newest ``pipeline-<timestamp>`` directory holding ``html/``."""
    runs = sorted(p for p in working.glob("pipeline-*") if (p / "html").is_dir())
    return runs[-1] if runs else None


def read_qa_record(working: Path) -> dict:
    path = working / "pipeline_qa.json"
    if not path.is_file():
        return {"stages": [], "flux_measurements": [], "gfluxscale": [], "sensitivities": []}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


def glob_any(working: Path, patterns: list[str]) -> list[Path]:
    names = sorted(p.name for p in working.iterdir())
    return [working / n for n in names if any(fnmatch.fnmatch(n, pat) for pat in patterns)]
