"""The VLASS-SE-CUBE stages (recipe ``hifv_vlassCCIP``, reference §1-§6), one per worker call.

Each stage reads what earlier stages left in ``<workspace>/context/`` and writes its own record
there; the spw-group stages take the group as a parameter and run once per group (mapped tasks).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import InputError
from ..registry import Param, stage
from ..vlass import context, heuristics as H, naming


def _vis(ctx, needed_by: str) -> str:
    return context.read(ctx.workspace, "imaging_ms", needed_by)["vis"]


def _target(ctx, group: str, needed_by: str) -> dict:
    targets = context.read(ctx.workspace, "cube_targets", needed_by)["targets"]
    for t in targets:
        if t["group"] == group:
            return t
    raise InputError(f"{needed_by}: spw group {group!r} is not an imaging target; targets: "
                     f"{[t['group'] for t in targets]}")


def _input_path(ctx, rel: str, param: str) -> Path:
    path = ctx.workspace / rel
    if not path.exists():
        raise InputError(f"parameter {param!r}: {rel} not found in the workspace {ctx.workspace}")
    return path


@stage("vlass-importdata", params=[
    Param("vis", "str", required=True, help="the per-image MS (PIMS), relative to the workspace"),
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
    Param("parameter_list", "str", required=True, help="SEIP_parameter.list, relative to the workspace"),
])
def editimlist_seip(ctx, parameter_list):
    """hif_editimlist(parameter_file='SEIP_parameter.list'): recreate the SE-CONT imaging target."""
    from ..vlass import editimlist, paramlist

    plist_path = _input_path(ctx, parameter_list, "parameter_list")
    vis = context.read(ctx.workspace, "import", "vlass-editimlist-seip")["vis"]
    target = editimlist.seip_target(ctx.casa, ctx.workspace / vis, plist_path)
    target["imaging"] = H.imaging_params(paramlist.parse(plist_path))
    copy = ctx.workspace / plist_path.name
    if copy.resolve() != plist_path.resolve():
        shutil.copyfile(plist_path, copy)
    context.write(ctx.workspace, "seip_target", target)
    return {"imagename": target["imagename"], "field": target["field"], "nfield": len(target["field_names"])}


@stage("vlass-transformimagedata", resource_class="medium", params=[])
def transformimagedata(ctx):
    """hif_transformimagedata: split the PIMS to <root>_split.ms (reindex=False), Nyquist weights."""
    vis = context.read(ctx.workspace, "import", "vlass-transformimagedata")["vis"]
    se = context.read(ctx.workspace, "seip_target", "vlass-transformimagedata")
    out = Path(vis).name[:-3] + "_split.ms" if vis.endswith(".ms") else Path(vis).name + "_split.ms"
    for stale in (out, out + ".flagversions"):
        if (ctx.workspace / stale).exists():
            shutil.rmtree(ctx.workspace / stale)
    ctx.casa.task("mstransform", vis=vis, outputvis=out, field=se["field"], spw="", datacolumn="data",
                  reindex=False, chanbin=1, timebin="0s", keepflags=True)
    ctx.casa.task("initweights", vis=out, wtmode="nyq")
    context.write(ctx.workspace, "imaging_ms", {"vis": out})
    return {"vis": out}


@stage("vlass-restorepims", resource_class="medium", params=[
    Param("reimaging_resources", "str", default="reimaging_resources.tgz",
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


@stage("vlass-flagtargetsdata", params=[])
def flagtargetsdata(ctx):
    """hifv_flagtargetsdata: apply <vis_root>.flagtargetstemplate.txt if present (summary before/after)."""
    vis = _vis(ctx, "vlass-flagtargetsdata")
    root = vis[:-3] if vis.endswith(".ms") else vis
    template = ctx.workspace / f"{root}.flagtargetstemplate.txt"
    cmds = ctx.workspace / f"{root}.flagtargetscmds.txt"
    lines = ["mode='summary' name='before'"]
    if template.is_file():
        lines += [ln for ln in template.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    else:
        ctx.warn(f"flag template {template.name} not found: no target flags applied")
    lines.append("mode='summary' name='template'")
    cmds.write_text("\n".join(lines) + "\n")
    ctx.casa.task("flagdata", vis=vis, mode="list", action="apply", inpfile=str(cmds), flagbackup=True)
    return {"commands": cmds.name, "template_applied": template.is_file()}


@stage("vlass-editimlist-cube", params=[
    Param("parameter_list", "str", required=True, help="CCIP_parameter.list, relative to the workspace"),
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
    copy = ctx.workspace / plist_path.name
    if copy.resolve() != plist_path.resolve():
        shutil.copyfile(plist_path, copy)
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
    from ..vlass import makeimages as mk

    target = _target(ctx, group, "vlass-makeimages")
    out = mk.make_plane(ctx.casa, _vis(ctx, "vlass-makeimages"), target, tclean_overrides)
    for path in sorted(Path(ctx.workspace).glob(f"{out['root']}.iter3.*")):
        ctx.result.add_product(path.relative_to(ctx.workspace), role="image", group=group)
    return {"group": group, **out}
