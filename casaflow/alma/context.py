"""What a finished ALMA pipeline run left in its working directory, besides its context.

The run's own record (MSs and sessions, image lists, QA, flux measurements, sensitivities) is
its pickled context, read by :mod:`casaflow.alma.pipecontext`. This module finds the rest:

* the **PPR** (``PPR_*.xml`` or the ``pprfile`` pattern): project code, OUS ids, recipe;
* the **MSs** (``*.ms`` directories): calibration MSs, and the imaging MSs (``*_targets.ms``, ``*_targets_line.ms``, ``*_imaging[_line].ms``);
  their **sessions** (:func:`assign_sessions`: the ``session`` parameter, else the context's);
* the **applied calibrations**: the ``applycal`` calls in ``casa_commands.log``, the run's own
  record of what it applied (the last call per vis, field, intent, spw and antenna wins);
* the **images**: the context's image lists (:func:`items_from_imlist`), or without a context the
  directory's ``hif_makeimages`` names (:func:`find_images`), and the files of each (:func:`image_files`);
* without a context, casaflow's fallback QA record ``pipeline_qa.json``;
* the weblog (``pipeline-*/html``, whose home page names the run's CASA and pipeline versions),
  ``casa_commands.log`` and ``casa_pipescript.py``.
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
    """One entry of the run's image list, with the keys the reference's image library keeps
    (``ImageItem`` in pipeline/infrastructure/imagelibrary.py): the image name as recorded
    (``...iter<N>.image`` or ``...iter<N>.image.pbcor``; multi-term images without ``.tt0``)."""

    imagename: str
    sourcename: str
    sourcetype: str         # BANDPASS, PHASE, ..., TARGET
    prefix: str             # imagename_prefix: OUS status uid, EB or session
    spw: str
    specmode: str
    stokes: str
    stage: int
    multiterm: int = 0      # number of Taylor terms, 0 for single-term
    datatype: str = ""      # the image list's datatype ('REGCAL_CONTLINE_SCIENCE', ...) or the name's part
    version: int = 1
    antenna: str | None = None

    def key(self, stokes: str | None = None) -> tuple:
        """The reference's product key (field, intent, prefix, spws, specmode, stokes, antenna,
        datatype, version)."""
        return (self.sourcename, self.sourcetype, self.prefix, self.spw, self.specmode,
                self.stokes if stokes is None else stokes, self.antenna, self.datatype, self.version)


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


# The science-target MSs the imaging stages make, by the names they give them: hif_mstransform's
# <eb>_targets.ms, hif_uvcontsub's <eb>_targets_line.ms, and the _imaging / _imaging_line variants
# (the reference tells them by the data types their columns hold; casaflow by these names).
IMAGING_MS_SUFFIXES = ("_targets.ms", "_targets_line.ms", "_imaging.ms", "_imaging_line.ms")


def is_imaging_ms(name: str) -> bool:
    return name.endswith(IMAGING_MS_SUFFIXES)


def find_mses(working: Path, vis: list[str]) -> tuple[list[str], list[str]]:
    """(calibration MSs, imaging MSs), basenames. ``vis`` restricts the calibration list."""
    found = sorted(p.name for p in working.glob("*.ms") if is_ms(p))
    imaging = [v for v in found if is_imaging_ms(v)]
    calibration = [v for v in found if v not in imaging]
    if vis:
        for v in vis:
            if not is_ms(working / v):
                raise InputError(f"parameter 'vis': {v!r} is not a MeasurementSet in {working}")
        calibration = [v for v in vis if not is_imaging_ms(v)]
    if not calibration and not imaging:
        raise InputError(f"working directory {working}: no MeasurementSet (*.ms) found")
    return calibration, imaging


def _schedule(casa, vis: Path) -> list[str]:
    """The OBSERVATION table's schedule entries (``SchedulingBlock ...``, ``ExecBlock ...``)."""
    msmd = casa.tool("msmetadata")
    msmd.open(str(vis))
    try:
        return [str(s) for s in msmd.schedule(0)]
    except RuntimeError:
        return []
    finally:
        msmd.close()


def execblock_uid(casa, vis: Path) -> str:
    """The execution block's uid, from the schedule, else from an ALMA-style MS name."""
    uid = next((e.split(None, 1)[1].strip() for e in _schedule(casa, vis) if e.startswith("ExecBlock ")), "")
    stem = vis.name.removesuffix(".ms")
    return uid or (naming.fs_to_uid(stem) if naming.UID_FS_RE.match(stem) else "")


def assign_sessions(vises: list[str], sessions: list[str], run_record, warn) -> dict[str, str]:
    """Each MS's session as the reference assigns it (``ExportData._get_sessions``): the
    ``session`` parameter if given (MSs beyond its end go to its last session), else the session
    the run recorded for the MS in its context (``MeasurementSet.session``; ``session_1`` when
    the run had none). Without a context, every MS is in ``session_1``, warned."""
    if sessions:
        return dict(zip(vises, naming.session_names(sessions, len(vises))))
    if run_record is None:
        warn("no pipeline context: every MS is exported in session_1 (give 'session' to assign sessions)")
        return {v: "session_1" for v in vises}
    out = {}
    for v in vises:
        ms = run_record.ms(v)
        if ms is None:
            warn(f"{v}: not registered in the pipeline context {run_record.path.name}; exported in session_1")
        out[v] = ms.session if ms else "session_1"
    return out


@dataclass
class Sessions:
    """The session assignments of one export, as the reference makes them: ``_get_sessions`` is
    run separately on each list ``_make_lists`` filters, so a ``session`` parameter is matched by
    position against the calibration MSs (main products), against the imaging MSs (aux
    products), and against every MS of the run (``exportmses``)."""

    calibration: dict          # calibration vis -> session
    imaging: dict              # imaging vis -> session
    every: dict                # every vis -> session (exportmses)
    restore: list              # the restore script's session list (``wksessions``)

    @property
    def merged(self) -> dict:
        """vis -> session of the main and aux products (an MS is in one of the two lists)."""
        return {**self.calibration, **self.imaging}


def session_lists(calibration: list[str], imaging: list[str], every: list[str], sessions: list[str], run_record,
                  warn) -> Sessions:
    seen: set = set()

    def once(message):
        if message not in seen:
            seen.add(message)
            warn(message)

    cal = assign_sessions(calibration, sessions, run_record, once)
    # the restore script gets the ``session`` parameter verbatim when given (it may be shorter or
    # longer than the MS list), else the per-MS sessions of the calibration MSs
    return Sessions(calibration=cal, imaging=assign_sessions(imaging, sessions, run_record, once),
                    every=assign_sessions(every, sessions, run_record, once),
                    restore=list(sessions) if sessions else [cal[v] for v in calibration])


def run_versions(weblog: Path | None) -> tuple[str, str]:
    """(CASA version, pipeline version) the run used, from its weblog's home page
    (``html/t1-1.html``, rows 'CASA Version' and 'Pipeline Version' of the reference's
    t1-1.mako); '' for each one not found."""
    import html as html_lib
    import re

    page = weblog / "html" / "t1-1.html" if weblog else None
    if page is None or not page.is_file():
        return "", ""
    text = page.read_text(errors="replace")

    def row(label):
        m = re.search(rf"<th>\s*{label}\s*</th>\s*<td>\s*([^<(]+)", text)
        return html_lib.unescape(m.group(1)).strip() if m else ""

    return row("CASA Version"), row("Pipeline Version")


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


def _table_path(value, what: str) -> str:
    """A caltable named in a log, relative to the working directory: an absolute path (the run's
    own working directory, elsewhere) becomes its file name; a relative one keeps its directories,
    as hif_selfcal's tables under ``sc_workdir_<field>_<band>/`` ('..' refused, casaflow.paths)."""
    text = str(value)
    if text.startswith("/"):
        return _basename(text, what)
    norm = paths.relative_name(text, what)
    if norm == ".":
        raise paths.PathEscapeError(f"{what}: {text!r} names the working directory itself, not a caltable")
    return norm


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
            gaintable=[_table_path(t, f"{log_path.name} line {n}: gaintable") for t in as_list(kwargs.get("gaintable"))],
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
def find_images(working: Path, warn) -> list[ImageItem]:
    """The image list of a run without a context, from the directory: one item per image root
    (the last iteration, the pb-corrected image when there is one), in stage order. A name that
    looks like a pipeline image but matches no naming rule is warned about, by name."""
    best: dict[tuple, tuple[tuple, ImageItem]] = {}     # image root -> (rank, item)
    unmatched: list[str] = []
    for p in sorted(working.iterdir()):
        parsed = naming.parse_image_name(p.name)
        if parsed is None:
            if naming.looks_like_image(p.name) and p.is_dir():
                unmatched.append(p.name)
            continue
        if not p.is_dir() or parsed["kind"] != "image" or parsed["tt"] not in (None, 0):
            continue
        if parsed["stokes"] in ("POLI", "POLA"):        # exported with their IQUV image, not on their own
            continue
        name = p.name.replace(".tt0", "")
        multiterm = 0
        if parsed["tt"] == 0:
            plain = p.name.removesuffix(".pbcor")          # count the terms tclean wrote
            while (working / plain.replace(".tt0", f".tt{multiterm}")).is_dir():
                multiterm += 1
        root = (parsed["prefix"], parsed["stage"], parsed["sub"], parsed["source"], parsed["code"], parsed["spw"],
                parsed["specmode"], parsed["datatype"], parsed["stokes"])
        item = ImageItem(name, parsed["source"], parsed["sourcetype"], parsed["prefix"],
                         parsed["spw"].replace("_", ","), parsed["specmode"], parsed["stokes"], parsed["stage"],
                         multiterm, parsed["datatype"] or "")
        rank = (parsed["iter"], parsed["pbcor"])
        old = best.get(root)
        if old is None or rank > old[0]:
            best[root] = (rank, item)
    for name in unmatched:
        warn(f"{working / name}: looks like a pipeline image but matches no image naming rule; not exported")
    return [item for _, item in sorted(best.values(), key=lambda ri: (ri[1].stage, ri[1].imagename))]


def items_from_imlist(entries: list[dict], stage_of=None) -> list[ImageItem]:
    """The image list of a context (``calimlist``/``sciimlist``: ImageItem dicts), in order."""
    out = []
    for e in entries:
        name = Path(str(e.get("imagename", ""))).name
        spw = e.get("spwlist", "")
        spw = spw if isinstance(spw, str) else ",".join(str(s) for s in spw)
        parsed = naming.parse_image_name(name) or {}
        out.append(ImageItem(name, str(e.get("sourcename", "")), str(e.get("sourcetype", "")),
                             str(e.get("imagename_prefix") or parsed.get("prefix", "")), spw,
                             str(e.get("specmode", "")), str(e.get("stokes", "")), parsed.get("stage", 0),
                             int(e.get("multiterm") or 0), str(e.get("datatype") or ""), int(e.get("version") or 1),
                             e.get("antenna")))
    return out


def select_images(items: list[ImageItem], intents: list[str]) -> list[ImageItem]:
    """The reference's selection: walking backwards, keep the latest item per product key; a
    TARGET IQUV item removes the Stokes-I item of the same key (PIPE-2465); original order."""
    chosen: dict[tuple, ImageItem] = {}
    deleted: list[tuple] = []
    for it in reversed(items):
        key = it.key()
        if it.sourcetype == "TARGET" and it.stokes == "IQUV":
            key_i = it.key(stokes="I")
            deleted.append(key_i)
            chosen.pop(key_i, None)
        if key not in chosen and key not in deleted and it.sourcetype in intents:
            chosen[key] = it
    return list(reversed(list(chosen.values())))


def image_files(working: Path, item: ImageItem) -> list[tuple[str, int]]:
    """The (image, version) names exported for one item, in the reference's order: the image
    (all Taylor terms, then alpha and alpha.error), the pb, the mask (when the PIPE-2464 rule
    allows), POLI/POLA for POLARIZATION. Names that do not exist are dropped."""
    name, v = item.imagename, item.version
    pbcor = ".pbcor" in name
    plain = name.replace(".image.pbcor", ".image") if pbcor else name
    out = []
    if item.multiterm:
        out += [name.replace(".image", f".image.tt{n}") for n in range(item.multiterm)]
        out += [plain.replace(".image", ".alpha"), plain.replace(".image", ".alpha") + ".error"]
        out.append(plain.replace(".image", ".pb.tt0"))
    else:
        out += [name, plain.replace(".image", ".pb")]
    mask, cleanmask = plain.replace(".image", ".mask"), plain.replace(".image", ".cleanmask")
    if (working / mask).exists() and (not (working / cleanmask).exists() or ("IQUV" in mask and "IQUV" in cleanmask)):
        out.append(mask)
    if item.sourcetype == "POLARIZATION":
        base = name.replace(".pbcor", "") if pbcor else name
        out += [base.replace("IQUV", kind) for kind in ("POLI", "POLA")]
    seen = []
    for n in out:
        if n not in seen and (working / n).exists():
            seen.append(n)
    return [(n, v) for n in seen]


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
