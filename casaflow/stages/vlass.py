"""The VLASS-SE-CUBE stages (recipe ``hifv_vlassCCIP``, reference §1-§6), one per worker call.

Each stage reads what earlier stages left in ``<workspace>/context/`` and writes its own record
there; the spw-group stages take the group as a parameter and run once per group (mapped tasks).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..errors import InputError
from ..registry import Param, stage
from ..vlass import context, heuristics as H


def _vis(ctx, needed_by: str) -> str:
    return context.read(ctx.workspace, "imaging_ms", needed_by)["vis"]


def _target(ctx, group: str, needed_by: str) -> dict:
    targets = context.read(ctx.workspace, "cube_targets", needed_by)["targets"]
    for t in targets:
        if t["group"] == group:
            return t
    raise InputError(f"{needed_by}: spw group {group!r} is not an imaging target; targets: "
                     f"{[t['group'] for t in targets]}")


def _keep_parameter_list(ctx, plist_path: Path) -> None:
    """A copy by basename in the workspace: exportvlassdata exports it from there."""
    copy = ctx.workspace / plist_path.name
    if copy.resolve() != plist_path.resolve():
        shutil.copyfile(plist_path, copy)


def _input_path(ctx, rel: str, param: str) -> Path:
    path = ctx.workspace / rel
    if not path.exists():
        raise InputError(f"parameter {param!r}: {rel} not found in the workspace {ctx.workspace}")
    return path


@stage("vlass-importdata", params=[
    Param("vis", "path", required=True, help="the per-image MS (PIMS), relative to the workspace"),
])
def importdata(ctx, vis):
    """hifv_importdata(nocopy=True): check the PIMS and record it; the PIMS itself is never modified."""
    path = _input_path(ctx, vis, "vis")
    if not (path / "table.dat").is_file():
        raise InputError(f"parameter 'vis': {vis} is not a MeasurementSet (no table.dat)")
    msmd = ctx.casa.tool("msmetadata")
    msmd.open(str(path))
    try:
        intents = sorted(msmd.intents())
        spws = sorted(int(s) for s in msmd.spwsforintent("*TARGET*")) if any("TARGET" in i for i in intents) else []
        nfield = int(msmd.nfields())
        obs = msmd.observatorynames()
    finally:
        msmd.close()
    if not spws:
        raise InputError(f"{vis}: no TARGET intent (intents: {intents})")
    record = {"vis": vis, "spws": spws, "nfield": nfield, "intents": intents, "telescope": list(obs)}
    context.write(ctx.workspace, "import", record)
    return record


@stage("vlass-editimlist-seip", params=[
    Param("parameter_list", "path", required=True, help="SEIP_parameter.list, relative to the workspace"),
])
def editimlist_seip(ctx, parameter_list):
    """hif_editimlist(parameter_file='SEIP_parameter.list'): recreate the SE-CONT imaging target."""
    from ..vlass import editimlist, paramlist

    plist_path = _input_path(ctx, parameter_list, "parameter_list")
    vis = context.read(ctx.workspace, "import", "vlass-editimlist-seip")["vis"]
    target = editimlist.seip_target(ctx.casa, ctx.workspace / vis, plist_path)
    target["imaging"] = H.imaging_params(paramlist.parse(plist_path))
    _keep_parameter_list(ctx, plist_path)
    context.write(ctx.workspace, "seip_target", target)
    return {"imagename": target["imagename"], "field": target["field"], "nfield": len(target["field_names"])}


@stage("vlass-transformimagedata", resource_class="medium", params=[])
def transformimagedata(ctx):
    """hif_transformimagedata: split the PIMS to <root>_split.ms (reindex=False), Nyquist weights."""
    from ..vlass.transform import split_for_imaging, split_name

    vis = context.read(ctx.workspace, "import", "vlass-transformimagedata")["vis"]
    se = context.read(ctx.workspace, "seip_target", "vlass-transformimagedata")
    out = split_name(vis)
    for stale in (out, out + ".flagversions"):
        if (ctx.workspace / stale).exists():
            shutil.rmtree(ctx.workspace / stale)
    split_for_imaging(ctx.casa, vis, out, se["field"])
    context.write(ctx.workspace, "imaging_ms", {"vis": out})
    return {"vis": out}


@stage("vlass-restorepims", resource_class="medium", params=[
    Param("reimaging_resources", "path", default="reimaging_resources.tgz",
          help="the SE-CONT reimaging_resources.tgz, relative to the workspace"),
])
def restorepims(ctx, reimaging_resources):
    """hifv_restorepims: model, statwt_1 flags, statwt and selfcal restored from the SE-CONT run."""
    from ..vlass import restorepims as rp

    vis = _vis(ctx, "vlass-restorepims")
    rp.raise_if_bad_vis(ctx.workspace, vis)
    se = context.read(ctx.workspace, "seip_target", "vlass-restorepims")
    out = rp.run(ctx.casa, ctx.workspace, vis, ctx.workspace / reimaging_resources, se, se["imaging"])
    context.write(ctx.workspace, "restorepims", out)
    return {"mask_list": out["mask_list"], "rerun": out["rerun"]}


@stage("vlass-flagtargetsdata", params=[
    Param("filetemplate", "path", default="",
          help="the flag template, relative to the workspace; empty: <vis root>.flagtargetstemplate.txt "
               "there, as the reference names it (a warning when absent)"),
])
def flagtargetsdata(ctx, filetemplate):
    """hifv_flagtargetsdata: apply the flag template (flagdata summaries before and after)."""
    from ..vlass import flagtemplate

    vis = _vis(ctx, "vlass-flagtargetsdata")
    root = vis[:-3] if vis.endswith(".ms") else vis
    cmds = ctx.workspace / f"{root}.flagtargetscmds.txt"
    if filetemplate:
        template = _input_path(ctx, filetemplate, "filetemplate")
    else:
        template = ctx.workspace / f"{root}.flagtargetstemplate.txt"
    lines = ["mode='summary' name='before'"]
    if template.is_file():
        lines += flagtemplate.commands(template)
    else:
        ctx.warn(f"flag template {template.name} not found: no target flags applied")
    lines.append("mode='summary' name='template'")
    cmds.write_text("\n".join(lines) + "\n")
    summary = ctx.casa.task("flagdata", vis=vis, mode="list", action="apply", inpfile=str(cmds), flagbackup=True)
    flagged = {}
    for rep in (summary or {}).values():
        if isinstance(rep, dict) and rep.get("name") in ("before", "template") and rep.get("total"):
            flagged[rep["name"]] = round(100.0 * rep["flagged"] / rep["total"], 3)
    return {"commands": cmds.name, "template_applied": template.is_file(), "template": template.name,
            "template_commands": len(lines) - 2, "flagged_percent": flagged}


@stage("vlass-editimlist-cube", params=[
    Param("parameter_list", "path", required=True, help="CCIP_parameter.list, relative to the workspace"),
    Param("plane_reject", "any", default=True,
          help="vlass_plane_reject_ms: bool or {apply, exclude_spw, flagpct_thresh, nfield_thresh}"),
])
def editimlist_cube(ctx, parameter_list, plane_reject):
    """hif_editimlist(parameter_file='CCIP_parameter.list', editmode='replace'): one target per spw group."""
    from ..vlass import editimlist

    plist_path = _input_path(ctx, parameter_list, "parameter_list")
    vis = _vis(ctx, "vlass-editimlist-cube")
    try:
        masks = context.read(ctx.workspace, "restorepims", "vlass-editimlist-cube")["mask_list"]
    except InputError:
        masks = []
    cfg, cfg_warnings = H.merge_reject(H.PLANE_REJECT_MS, plane_reject)
    for w in cfg_warnings:
        ctx.warn(w)
    targets, warnings, stats = editimlist.cube_targets(ctx.casa, ctx.workspace / vis, plist_path, masks, cfg)
    for w in warnings:
        ctx.warn(w)
    _keep_parameter_list(ctx, plist_path)
    context.write(ctx.workspace, "cube_targets", {"targets": targets, "stats": stats, "warnings": warnings})
    return {"groups": [t["group"] for t in targets],
            "targets": [{"group": t["group"], "tag": t["suffix"], "reffreq": t["reffreq"],
                         "imagename": t["imagename"]} for t in targets],
            "skipped": [g for g in stats["spwgroup_list"] if g not in [t["group"] for t in targets]]}


@stage("vlass-makeimages", resource_class="heavy", params=[
    Param("group", "str", required=True, help="the spw group to image, e.g. '2' or '3,4'"),
    Param("tclean_overrides", "dict", default={}, help="tclean parameters to override for this group"),
])
def makeimages(ctx, group, tclean_overrides):
    """hif_makeimages (vlass-cube): IQUV iter0-iter3 imaging of one spw group."""
    import inspect

    from ..vlass import makeimages as mk, overrides

    known = set(inspect.signature(ctx.casa.tasks.tclean).parameters)
    given = overrides.validate({group: tclean_overrides or {}}, known=known)[group]
    target = _target(ctx, group, "vlass-makeimages")
    out = mk.make_plane(ctx.casa, _vis(ctx, "vlass-makeimages"), target, given)
    for path in sorted(Path(ctx.workspace).glob(f"{out['root']}.iter3.*")):
        ctx.result.add_product(path.relative_to(ctx.workspace), role="image", group=group)
    return {"group": group, **out}


def _plane_image(ctx, group: str, needed_by: str) -> str:
    from ..vlass import makeimages as mk

    image = mk.final_image(_target(ctx, group, needed_by))
    if not (ctx.workspace / image).exists():
        raise InputError(f"{needed_by}: {image} not found; vlass-makeimages for group {group!r} has not succeeded")
    return image


@stage("vlass-pbcor", resource_class="medium", params=[
    Param("group", "str", required=True, help="spw group"),
])
def pbcor(ctx, group):
    """hifv_pbcor: primary-beam correction of the plane's image and residual."""
    from ..vlass import postimaging

    made = postimaging.pbcor(ctx.casa, _plane_image(ctx, group, "vlass-pbcor"))
    for p in made:
        ctx.result.add_product(p, role="image", group=group)
    return {"group": group, "images": made}


@stage("vlass-makermsimages", resource_class="medium", params=[
    Param("group", "str", required=True, help="spw group"),
])
def makermsimages(ctx, group):
    """hif_makermsimages: imdev rms image of the pb-corrected plane."""
    from ..vlass import postimaging

    out = postimaging.rms_image(ctx.casa, _plane_image(ctx, group, "vlass-makermsimages"))
    ctx.result.add_product(out, role="image", group=group)
    return {"group": group, "rms_image": out, "stats": postimaging.rms_statistics(ctx.casa, out)}


@stage("vlass-makecutoutimages", resource_class="medium", params=[
    Param("group", "str", required=True, help="spw group"),
])
def makecutoutimages(ctx, group):
    """hif_makecutoutimages: central 1 deg + 2' cut-outs with VLASSPL/VLASSPK/VLASSRMS."""
    from ..vlass import postimaging

    target = _target(ctx, group, "vlass-makecutoutimages")
    out = postimaging.cutouts(ctx.casa, _plane_image(ctx, group, "vlass-makecutoutimages"),
                              target["imaging"].get("cutout_imsize"))
    for p in out["subims"]:
        ctx.result.add_product(p, role="cutout", group=group)
    record = {"group": group, "reffreq_ghz": target["reffreq_ghz"], **{k: v for k, v in out.items() if k != "subims"}}
    context.write(ctx.workspace, f"cutout.{target['suffix']}", record)
    return record


def _plane_states(ctx) -> tuple[list[dict], list[dict]]:
    """(succeeded, failed) targets: a plane succeeded when its whole chain did (the cut-out
    stage's result says success); otherwise the first failed stage of its chain is reported."""
    import json

    targets = context.read(ctx.workspace, "cube_targets", "plane bookkeeping")["targets"]
    chain = ("vlass-makeimages", "vlass-pbcor", "vlass-makermsimages", "vlass-makecutoutimages")
    ok, failed = [], []
    for t in targets:
        reason = None
        for st in chain:
            path = ctx.workspace / "results" / f"{st}.{t['suffix']}.json"
            try:
                res = json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                reason = f"{st} did not run"
                break
            if res.get("status") != "success":
                reason = f"{st}: {res.get('message', 'failed')}"
                break
        (failed if reason else ok).append({**t, "failure": reason} if reason else t)
    return ok, failed


@stage("vlass-planes", params=[
    Param("plane_reject", "any", default=True,
          help="vlass_plane_reject_im: bool or {apply, exclude_spw, flagpct_thresh, beamdev_thresh}"),
])
def planes(ctx, plane_reject):
    """hif_makeimages analysis over all planes: rejection (VLASSRJ), VLASS keywords, QA; failed planes scored 0.34."""
    from ..vlass import images, planes as pl

    ok, failed = _plane_states(ctx)
    cfg, cfg_warnings = H.merge_reject(H.PLANE_REJECT_IM, plane_reject)
    for w in cfg_warnings:
        ctx.warn(w)
    vis = _vis(ctx, "vlass-planes")
    records = []
    for t in ok:
        root = f"{t['imagename']}.{t['imaging']['stokes']}"
        cut = context.read(ctx.workspace, f"cutout.{t['suffix']}", "vlass-planes")
        records.append({"group": t["group"], "suffix": t["suffix"], "root": root, "reffreq_ghz": t["reffreq_ghz"],
                        "flagpct": t["flagpct"], "beam": images.beam_of(ctx.casa, f"{root}.iter3.psf.tt0"),
                        "box": cut.get("box"), "rms_stats": cut["rms_stats"], "peak_jy": cut["peak_jy"]})
    ref, keep, beam_dev = pl.reject(records, cfg)
    for rec, k, dev, t in zip(records, keep, beam_dev, ok):
        rec["keep"], rec["beam_dev"] = k, dev
        rec["bandwidth_unflagged_hz"] = pl.unflagged_bandwidth(ctx.casa, vis, t["group"])
        pl.write_keywords(ctx.casa, rec["root"], t, k, rec["bandwidth_unflagged_hz"])
    n_rej = sum(not k for k in keep)
    if records:
        ctx.qa(len(records) and (len(records) - n_rej) / len(records),
               pl.rejection_message(n_rej, len(records)))
    for t in failed:
        ctx.qa(pl.FAILED_PLANE_SCORE, f"Cleaning failure for field {t['field']}, intent TARGET, specmode cont, "
                                      f"spw {t['spw']}. {t['failure']}")
        ctx.warn(f"spw group {t['group']} failed: {t['failure']}")
    if not records:
        from ..errors import ScienceError

        raise ScienceError(f"no plane was imaged successfully: {[t['failure'] for t in failed]}")
    summary = {"planes": records, "ref_idx": ref, "failed": [{"group": t["group"], "failure": t["failure"]}
                                                             for t in failed], "config": cfg}
    context.write(ctx.workspace, "planes", summary)
    return {"kept": [r["group"] for r, k in zip(records, keep) if k],
            "rejected": [r["group"] for r, k in zip(records, keep) if not k],
            "failed": [t["group"] for t in failed]}


@stage("vlass-analyzestokescubes", params=[])
def analyzestokescubes(ctx):
    """hifv_analyzestokescubes: Stokes values at the I and polarised-intensity peaks per plane, plots."""
    from ..vlass import stokes

    planes_rec = context.read(ctx.workspace, "planes", "vlass-analyzestokescubes")["planes"]
    result = stokes.analyse(ctx.casa, planes_rec)
    for w in result["warnings"]:
        ctx.warn(w)
    result["plots"] = stokes.plots(result, ctx.workspace / "weblog" / "stokes")
    context.write(ctx.workspace, "stokes", result)
    for name in result["plots"]:
        ctx.result.add_product(Path("weblog") / "stokes" / name, role="plot")
    return {"rois": result["rois"], "plots": result["plots"], "fits": result.get("fits", {})}


_OUS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+/-]{0,127}")


@stage("vlass-exportvlassdata", params=[
    Param("products_dir", "path", default="products", help="where the FITS products go, relative to the workspace"),
    Param("ous", "str", default="", help="the run's OUS status / request id, named in pipeline_manifest.xml "
                                         "(the reference's oussid); empty: 'unknown'"),
])
def exportvlassdata(ctx, products_dir, ous):
    """hifv_exportvlassdata: IQU/V FITS per plane, position correction, pipeline_manifest.xml, .com set."""
    from ..vlass import export

    if ous and not _OUS.fullmatch(ous):
        raise InputError(f"parameter 'ous': {ous[:60]!r} is not an OUS/request id (letters, digits and "
                         f"_ . : + / -, at most 128, starting with a letter or digit)")
    planes_rec = context.read(ctx.workspace, "planes", "vlass-exportvlassdata")["planes"]
    plists = []
    for name in ("seip_target", "cube_targets"):
        rec = context.read(ctx.workspace, name, "vlass-exportvlassdata")
        plists.append(rec.get("parameter_file") or rec["stats"]["parameter_file"])
    out = export.run(ctx.casa, ctx.workspace, _vis(ctx, "vlass-exportvlassdata"), planes_rec, products_dir,
                     sorted(set(plists)), ous or "unknown")
    for w in out["warnings"]:
        ctx.warn(w)
    for o in out["fits"]:
        ctx.result.add_product(Path(products_dir) / o["fits"], role="fits")
    for name in out["com"]:
        ctx.result.add_product(Path(products_dir) / name, role="fits-com")
    ctx.result.add_product(Path(products_dir) / out["manifest"], role="pipeline_manifest")
    for name in out["copied"]:
        ctx.result.add_product(Path(products_dir) / name, role="parameter_list" if name.endswith(".list") else "log")
    context.write(ctx.workspace, "export", out)
    return {"products_dir": products_dir, "fits": [o["fits"] for o in out["fits"]], "com": out["com"],
            "manifest": f"{products_dir}/{out['manifest']}"}


@stage("vlass-weblog", params=[
    Param("title", "str", default="VLASS-SE-CUBE", help="page title"),
    Param("products_dir", "path", default="products", help="where weblog.tgz goes"),
])
def weblog(ctx, title, products_dir):
    """Render the run's weblog (renders whatever stages succeeded or failed) and weblog.tgz, which
    holds ``pipeline-<YYYYMMDDTHHMMSS>/html`` as the reference's does (the time the run's first
    stage started, so a re-rendered weblog keeps its name)."""
    import json
    import time

    from .basic import publish_weblog

    try:
        started = json.loads((ctx.workspace / "results" / "vlass-importdata.json").read_text())["timings"]["started"]
    except (OSError, ValueError, KeyError, TypeError):
        started = time.time()
    arcname = "pipeline-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime(float(started))) + "/html"

    try:
        casa = ctx.casa
    except Exception as exc:  # the weblog must render even if CASA cannot start
        ctx.warn(f"CASA unavailable, no thumbnails: {exc}")
        casa = None
    return publish_weblog(ctx, title, products_dir, casa, arcname)
