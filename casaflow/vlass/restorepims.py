"""``hifv_restorepims``: bring the PIMS to the state of the SE-CONT final imaging MS (reference §3).

Order: find and extract the resources -> back up the initial flags -> fill MODEL_DATA from the
selfcal model -> restore the ``statwt_1`` flags -> statwt with the SE settings -> applycal of
the selfcal table. A re-run first restores ``hifv_restorepims_initial`` and re-initialises the
weights, so it gives the same flags and weights as the first run.
"""

from __future__ import annotations

import glob
import logging
import shutil
from pathlib import Path

from .. import safetar
from ..errors import InputError
from . import naming

log = logging.getLogger("casaflow.vlass.restorepims")

RULE = "-" * 120
HEADER = ("Some resources required for hifv_restorepims()/hif_makeimages() are not available, and "
          "Pipeline cannot continue.")


def discover(workspace: Path, tarball: Path, vis: str, se_imagename: str) -> tuple[dict, list[str]]:
    """Extract what the patterns select, then glob for each resource on disk.

    Returns ``(resources, log_lines)`` where resources maps each key (plus
    ``reimaging_resources``) to ``(paths | pattern, found)`` as the reference records it.
    """
    patterns = naming.resource_patterns(vis, se_imagename)
    resources: dict = {}
    lines: list[str] = []
    try:
        members = safetar.list_members(tarball)
    except InputError:
        lines.append(f"The reimaging resources tarball {tarball} doesn't exist or is not a tarfile.")
        resources["reimaging_resources"] = (str(tarball), False)
        for key in naming.RESOURCE_KEYS:
            resources[key] = (patterns[key], False)
        return resources, lines
    resources["reimaging_resources"] = (str(tarball), True)
    skip = []
    if (workspace / patterns["flag_version"]).exists():
        skip = [patterns["flag_dir"]]
        lines.append(f"{patterns['flag_version']} already exists: flag versions in the tarball not extracted, "
                     f"local versions (e.g. {naming.INITIAL_FLAG_VERSION}) kept")
    extracted = safetar.extract(tarball, workspace, list(patterns.values()), skip)
    lines += [f"extracted {m}" for m in extracted]
    if not [m for m in members if m.name in extracted] and not skip:
        lines.append(f"no member of {tarball.name} matched the resource patterns")
    for key in naming.RESOURCE_KEYS:
        found = sorted(glob.glob(str(workspace / patterns[key])))
        desc = naming.RESOURCE_DESCRIPTIONS[key]
        if found:
            rel = [str(Path(p).relative_to(workspace)) for p in found]
            resources[key] = (rel, True)
            lines.append(f"Found the request {desc}: {rel}")
        else:
            resources[key] = (patterns[key], False)
            lines.append(f"Cannot find the request {desc} using the name pattern: {patterns[key]}")
    return resources, lines


def missing_message(resources: dict) -> str:
    body = [f"{key:20}: {tuple(value)}" for key, value in resources.items()]
    return "\n".join([RULE, HEADER, *body, RULE])


def check(resources: dict) -> None:
    if not all(found for _, found in resources.values()):
        raise InputError(missing_message(resources))


def _has_column(casa, table: str, column: str) -> bool:
    tb = casa.tool("table")
    tb.open(table)
    try:
        return column in tb.colnames()
    finally:
        tb.close()


def _flag_versions(casa, vis: str) -> list[str]:
    listing = casa.task("flagmanager", vis=vis, mode="list") or {}
    return [v.get("name") for k, v in listing.items() if isinstance(v, dict) and "name" in v]


def predict_model(casa, vis: str, model_images: list[str], se: dict, imaging: dict) -> None:
    """Fill MODEL_DATA from the SE selfcal model (tt0/tt1) with the SE stage-1 imaging setup.

    The model products are copied onto an iter0 image set made on the same grid (rather than
    passed as startmodel, which regrids on a csys mismatch: CAS-13338), then a niter=0 tclean
    with savemodel='modelcolumn' writes MODEL_DATA. Serial (CAS-13071).
    """
    restore_root = model_images[0].rsplit(".model", 1)[0]
    root = "restorepims_model.I.iter0"
    for old in glob.glob(f"{root}.*"):
        shutil.rmtree(old) if Path(old).is_dir() else Path(old).unlink()
    common = dict(vis=vis, imagename=root, field=se["field"], datacolumn="data", specmode="mfs",
                  deconvolver="mtmfs", nterms=2, reffreq="3.0GHz", gridder="mosaic", stokes="I",
                  imsize=imaging["imsize"], cell=imaging["cell"], phasecenter=se["phasecenter"],
                  weighting="briggs", robust=-2.0, uvtaper=["2.6476arcsec"], uvrange="<12km",
                  pblimit=imaging["pblimit"], niter=0, parallel=False)
    casa.task("tclean", **common, calcres=False, calcpsf=True)
    for model in model_images:
        suffix = model[len(restore_root):]          # ".model.tt0" / ".model.tt1"
        target = f"{root}{suffix}"
        if Path(target).exists():
            shutil.rmtree(target)
        shutil.copytree(model, target)
    casa.task("tclean", **common, calcres=False, calcpsf=False, restart=True, savemodel="modelcolumn")


def run(casa, workspace: Path, vis: str, tarball: Path, se: dict, imaging: dict) -> dict:
    resources, lines = discover(workspace, tarball, vis, se["se_imagename"])
    for line in lines:
        log.info("%s", line)
    check(resources)

    versions = _flag_versions(casa, vis)
    rerun = _has_column(casa, vis, "MODEL_DATA")
    if naming.INITIAL_FLAG_VERSION not in versions:
        casa.task("flagmanager", vis=vis, mode="save", versionname=naming.INITIAL_FLAG_VERSION,
                  comment="flagversion before running hifv_restorepims() first time", merge="replace")
    else:
        log.warning("flag version %s exists: not backed up again", naming.INITIAL_FLAG_VERSION)
    if rerun:
        log.warning("MODEL_DATA exists (a re-run): restoring %s and re-initialising weights first",
                    naming.INITIAL_FLAG_VERSION)
        casa.task("flagmanager", vis=vis, mode="restore", versionname=naming.INITIAL_FLAG_VERSION)
        casa.task("initweights", vis=vis, wtmode="nyq")
        # Unlike the reference, also drop CORRECTED_DATA: with it present, statwt on
        # 'residual_data' updates SIGMA instead of WEIGHT, and the re-run would keep Nyquist
        # weights. Without it the re-run repeats the first run exactly.
        if _has_column(casa, vis, "CORRECTED_DATA"):
            tb = casa.tool("table")
            tb.open(vis, nomodify=False)
            try:
                tb.removecols(["CORRECTED_DATA"])
            finally:
                tb.close()
    if _has_column(casa, f"{vis}/SOURCE", "SOURCE_MODEL"):
        casa.task("delmod", vis=vis, otf=True, scr=False)

    predict_model(casa, vis, resources["model_images"][0], se, imaging)
    casa.task("flagmanager", vis=vis, mode="restore", versionname=naming.STATWT_FLAG_VERSION)
    # The reference passes minsamp='' and fitcorr=''; CASA 6.7's statwt has no fitcorr and
    # wants an int minsamp, so both keep their defaults.
    casa.task("statwt", vis=vis, fitspw="", field="", spw="", combine="field,scan,state,corr",
              chanbin=1, timebin="1yr", datacolumn="residual_data", flagbackup=False)
    msmd = casa.tool("msmetadata")
    msmd.open(vis)
    try:
        nspw_all = int(msmd.nspw())
        lowest_science = min(int(s) for s in msmd.spwsforintent("*TARGET*"))
    finally:
        msmd.close()
    gaintable = resources["selfcal_table"][0][0]
    casa.task("applycal", vis=vis, gaintable=[gaintable], interp=["nearest"],
              spwmap=[nspw_all * [lowest_science]], parang=False, applymode="calonly", calwt=[False])
    return {"resources": {k: list(v) for k, v in resources.items()},
            "mask_list": [resources["tier1_mask"][0][0], resources["tier2_mask"][0][0]],
            "rerun": rerun, "log": lines}


def raise_if_bad_vis(workspace: Path, vis: str) -> None:
    if not (workspace / vis / "table.dat").is_file():
        raise InputError(f"restorepims: {vis} is not a MeasurementSet in {workspace}")
