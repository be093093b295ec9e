"""ALMA stages: hifa_exportdata over a pipeline working directory, QA2 packaging, transfer chunks."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..registry import Param, stage


def _inside(ctx, rel: str, what: str) -> Path:
    path = (ctx.workspace / rel).resolve()
    if not path.exists():
        raise InputError(f"parameter {what!r}: {rel!r} not found in the workspace {ctx.workspace}")
    return path


@stage("alma-exportdata", resource_class="medium", params=[
    Param("working_dir", "path", required=True, help="the pipeline working directory (relative to the workspace)"),
    Param("vis", "names", default=[], help="MSs whose flags and calibrations are exported; default: all in the "
                                         "working directory"),
    Param("session", "list", default=[], help="one session per vis; default: each MS's session as the run's "
                                             "context records it (session_1 without a context); MSs beyond the "
                                             "list go to the last session"),
    Param("imaging_products_only", "bool", default=False, help="export science target imaging products only"),
    Param("exportmses", "bool", default=False, help="export the final MSs instead of flags, caltables and "
                                                   "apply lists"),
    Param("tarms", "bool", default=True, help="with exportmses: tar each MS (<vis>.tgz) instead of copying it"),
    Param("pprfile", "name", default="", help="PPR file name or pattern in the working directory; default PPR_*.xml"),
    Param("calintents", "str", default="", help="calibrator image intents, comma list, wildcards allowed "
                                               "('*PHASE*'); default: PHASE,BANDPASS,CHECK,AMPLITUDE,"
                                               "POLARIZATION"),
    Param("calimages", "names", default=[], help="calibrator image names to export instead of the run's list"),
    Param("targetimages", "names", default=[], help="science target image names to export instead of the run's list"),
    Param("products_dir", "path", default="products", help="products directory (relative to the workspace)"),
])
def alma_exportdata(ctx, working_dir, products_dir, **params):
    """hifa_exportdata: PPR, flags, apply lists, caltables per session, FITS images, weblog, CASA commands,
    scripts, auxproducts, pipeline manifest and AQUA report into products_dir."""
    from ..alma import exportdata

    working = _inside(ctx, working_dir, "working_dir")
    p = exportdata.ExportParams(products_dir=products_dir, **params)
    summary = exportdata.run(ctx.casa, ctx.workspace, working, p, ctx.warn, ctx.result.versions)
    for name, role in summary["files"]:
        ctx.result.add_product(Path(products_dir) / name, role=role)
    scores = [s["score"] for s in summary["qa_scores"]]
    ctx.qa(min(scores), next((s["reason"] for s in summary["qa_scores"] if s["score"] == min(scores)), ""))
    return {k: summary[k] for k in ("prefix", "oussid", "recipe", "products_dir", "sessions")} | {
        "manifest": f"{products_dir}/{summary['prefix']}.pipeline_manifest.xml", "images": len(summary["images"]),
        "files": len(summary["files"])}


@stage("qa2-package", resource_class="medium", params=[
    Param("origpath", "path", default="", help="manual-reduction SB directory (relative to the workspace); "
                                             "empty when packaging pipeline products"),
    Param("products_dir", "path", default="", help="exportdata's products directory, for pipeline-processed data"),
    Param("readme", "path", default="", help="README header file (relative to the workspace)"),
    Param("packpath", "path", required=True, help="package directory, named by the project code "
                                                "(relative to the workspace), e.g. package/2011.0.00229.S"),
    Param("mode", "str", default="hard", choices=("fake", "hard", "ticket"),
          help="fake: dummy structure; hard: real data (split with CASA); ticket: real ticket, dummy package"),
    Param("append", "str", default="", choices=("", "member"), help="'member': add the next member OUS to an "
                                                                   "existing package"),
])
def qa2_package(ctx, origpath, products_dir, readme, packpath, mode, append):
    """QA2 delivery package (member OUS tree, README, ticket tar/zip) from a manual reduction or from
    exportdata's products."""
    from ..alma import qa2

    if bool(origpath) == bool(products_dir):
        raise InputError("stage 'qa2-package': give exactly one of 'origpath' (manual reduction) or "
                         "'products_dir' (pipeline products)")
    header = _inside(ctx, readme, "readme") if readme else None
    ids = None
    if origpath:
        src = _inside(ctx, origpath, "origpath")
        plan = qa2.plan_manual(src)
        label = src.name
    else:
        src = _inside(ctx, products_dir, "products_dir")
        plan, ids = qa2.plan_pipeline(src)
        label = f"pipeline:{ids['mous']}"
    casa = ctx.casa if mode == "hard" and any(p.action == "split-data" for p in plan.member_files) else None
    summary = qa2.package(casa, plan, ctx.workspace / packpath, header, mode, append, label, ids,
                          {"SB name": src.name} if origpath else {})
    for skipped in summary["skipped"]:
        ctx.warn(f"not packaged: {skipped}")
    ctx.result.add_product(Path(packpath), role="qa2_package")
    for t in summary["tickets"]:
        ctx.result.add_product(Path(t).relative_to(ctx.workspace), role="ticket")
    return {k: summary[k] for k in ("package", "member", "mode", "files", "expected_size", "size", "executions")} | {
        "package": packpath}


@stage("tarsplit", params=[
    Param("package", "path", required=True, help="package directory (relative to the workspace)"),
    Param("outdir", "path", default="transfer", help="where the chunks go (relative to the workspace)"),
    Param("chunk_size", "str", default="4G", help="largest chunk, bytes or e.g. '500M', '4G'"),
    Param("date", "str", required=True, help="date in the chunk names, YYYY-MM-DD"),
    Param("project", "name", default="", help="project code in the chunk names; default: the package's name"),
])
def tarsplit_stage(ctx, package, outdir, chunk_size, date, project):
    """Split a package into tar chunks no larger than chunk_size, with a SHA-256 list."""
    from ..alma import tarsplit

    summary = tarsplit.split(_inside(ctx, package, "package"), ctx.workspace / outdir, chunk_size, date,
                             project or None)
    for name in summary["chunks"] + [summary["checksums"]]:
        ctx.result.add_product(Path(outdir) / name, role="transfer_chunk" if name.endswith(".tar") else "checksums")
    return {"outdir": outdir, **{k: summary[k] for k in ("chunks", "sizes", "checksums", "limit")}}
