"""``hifa_exportdata`` over a pipeline working directory (reference-pipeline.md §7).

Every product is written into a hidden staging directory beside ``products_dir``; when all of
them are complete, the staging directory replaces ``products_dir`` in one rename. A re-run
therefore gives the same products and nobody ever sees half of them.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..archive import RUNTIME_FILES, replace_dir, write_tgz
from ..errors import InputError
from ..pipeline_manifest import PipelineManifest
from . import aqua, context, flags, naming, pipecontext

HEADER_KEYS = (["object", "obsra", "obsdec", "intent", "specmode", "spw", "virtspw", "spwisvrt"]
               + [f"{k}{i}" for i in range(1, 5) for k in ("naxis", "ctype", "cunit", "crpix", "crval", "cdelt")]
               + ["bmaj", "bmin", "bpa", "robust", "weight", "effbw", "level", "ctrfrq", "obspatt", "arrays",
                  "modifier", "session"])
DATATYPES = {"flux": "pb", "pbcorimage": "pbcor", "cleanmask": "mask", "singledish": "sd"}


@dataclass
class ExportParams:
    vis: list = field(default_factory=list)
    session: list = field(default_factory=list)
    imaging_products_only: bool = False
    exportmses: bool = False
    tarms: bool = True
    pprfile: str = ""
    calintents: str = ""
    calimages: list = field(default_factory=list)
    targetimages: list = field(default_factory=list)
    products_dir: str = "products"

    @property
    def exportcalprods(self) -> bool:
        return not (self.imaging_products_only or self.exportmses)


@dataclass
class Exported:
    """What was made, for the manifest, the QA and the stage result."""

    names: dict = field(default_factory=dict)           # role -> file name (or 'Undefined')
    per_ms: dict = field(default_factory=dict)          # vis -> {finalflags, applycmds, finalms}
    caltables: dict = field(default_factory=dict)       # session -> name
    aux_caltables: dict = field(default_factory=dict)
    aux_apply: dict = field(default_factory=dict)       # imaging vis -> name
    images: list = field(default_factory=list)          # (fits name, imtype, keywords)
    files: list = field(default_factory=list)           # (name, role) of every product file


def validate_products_dir(workspace: Path, products_dir: str) -> Path:
    out = (workspace / products_dir).resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"parameter 'products_dir': {products_dir!r} exists and is not a directory")
    if workspace.resolve() not in out.parents:      # the directory is replaced whole: never the workspace
        raise InputError(f"parameter 'products_dir': {products_dir!r} must be a directory inside the workspace")
    return out


def fits_keywords(fits_path: Path, oussid: str) -> dict:
    """§7.4's header keywords for the manifest, read from the exported FITS header."""
    from astropy.io import fits

    try:
        header = fits.getheader(fits_path)
    except OSError:
        return {}
    if "TYPE" not in header:
        return {}

    def get(key):
        v = header.get(key.upper())
        return "N/A" if v is None else str(v)

    out = {k: get(k) for k in HEADER_KEYS}
    if "BMAJ" not in header:
        out.update(_beam_from_table(fits_path))
    if "NSPWNAM" in header:
        out["nspwnam"] = get("nspwnam")
        for i in range(1, int(header["NSPWNAM"]) + 1):
            out[f"spwnam{i:02d}"] = get(f"spwnam{i:02d}")
    if "NSESSIO" in header:
        out["session"] = "".join(str(header.get(f"SESSIO{i:02d}", "")) for i in range(1, int(header["NSESSIO"]) + 1))
    out.update({"imagemin": get("datamin"), "imagemax": get("datamax"), "rms": get("datarms"),
                "producttype": get("specmode"), "pl_datatype": get("datatype"), "pol": get("stokes"),
                "datatype": DATATYPES.get(str(header.get("TYPE")), "N/A"), "format": "fits", "ous": oussid})
    return out


def _beam_from_table(fits_path: Path) -> dict:
    """A multi-plane (IQUV) image has per-plane beams in a BEAMS table and no BMAJ keyword:
    report the first plane's (Stokes I) beam, in degrees like the BMAJ keyword."""
    from astropy.io import fits

    with fits.open(fits_path) as hdul:
        if "BEAMS" not in hdul:
            return {}
        table = hdul["BEAMS"]
        row = table.data[0]
        units = {table.columns[n].name: (table.columns[n].unit or "").lower() for n in range(len(table.columns))}
        scale = {"arcsec": 1 / 3600.0, "deg": 1.0}
        return {"bmaj": str(row["BMAJ"] * scale.get(units.get("BMAJ"), 1.0)),
                "bmin": str(row["BMIN"] * scale.get(units.get("BMIN"), 1.0)), "bpa": str(row["BPA"])}


def _finish_fits(fits_path: Path, image: Path) -> None:
    """Edits on the exported FITS header (the run's image is never modified):

    * long spw lists (>= 68 characters) become '<min>,...,<max>' (§7.4);
    * ``DATE`` becomes the time the image itself was last written instead of the export time,
      so exporting the same image again gives the same bytes (re-runs are idempotent).
    """
    import datetime as dt

    from astropy.io import fits

    written = dt.datetime.fromtimestamp((image / "table.dat").stat().st_mtime, dt.timezone.utc)
    with fits.open(fits_path, mode="update") as hdul:
        header = hdul[0].header
        for key in ("SPW", "VIRTSPW"):
            value = header.get(key)
            if isinstance(value, str) and len(value) >= 68:
                ids = sorted(int(s) for s in value.split(",") if s.strip().isdigit())
                header[key] = f"{ids[0]},...,{ids[-1]}"
        header["DATE"] = (written.strftime("%Y-%m-%dT%H:%M:%S.%f"), "Date the exported image was last written")


def export_image(casa, image: Path, fitsname: str, staging: Path) -> Path:
    out = staging / fitsname
    casa.task("exportfits", imagename=str(image), fitsimage=str(out), velocity=False, optical=False, bitpix=-32,
              minpix=0, maxpix=-1, overwrite=True, dropstokes=False, stokeslast=True)
    _finish_fits(out, image)
    return out


def calapply_text(vis: str, calls: list[context.ApplyCall]) -> str:
    """``# Apply file for <vis>`` then one applycal call per line; vis and caltables by file name
    (hif_selfcal's ``sc_workdir_<field>_<band>/<table>`` too, as the tarballs hold them flat), so
    the list runs in any directory holding the MS and the extracted caltables."""
    lines = [f"# Apply file for {vis}"]
    for c in calls:
        if c.vis != vis:
            continue
        tables = [Path(t).name for t in c.gaintable]
        lines.append(f"applycal(vis={vis!r}, field={c.field!r}, intent={c.intent!r}, spw={c.spw!r}, "
                     f"antenna={c.antenna!r}, gaintable={tables!r}, gainfield={c.gainfield!r}, "
                     f"spwmap={c.spwmap!r}, interp={c.interp!r}, calwt={c.calwt!r})")
    return "\n".join(lines) + "\n"


def restore_script(vises: list[str], sessions: list[str]) -> str:
    vis_list = [v.removesuffix(".ms") for v in vises]
    return (f"h_init()\ntry:\n    hifa_restoredata (vis={vis_list!r}, session={sessions!r}, ocorr_mode='ca')\n"
            f"finally:\n    h_save()\n")


def run(casa, workspace: Path, working: Path, p: ExportParams, warn, versions: dict) -> dict:
    """Export; returns a summary (names, counts, QA) for the stage result."""
    working = Path(working)
    if not working.is_dir():
        raise InputError(f"working directory {working}: not found")
    products = validate_products_dir(workspace, p.products_dir)
    intents = naming.expand_intents(p.calintents)
    ppr_path = context.find_ppr(working, p.pprfile)
    if p.pprfile and ppr_path is None:
        raise InputError(f"parameter 'pprfile': {p.pprfile!r} matches no file in {working}")
    ppr = context.read_ppr(ppr_path)
    oussid, recipe = ppr.oussid, ppr.recipe
    prefix = f"{oussid}.{recipe}" if recipe else oussid
    unknown = oussid == "unknown"

    def pname(name: str) -> str:          # weblog, log, scripts: unprefixed when the OUS is unknown
        return name if unknown else f"{prefix}.{name}"

    # exportmses exports every MS of the run and ignores vis (reference §7.2).
    calibration, imaging = context.find_mses(working, [] if p.exportmses else p.vis)
    all_ms = calibration + imaging
    run_record = _read_run_record(working, warn)
    # exportmses: every MS of the run in the context's order (observing_run.measurement_sets)
    order = {m.name: i for i, m in enumerate(run_record.mses)} if run_record is not None else {}
    every = sorted(all_ms, key=lambda v: order.get(v, len(order)))
    assigned = context.session_lists(calibration, imaging, every, p.session, run_record, warn)
    sessions = assigned.merged
    calls = context.parse_applycal_calls(working / "casa_commands.log")
    dir_images = context.find_images(working, warn)         # also warns about unmatched names
    if run_record is not None:
        cal_items = context.items_from_imlist(run_record.calimlist)
        sci_items = context.items_from_imlist(run_record.sciimlist)
        qa_record = aqua.record_from_context(run_record)
    else:
        cal_items = sci_items = dir_images
        qa_record = aqua.record_from_fallback(context.read_qa_record(working))
        if qa_record["stages"]:
            warn(f"no pipeline context (pipeline-*.context) in {working}: QA scores, flux measurements and "
                 f"sensitivities taken from the fallback record pipeline_qa.json")
        else:
            warn(f"no pipeline context (pipeline-*.context) and no pipeline_qa.json in {working}: the AQUA report "
                 f"has no stages, flux measurements or sensitivities")
        qa_record["source"] = "pipeline_qa.json" if qa_record["stages"] else "none"
    calimages_explicit = context.explicit_images(working, p.calimages, "calimages")
    targetimages_explicit = context.explicit_images(working, p.targetimages, "targetimages")

    staging = products.parent / f".{products.name}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    ex = Exported()

    def record(name: str, role: str) -> str:
        ex.files.append((name, role))
        return name

    try:
        # 1. PPR
        if ppr_path is not None:
            shutil.copyfile(ppr_path, staging / f"{prefix}.pprequest.xml")
            ex.names["ppr"] = record(f"{prefix}.pprequest.xml", "pprequest")
        # 3-4. CASA commands and pipeline script
        for src, role in (("casa_commands.log", "casa_commands"), ("casa_pipescript.py", "casa_pipescript")):
            if (working / src).is_file():
                shutil.copyfile(working / src, staging / pname(src))
                ex.names[role] = record(pname(src), role)
            else:
                warn(f"{working / src}: not found, not exported")
                ex.names[role] = "Undefined"
        # 5. restore script
        if p.exportcalprods:
            name = pname("casa_piperestorescript.py")
            (staging / name).write_text(restore_script(calibration, assigned.restore))
            ex.names["casa_piperestorescript"] = record(name, "casa_piperestorescript")
        # 6. final MSs
        if p.exportmses and not p.imaging_products_only:
            for vis in all_ms:
                if p.tarms:
                    write_tgz(staging / f"{vis}.tgz", [(working / vis, vis)], skip_names=RUNTIME_FILES)
                    ex.per_ms.setdefault(vis, {})["finalms"] = record(f"{vis}.tgz", "ms")
                else:
                    shutil.copytree(working / vis, staging / vis, symlinks=True)
                    ex.per_ms.setdefault(vis, {})["finalms"] = record(vis, "ms")
        # 7-9. final flags, apply lists, caltables per session
        if p.exportcalprods:
            for vis in calibration:
                flags.ensure_final_version(casa, working / vis, warn)
                tar = flags.export_tarball(working / vis, staging)
                ex.per_ms.setdefault(vis, {})["finalflags"] = record(tar.name, "ms.flagversions")
                if any(c.vis == vis for c in calls):
                    (staging / f"{vis}.calapply.txt").write_text(calapply_text(vis, calls))
                    ex.per_ms[vis]["applycmds"] = record(f"{vis}.calapply.txt", "ms.calapply")
                else:
                    warn(f"{vis}: no applycal recorded in casa_commands.log; apply list Undefined")
                    ex.per_ms[vis]["applycmds"] = "Undefined"
            ex.caltables = _session_caltables(working, staging, oussid, calibration, sessions, calls, "caltables",
                                              record)
        # 10-11. FITS images: the calibrator images in every mode, as the reference's
        # unconditional _export_images (with imaging_products_only they are listed at OUS level)
        _export_images(casa, working, staging, oussid, "calibrator", calimages_explicit,
                       context.select_images(cal_items, intents), ex, record)
        _export_images(casa, working, staging, oussid, "target", targetimages_explicit,
                       context.select_images(sci_items, ["TARGET"]), ex, record)
        # 13-14. aux caltables and apply lists of the imaging MSs
        if imaging:
            for vis in imaging:
                if any(c.vis == vis for c in calls):
                    (staging / f"{vis}.auxcalapply.txt").write_text(calapply_text(vis, calls))
                    ex.aux_apply[vis] = record(f"{vis}.auxcalapply.txt", "ms.auxcalapply")
            ex.aux_caltables = _session_caltables(working, staging, oussid, imaging, sessions, calls, "auxcaltables",
                                                  record)
        # 15-16. statistics and auxproducts
        stats_dir = workspace / "scratch" / "exportdata"
        stats_dir.mkdir(parents=True, exist_ok=True)
        stats = stats_dir / f"pipeline_stats_{oussid}.json"
        stats.write_text(json.dumps({"ousid": oussid, "project": ppr.project, "recipe": recipe,
                                     "mses": all_ms, "sessions": sessions, "images": len(ex.images),
                                     "versions": versions}, indent=1, sort_keys=True))
        stamp = max((working / v / "table.dat").stat().st_mtime for v in all_ms)   # same inputs, same bytes
        os.utime(stats, (stamp, stamp))
        aux = _aux_members(working, p, bool(imaging), run_record) + [(stats, stats.name)]
        if aux:
            write_tgz(staging / f"{prefix}.auxproducts.tgz", aux)
            ex.names["auxproducts"] = record(f"{prefix}.auxproducts.tgz", "auxproducts")
        # QA of this stage, then the AQUA report, then the weblog that contains it.
        weblog = context.find_weblog(working)
        ex.names["weblog"] = pname("weblog.tgz") if weblog else "Undefined"
        scores = _qa_scores(staging, ex, p, ppr_path is not None, weblog is not None)
        # The AQUA report is made from the run's stages before this one (the reference builds it
        # from context.results while its own result is not yet there).
        aqua_name = pname("pipeline_aquareport.xml")
        if run_record is not None:
            ebs = context.ordered_unique(m.execblock_id for m in run_record.mses if m.execblock_id)
        else:
            ebs = context.ordered_unique(e for e in (context.execblock_uid(casa, working / v) for v in all_ms) if e)
        casa_version, pipeline_version = context.run_versions(weblog)
        report = aqua.build(ppr, run_record, ebs, qa_record, casa_version or versions.get("casatools", "N/A"),
                            pipeline_version or "Undefined", warn=warn)
        (staging / aqua_name).write_bytes(aqua.to_bytes(report))
        ex.names["aqua_report"] = record(aqua_name, "pipeline_aquareport")
        if weblog:
            # the weblog links the report as html/pipeline_aquareport.xml (context.logs['aqua_report'])
            write_tgz(staging / ex.names["weblog"], [(weblog / "html", f"{weblog.name}/html"),
                                                     (staging / aqua_name, f"{weblog.name}/html/pipeline_aquareport.xml")])
            record(ex.names["weblog"], "weblog")
        else:
            warn(f"no weblog (pipeline-*/html) in {working}; weblog Undefined")
        # 12/18. the manifest, last
        manifest_name = f"{prefix}.pipeline_manifest.xml"
        _manifest(ppr, prefix, oussid, recipe, casa_version or versions.get("casatools", "N/A"),
                  pipeline_version or "Undefined", ex, calibration, imaging, sessions, p,
                  exportmses_sessions=assigned.every, every=every).write(
            staging / manifest_name)
        ex.names["manifest"] = record(manifest_name, "pipeline_manifest")
        replace_dir(staging, products)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"prefix": prefix, "oussid": oussid, "recipe": recipe, "products_dir": p.products_dir,
            "files": ex.files, "images": [(n, t) for n, t, _ in ex.images], "sessions": sessions,
            "qa_scores": scores, "qa_source": qa_record.get("source", "context"),
            "context": run_record.path.name if run_record else None}


def _read_run_record(working: Path, warn):
    """The run's context and stage results, or None (warned) when the run left no context."""
    path = pipecontext.find_context(working)
    if path is None:
        return None
    return pipecontext.read(working, path)


def _session_caltables(working, staging, oussid, vises, sessions, calls, kind, record) -> dict:
    out = {}
    for sess in context.ordered_unique(sessions[v] for v in vises):
        tables = context.ordered_unique(t for v in vises if sessions[v] == sess
                                        for t in context.applied_tables(calls, v))
        missing = [t for t in tables if not (working / t).exists()]
        if missing:
            raise InputError(f"caltables applied in casa_commands.log but missing from {working}: {missing}")
        if not tables:
            out[sess] = "Undefined"
            continue
        # Flat, as the reference packs them (each table under its file name): two tables of one
        # session with the same name in different directories cannot both go in.
        by_name: dict[str, list[str]] = {}
        for t in tables:
            by_name.setdefault(Path(t).name, []).append(t)
        clash = {k: v for k, v in by_name.items() if len(v) > 1}
        if clash:
            raise InputError(f"{sess}: caltables applied in casa_commands.log share a file name, so they "
                             f"cannot be packed side by side in {kind}: {clash}")
        name = f"{oussid}.{sess}.{kind}.tgz"
        write_tgz(staging / name, [(working / t, Path(t).name) for t in tables], skip_names=RUNTIME_FILES)
        out[sess] = record(name, kind)
    return out


def _export_images(casa, working, staging, oussid, imtype, explicit, selected, ex, record) -> None:
    if explicit:
        jobs = [(path, naming.fitsname(path.name)) for path in explicit]
    else:
        jobs = [(working / name, naming.fitsname(name, version)) for item in selected
                for name, version in context.image_files(working, item)]
    for path, fits in jobs:
        export_image(casa, path, fits, staging)
        ex.images.append((record(fits, f"{imtype}_image"), imtype, fits_keywords(staging / fits, oussid)))


def _aux_members(working: Path, p: ExportParams, has_imaging: bool, run_record) -> list[tuple[Path, str]]:
    """auxproducts.tgz members, in the order the reference's ``_do_if_auxiliary_products`` adds
    them: flux.csv (not with imaging_products_only); the per-MS ``*.antennapos.json`` (PIPE-51,
    in every mode), or, only when there is none, antennapos.csv (not with
    imaging_products_only); cont.dat; the flagging templates; the timetracker reports; the
    context's selfcal restore resources and hif_findroi products tar."""

    def files(pattern: str) -> list[tuple[Path, str]]:
        return [(f, f.name) for f in context.glob_any(working, [pattern]) if f.is_file()]

    out = [] if p.imaging_products_only else files("flux.csv")
    antpos_json = files("*.antennapos.json")
    out += antpos_json or ([] if p.imaging_products_only else files("antennapos.csv"))
    out += files("cont.dat")
    if p.imaging_products_only:
        out += files("*.flagtargetstemplate.txt")
    elif not has_imaging:
        out += files("*.flagtemplate.txt") + files("*.flagtsystemplate.txt")
    else:
        out += files("*.flag*template.txt")
    out += files("*.timetracker.json")
    if run_record is not None:
        resources = list(run_record.selfcal_resources)
        resources += [r for r in run_record.findroi_resources if Path(r).name.endswith("findroi_products.tar")]
        for r in resources:
            rel = Path(r)
            if rel.is_absolute() or ".." in rel.parts:
                raise InputError(f"pipeline context {run_record.path.name}: resource {r!r} is not a path inside "
                                 f"the working directory")
            if (working / rel).exists():
                out.append((working / rel, str(rel)))
    return out


def _qa_scores(staging: Path, ex: Exported, p: ExportParams, have_ppr: bool, have_weblog: bool) -> list[dict]:
    """1.0 per expected product that exists, 0.0 otherwise; groups score the fraction found."""

    def exists(name):
        return 1.0 if name and name != "Undefined" and (staging / name).exists() else 0.0

    def score(value, what):
        return {"score": value, "reason": f"{what} {'exported' if value == 1.0 else 'missing'}"
                if value in (0.0, 1.0) else f"{value:.0%} of {what} exported", "hidden": False,
                "metric": {"name": "ExportedProducts", "value": f"{value:.3f}", "units": ""},
                "selection": {}}

    scores = [score(exists(ex.names.get("ppr")) if have_ppr else 1.0, "PPR"),
              score(1.0 if have_weblog else 0.0, "weblog"),
              score(exists(ex.names.get("casa_pipescript")), "pipeline script"),
              score(exists(ex.names.get("casa_commands")), "CASA commands log")]
    if p.exportmses and not p.imaging_products_only:
        ms = [exists(d.get("finalms")) for d in ex.per_ms.values()]
        scores.append(score(sum(ms) / len(ms) if ms else 0.0, "final MSs"))
    if p.exportcalprods:
        scores.append(score(exists(ex.names.get("casa_piperestorescript")), "restore script"))
        for kind, what in (("finalflags", "final flags"), ("applycmds", "apply lists")):
            vals = [exists(d.get(kind)) for d in ex.per_ms.values()]
            scores.append(score(sum(vals) / len(vals) if vals else 0.0, what))
        vals = [exists(n) for n in ex.caltables.values()]
        scores.append(score(sum(vals) / len(vals) if vals else 0.0, "caltables"))
    # the reference's score_images_exist: none in exportmses mode; with imaging_products_only only
    # the target images count
    if not p.exportmses:
        counted = [i for i in ex.images if i[1] == "target" or not p.imaging_products_only]
        scores.append(score(1.0 if counted else 0.0, "target images" if p.imaging_products_only else "images"))
    if all(s["score"] == 1.0 for s in scores):
        scores.insert(0, {**score(1.0, "all products"), "reason": "All expected pipeline products have been exported"})
    return scores


def _manifest(ppr, prefix, oussid, recipe, casa_version, pipeline_version, ex: Exported, calibration, imaging,
              sessions, p, exportmses_sessions: dict | None = None, every: list | None = None) -> PipelineManifest:
    """The manifest in the reference's element order (``ExportData._make_pipe_manifest``, then
    ``_export_pipe_manifest`` adds ``manifest``, then ``ALMAExportData._add_to_manifest`` adds
    ``aqua_report``, ``aux_products_file`` and the imaging MSs' aux caltables per session).
    ``sessions``: vis -> session of the calibration and imaging MSs (each list matched on its
    own); ``exportmses_sessions``/``every``: the sessions and order of every MS (exportmses)."""
    m = PipelineManifest(oussid)
    package = recipe or "Undefined"
    m.add("casaversion", name=casa_version)
    m.add("pipeline_version", name=pipeline_version)
    m.add("procedure_name", name=recipe or "Undefined")
    env = m.add("execution_environment")
    m.add("node", parent=env, num_mpi_servers="0")
    if "ppr" in ex.names:
        m.add("piperequest", name=ex.names["ppr"], level="member", ous=oussid, package=package, datatype="pprequest",
              format="xml")
    # sessions of the calibration MSs: none with imaging_products_only (the reference's empty sessiondict)
    session_els = {}
    if not p.imaging_products_only and (p.exportcalprods or p.exportmses):
        if p.exportcalprods:
            vises, ms_sessions = calibration, sessions
        else:
            vises = every if every is not None else calibration + imaging
            ms_sessions = exportmses_sessions if exportmses_sessions is not None else sessions
        for sess in context.ordered_unique(ms_sessions[v] for v in vises):
            s_el = session_els[sess] = m.add("session", name=sess)
            if p.exportcalprods:
                m.add("caltables", parent=s_el, name=ex.caltables.get(sess, "Undefined"), ous_name="N/A",
                      level="member", session=sess, package=package, datatype="caltables", format="tgz")
            for vis in (v for v in vises if ms_sessions[v] == sess):
                d = ex.per_ms.get(vis, {})
                a_el = m.add("asdm", parent=s_el, name=vis, datatype="asdm", format="sdm")
                if "finalms" in d:
                    m.add("finalms", parent=a_el, name=d["finalms"])
                if "finalflags" in d:
                    m.add("finalflags", parent=a_el, name=d["finalflags"], asdm=vis, datatype="ms.flagversions",
                          format="tgz")
                if "applycmds" in d:
                    m.add("applycmds", parent=a_el, name=d["applycmds"], asdm=vis, datatype="ms.calapply",
                          format="txt")
    for tag, role, datatype, fmt in (("weblog", "weblog", "weblog", "tgz"),
                                     ("casa_cmdlog", "casa_commands", "casa_commands", "log"),
                                     ("pipescript", "casa_pipescript", "casa_pipescript", "py"),
                                     ("restorescript", "casa_piperestorescript", "casa_piperestorescript", "py")):
        if role in ex.names:
            m.add(tag, name=ex.names[role], level="member", ous=oussid, package=package, datatype=datatype, format=fmt)
    # calibrator images: per-OUS ones first, then per-MS ones, then the targets (all at OUS level)
    cal = [i for i in ex.images if i[1] == "calibrator"]
    ordered = ([i for i in cal if _ous_level(i[0], oussid, sessions)] + [i for i in cal if not _ous_level(i[0], oussid, sessions)]
               + [i for i in ex.images if i[1] == "target"])
    for fits, imtype, keywords in ordered:
        m.add("image", name=fits, imtype=imtype, manualstring="N/A", **keywords)
    m.add("manifest", name=f"{prefix}.pipeline_manifest.xml", ous=prefix, level="member", package=package,
          datatype="pipeline_manifest", format="xml")
    m.add("aqua_report", name=ex.names.get("aqua_report", "Undefined"), level="member", ous=oussid, package=package,
          datatype="pipeline_aquareport", format="xml")
    if "auxproducts" in ex.names:
        m.add("aux_products_file", name=ex.names["auxproducts"], level="member", ous=oussid, package=package,
              datatype="auxproducts", format="tgz")
    for sess in context.ordered_unique(sessions[v] for v in imaging):
        if sess not in ex.aux_caltables:
            continue
        s_el = session_els.get(sess)
        if s_el is None:
            s_el = session_els[sess] = m.add("session", name=sess)
        m.add("aux_caltables", parent=s_el, name=ex.aux_caltables[sess], level="N/A", session=sess,
              package="N/A", datatype="caltables", format="tgz")
        for vis in (v for v in imaging if sessions[v] == sess):
            aux = m.add("aux_asdm", parent=s_el, name=vis, datatype="asdm", format="sdm")
            m.add("applycmds", parent=aux, name=ex.aux_apply.get(vis, "Undefined"))
    return m


def _ous_level(fits: str, oussid: str, sessions: dict) -> bool:
    starts = (oussid, "oussid", "unknown", "session", *set(sessions.values()))
    return fits.startswith(starts)
