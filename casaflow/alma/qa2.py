"""QA2 delivery packaging: the QA2 guide's ``QA_Packager`` (seed 002), and the same package made
from exportdata's products for pipeline-processed data.

A package is ``<packpath>/<sg>/<group>/<member>/{raw,calibrated,calibration,script,qa,log,product}``
plus the README in the member directory. For a manual reduction the OUS levels are the guide's
``sg_ouss_id/group_ouss_id/member_ouss_id`` (``member_ouss_id2``, ... when appending); when the
OUS uids are known (pipeline products) they are named as the ALMA archive names them,
``science_goal.<uid>/group.<uid>/member.<uid>``.

Placement rules (guide): per execution directory ``X..`` holding ``<uid>.ms.split``:

* ``raw/<uid>.ms.split``: the DATA column of ``.split`` (a-priori calibrated data);
* ``calibrated/<uid>.ms.split.cal``: the DATA column of ``.split.cal`` (calibrated data);
* ``calibration/<uid>.calibration/``: every caltable of the execution; its ``*.plots``
  directories go to ``calibration/<uid>.calibration.plots/``;
* ``qa/``: ``checklist.txt`` as ``<X>.checklist.txt``, and the ``qa2/`` files as ``<uid>__<name>``;
* ``script/``: the calibration scripts and any other script; ``log/``: logs, those of an
  execution prefixed ``<uid>__``; ``product/``: every FITS file;
* notes for the PI (``*.txt`` beside the executions) go to ``qa/``; a combined MS
  (``calibrated.ms`` or any other ``*.ms``) is never packaged.

Modes: ``fake`` (the structure with empty placeholders, fast; dummy ticket files), ``hard`` (real
data; raw and calibrated made with CASA's split; real ticket files) and ``ticket`` (a dummy
package, except its qa and script files, which are real, and real ticket files). The ticket (``<project>.ticket.tar`` and ``.ticket.zip``) holds the
README, the qa files, the scripts and ``package_size.txt`` (the package's expected size).
"""

from __future__ import annotations

import json
import shutil
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths, xmlsafe
from ..archive import replace_dir, write_tgz
from ..atomic import atomic_path
from ..errors import InputError
from ..result import path_size

SUBDIRS = ("raw", "calibrated", "calibration", "script", "qa", "log", "product")
MODES = ("fake", "hard", "ticket")
TICKET_DIRS = ("qa", "script")        # the member subdirectories a ticket carries
MARKER = ".casaflow-member.json"

DESCRIPTIONS = """\
This directory contains this README file and the following directories: raw, calibrated, calibration,
script, qa, log, product.
- 'raw' contains the apriori calibrated ms for each execution block, after being split into the science
  spectral windows.
- 'calibrated' contains the fully calibrated ms for each execution block.
- 'calibration' contains the files needed for calibration starting from the initial ms to the fully
  calibrated data. Plots are included.
- 'script' contains the reduction scripts used to process the initial ms to calibrated data, and to obtain
  the imaging products.
- 'product' contains the fits files of the selected image products.
- 'qa' contains the qa2 reports that show plots and text information needed to assess the quality of the
  processing.
- 'log' contains the casa log files.
"""


@dataclass
class Placement:
    """One file or directory of the package: where it comes from and how it is made."""

    source: Path
    dest: str                  # relative to the member directory
    action: str = "copy"       # "copy" | "split-data"
    size: int = 0


@dataclass
class Plan:
    member_files: list[Placement] = field(default_factory=list)
    executions: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, source: Path, dest: str, action: str = "copy") -> None:
        self.member_files.append(Placement(source, dest, action, path_size(source)))


def _is_table(path: Path, kind: str) -> bool:
    info = path / "table.info"
    return path.is_dir() and info.is_file() and kind in info.read_text(errors="replace").split("\n", 1)[0]


def execution_dirs(origpath: Path) -> list[Path]:
    return sorted(d for d in origpath.iterdir() if d.is_dir()
                  and (any(d.glob("*.ms.split")) or any(d.glob("*.scriptForCalibration.py"))))


def _place_file(plan: Plan, f: Path, log_prefix: str, notes: bool) -> None:
    """Scripts, logs, FITS products and (beside the executions) notes for the PI."""
    if f.suffix == ".py":
        plan.add(f, f"script/{f.name}")
    elif f.suffix == ".log":
        plan.add(f, f"log/{log_prefix}{f.name}")
    elif f.suffix == ".fits":
        plan.add(f, f"product/{f.name}")
    elif notes and f.suffix in (".txt", ".pdf", ".png"):
        plan.add(f, f"qa/{f.name}")


def plan_manual(origpath: Path) -> Plan:
    """Where every file of a manual-reduction tree goes (the guide's rules)."""
    origpath = Path(origpath)
    if not origpath.is_dir():
        raise InputError(f"parameter 'origpath': {origpath} is not a directory")
    execs = execution_dirs(origpath)
    if not execs:
        raise InputError(
            f"parameter 'origpath': {origpath} is in none of the QA2 guide's shapes: expected execution "
            f"directories (each holding <uid>.ms.split, <uid>.ms.split.cal, caltables and "
            f"<uid>.ms.scriptForCalibration.py) directly below it")
    plan = Plan()
    for x in execs:
        splits = sorted(x.glob("*.ms.split"))
        if not splits:
            raise InputError(f"execution directory {x}: no <uid>.ms.split found")
        for split in splits:
            uid = split.name.removesuffix(".ms.split")
            plan.executions.append(uid)
            plan.add(split, f"raw/{split.name}", "split-data")
            cal = x / f"{split.name}.cal"
            if not cal.is_dir():
                raise InputError(f"execution directory {x}: {cal.name} (the calibrated data) is missing")
            plan.add(cal, f"calibrated/{cal.name}", "split-data")
            for t in sorted(x.glob(f"{split.name}.*")):
                if t == cal or t.name.endswith(".plots"):
                    continue
                if _is_table(t, "Calibration") or t.is_file():
                    plan.add(t, f"calibration/{uid}.calibration/{t.name}")
            for plots in sorted(x.glob("*.plots")):
                plan.add(plots, f"calibration/{uid}.calibration.plots/{plots.name}")
        prefix = splits[0].name.removesuffix(".ms.split")
        for f in sorted(p for p in x.iterdir() if p.is_file()):
            if f.name == "checklist.txt":
                plan.add(f, f"qa/{x.name}.checklist.txt")
            elif f.name.endswith(".ms.antpos"):
                plan.add(f, f"calibration/{prefix}.calibration/{f.name}")
            else:
                _place_file(plan, f, log_prefix=f"{prefix}__", notes=False)
        qa2 = x / "qa2"
        if qa2.is_dir():
            for f in sorted(p for p in qa2.rglob("*") if p.is_file()):
                plan.add(f, f"qa/{prefix}__{f.name}")
        for ms in sorted(x.glob("*.ms")):
            plan.skipped.append(str(ms.relative_to(origpath)))
    # Beside the executions: Combined and results directories, notes, logs.
    for entry in sorted(origpath.iterdir()):
        if entry in execs:
            continue
        files = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
        if entry.is_dir():
            for ms in sorted(p for p in entry.rglob("*.ms") if p.is_dir()):
                plan.skipped.append(str(ms.relative_to(origpath)))
        for f in files:
            if any(part.endswith(".ms") for part in f.relative_to(origpath).parts[:-1]):
                continue                                  # inside a (combined) MS: never packaged
            _place_file(plan, f, log_prefix="", notes=True)
    dests = [p.dest for p in plan.member_files]
    dupes = sorted({d for d in dests if dests.count(d) > 1})
    if dupes:
        raise InputError(f"origpath {origpath}: several files would land at the same package path: {dupes}")
    return plan


# Pipeline products: which directory each manifest entry goes to.
PIPELINE_PLACEMENT = {"finalflags": "calibration", "applycmds": "calibration", "caltables": "calibration",
                      "aux_caltables": "calibration", "aux_products_file": "calibration", "finalms": "calibration",
                      "pipescript": "script", "restorescript": "script", "piperequest": "script",
                      "casa_cmdlog": "log", "weblog": "qa", "aqua_report": "qa", "manifest": "qa", "image": "product"}


def plan_pipeline(products: Path) -> tuple[Plan, dict]:
    """Placement of exportdata's products, read from its manifest. Returns (plan, OUS ids)."""
    products = Path(products)
    manifests = sorted(products.glob("*.pipeline_manifest.xml"))
    if not manifests:
        raise InputError(f"products directory {products}: no *.pipeline_manifest.xml")
    root = xmlsafe.parse_file(manifests[0], f"pipeline manifest {manifests[0].name}")
    ous = root.find("ous")
    ids = {"mous": ous.get("name") if ous is not None else "unknown", "sous": "", "gous": ""}
    pprs = sorted(products.glob("*.pprequest.xml"))
    if pprs:
        from .context import read_ppr
        from .naming import uid_to_fs

        ppr = read_ppr(pprs[0])
        ids.update(sous=uid_to_fs(ppr.sous) if ppr.sous else "", gous=uid_to_fs(ppr.gous) if ppr.gous else "")
    plan = Plan()
    seen = set()
    for el in root.iter():
        name = el.get("name")
        sub = PIPELINE_PLACEMENT.get(el.tag)
        if sub is None or not name or name == "Undefined" or name in seen:
            continue
        seen.add(name)
        src = paths.inside(products, name, f"manifest {manifests[0].name}, <{el.tag}> name",
                           single=True, resolve=True)
        if not src.exists():
            raise InputError(f"manifest {manifests[0].name} lists {name}, which is not in {products}")
        plan.add(src, f"{sub}/{name}")
    listed = {Path(p.dest).name for p in plan.member_files}
    plan.skipped = sorted(p.name for p in products.iterdir() if p.name not in listed and not p.name.startswith("."))
    return plan, ids


# ------------------------------------------------------------------------------------------
def tree_text(root: Path, root_name: str | None = None) -> str:
    """An indented listing of the package (what the README inserts), directories marked '/'."""
    lines = []

    def walk(d: Path, depth: int):
        for p in sorted(d.iterdir()):
            if p.name.startswith("."):
                continue
            lines.append(f"{'|   ' * depth}|-- {p.name}{'/' if p.is_dir() else ''}")
            # An MS or a caltable is one product: its inside is not listed.
            if p.is_dir() and not (p / "table.dat").exists():
                walk(p, depth + 1)

    lines.append(f"|-- {root_name or root.name}/")
    walk(root, 1)
    return "\n".join(lines) + "\n"


def readme_text(header: str, fields: dict, tree: str) -> str:
    """The README: the header with its empty fields filled, then the package tree, then the
    directory descriptions."""
    out = []
    for line in header.splitlines():
        key = line.split(":", 1)[0].strip()
        if ":" in line and key in fields and not line.split(":", 1)[1].strip():
            line = f"{key}: {fields[key]}"
        out.append(line)
    return "\n".join(out).rstrip() + "\n\n##### Package structure\n\n" + tree + "\n#####\n" + DESCRIPTIONS


def _make(casa, plc: Placement, dest: Path, fake: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if fake:
        if plc.source.is_dir():
            dest.mkdir(exist_ok=True)
        else:
            dest.touch()
        return
    if plc.action == "split-data":
        # The DATA column only: .split carries the applied calibration in CORRECTED_DATA, which
        # does not belong in 'raw'; .split.cal holds the calibrated data in DATA already.
        casa.task("split", vis=str(plc.source), outputvis=str(dest), datacolumn="data", keepflags=True)
    elif plc.source.is_dir():
        shutil.copytree(plc.source, dest, symlinks=True)
    else:
        shutil.copyfile(plc.source, dest)


def _levels(ids: dict | None) -> tuple[str, str, str]:
    if ids and ids.get("sous") and ids.get("gous") and ids.get("mous") not in (None, "", "unknown"):
        return f"science_goal.{ids['sous']}", f"group.{ids['gous']}", f"member.{ids['mous']}"
    return "sg_ouss_id", "group_ouss_id", "member_ouss_id"


def package(casa, plan: Plan, packpath: Path, readme_header: Path | None, mode: str, append: str = "",
            source_label: str = "", ids: dict | None = None, fields: dict | None = None) -> dict:
    """Build (or append a member to) the package at ``packpath``; returns a summary."""
    if mode not in MODES:
        raise InputError(f"parameter 'mode': expected one of {list(MODES)}, got {mode!r}")
    if append not in ("", "member"):
        raise InputError(f"parameter 'append': expected '' or 'member', got {append!r}")
    header = ""
    if readme_header is not None:
        if not Path(readme_header).is_file():
            raise InputError(f"parameter 'readme': README header {readme_header} not found")
        header = Path(readme_header).read_text(errors="replace")
    packpath = Path(packpath)
    project = packpath.name
    sg, group, member0 = _levels(ids)
    group_dir = packpath / sg / group
    if append == "member":
        if not group_dir.is_dir():
            raise InputError(f"append='member': no package at {packpath} to append to (expected {sg}/{group})")
        member = _member_name(group_dir, member0, source_label)
    else:
        member = member0
    fake = mode in ("fake", "ticket")

    # Build the member in a hidden directory, then rename it into place.
    staging = group_dir / f".{member}.partial-{uuid.uuid4().hex[:8]}" if append else \
        packpath.parent / f".{project}.partial-{uuid.uuid4().hex[:8]}"
    member_dir = staging if append else staging / sg / group / member
    try:
        for sub in SUBDIRS:
            (member_dir / sub).mkdir(parents=True, exist_ok=True)
        for plc in plan.member_files:
            # ticket mode: a dummy package, but the ticket's qa and script members are the real files
            real = mode == "ticket" and plc.dest.split("/", 1)[0] in TICKET_DIRS and plc.action == "copy"
            _make(casa, plc, member_dir / plc.dest, fake and not real)
        expected = sum(p.size for p in plan.member_files)
        (member_dir / MARKER).write_text(json.dumps({"source": source_label, "mode": mode}, sort_keys=True))
        tree = tree_text(member_dir, member) if append else tree_text(staging, project)
        fields = {"Project code": project, **(fields or {})}
        (member_dir / "README").write_text(readme_text(header, fields, tree))
        replace_dir(staging, group_dir / member if append else packpath)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final_member = group_dir / member
    tickets = write_tickets(final_member, packpath.parent, project, expected, dummy=(mode == "fake"))
    return {"package": str(packpath), "member": str(final_member.relative_to(packpath.parent)), "mode": mode,
            "files": len(plan.member_files), "expected_size": expected, "size": path_size(packpath),
            "skipped": plan.skipped, "tickets": [str(t) for t in tickets], "executions": plan.executions}


def _member_name(group_dir: Path, base: str, source_label: str) -> str:
    """The next free member name; a member made from the same source is rebuilt in place, so an
    append can be re-run."""
    existing = sorted(p for p in group_dir.iterdir() if p.is_dir() and p.name.startswith(base))
    for p in existing:
        marker = p / MARKER
        if marker.is_file() and json.loads(marker.read_text()).get("source") == source_label:
            return p.name
    names = {p.name for p in existing}
    k = 2
    while f"{base}{k}" in names:
        k += 1
    return f"{base}{k}"


def write_tickets(member_dir: Path, outdir: Path, project: str, expected_size: int, dummy: bool) -> list[Path]:
    """``<project>.ticket.tar`` and ``.ticket.zip``: README, qa files, scripts, expected size."""
    tar_path, zip_path = outdir / f"{project}.ticket.tar", outdir / f"{project}.ticket.zip"
    size_text = f"expected package size: {expected_size} bytes ({expected_size / 1e9:.3f} GB)\n"
    if dummy:
        members = [("DUMMY_TICKET.txt", b"dummy ticket made in fake mode; run mode='ticket' or 'hard' for a real one\n")]
    else:
        members = [("README", (member_dir / "README").read_bytes()), ("package_size.txt", size_text.encode())]
        for sub in TICKET_DIRS:
            for f in sorted(p for p in (member_dir / sub).rglob("*") if p.is_file()):
                members.append((f"{sub}/{f.relative_to(member_dir / sub)}", f.read_bytes()))
    staging = outdir / f".ticket-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        for name, data in members:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        write_tgz(tar_path, [(staging / n, n) for n, _ in members], compress=False)
        with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                zf.writestr(zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0)), data)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [tar_path, zip_path]
