"""``hif_makeimages`` in VLASS-SE-CUBE mode for one plane (spw group), reference §5.2.

IQUV in one tclean per iteration, mtmfs with nterms=1, mosaic gridder, serial:

    iter0  niter=0, no mask, nsigma 2.0
    iter1  tier-1 mask (copied to R.iter1.cleanmask), nsigma 3.0
    iter2  tier-2 mask (R.iter2.cleanmask), nsigma 3.0
    iter3  pb mask (pbmask 0.4), nsigma 4.5, cycleniter_final_image_nomask

Between iterations the previous products are moved on (``.cleanmask`` stays, ``.mask`` is
deleted, ``.image``/``.residual`` are copied), so only the listed products remain.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from . import images
from .overrides import apply as apply_overrides

log = logging.getLogger("casaflow.vlass.makeimages")


def root_of(target: dict) -> str:
    """``R.IQUV``: every product of the plane starts with this."""
    return f"{target['imagename']}.{target['imaging']['stokes']}"


def final_image(target: dict) -> str:
    return f"{root_of(target)}.iter3.image.tt0"


def _advance(prev: str, cur: str) -> None:
    """Move iteration products ``prev.*`` to ``cur.*`` with the reference's exceptions."""
    for path in sorted(glob.glob(f"{prev}.*")):
        ext = path[len(prev):]
        if ext.startswith(".cleanmask"):
            continue
        if ext == ".mask" or ext.startswith(".mask."):
            shutil.rmtree(path)
            continue
        dest = f"{cur}{ext}"
        if Path(dest).exists():
            shutil.rmtree(dest)
        if ".residual" in ext or ".image" in ext:
            shutil.copytree(path, dest)
        else:
            os.rename(path, dest)


def _prepare_mask(casa, se_mask: str, out: str, template_pb: str) -> None:
    """Copy the Stokes-I SE mask to ``out``; regrid onto the plane's grid if x/y differ. The name
    differs from ``<imagename>.mask`` so tclean broadcasts it over the Stokes axis."""
    images.remove(out)
    if images.shape(casa, se_mask)[:2] == images.shape(casa, template_pb)[:2]:
        shutil.copytree(se_mask, out)
    else:
        casa.task("imregrid", imagename=se_mask, template=template_pb, output=out, axes=[0, 1],
                  interpolation="nearest", replicate=False, overwrite=True)


def _fix_beams(casa, it: str, stokes: str) -> list[str]:
    """CAS-13401 workaround after a tclean call with stokes != I."""
    if stokes == "I":
        return []
    psf = f"{it}.psf" if Path(f"{it}.psf").exists() else f"{it}.psf.tt0"
    if not Path(psf).exists():
        log.error("The restoring beam information source image is not found.")
        return []
    fixed = []
    for base in (".image", ".residual", ".image.pbcor"):
        for term in ("", ".tt0", ".tt1", ".tt2"):
            if images.copy_beams(casa, psf, f"{it}{base}{term}"):
                fixed.append(f"{it}{base}{term}")
    return fixed


def _keywords(casa, it: str, target: dict, n: int, nfield: int, pblimit: float) -> dict:
    """Header keywords on ``.image.tt0`` after each iteration (reference §5.2). Stokes-I planes
    only, read one at a time: at most about three planes in memory, never the IQUV cube."""
    image, pb, residual = f"{it}.image.tt0", f"{it}.pb.tt0", f"{it}.residual.tt0"
    outside = None                      # pixels at or below pblimit
    corr = images.plane(casa, image)
    if Path(pb).exists():
        pbv = images.plane(casa, pb)
        outside = ~(pbv > pblimit)
        np.divide(corr, pbv, out=corr, where=~outside)
        del pbv
        corr[outside] = np.nan
    datamin, datamax = float(np.nanmin(corr)), float(np.nanmax(corr))
    if Path(residual).exists():
        del corr
        res = images.plane(casa, residual)
        if outside is not None:
            res[outside] = np.nan
        datarms = images.madrms(res, overwrite=True)
        del res
    else:
        datarms = images.madrms(corr, overwrite=True)
    keys = {"nfield": nfield, "datamin": datamin, "datamax": datamax,
            "datarms": datarms, "stokes": target["imaging"]["stokes"],
            "effbw": float(target["nominal_bandwidth_hz"]), "ctrfrq": float(target["reffreq_ghz"] * 1e9),
            "spw": target["spw"], "virtspw": target["spw"], "field": target["field"], "type": "image",
            "iter": n, "intent": "TARGET", "specmode": "cont", "robust": float(target["imaging"]["robust"]),
            "weight": target["imaging"]["weighting"]}
    images.set_miscinfo(casa, image, keys)
    return keys


def iteration_calls(vis: str, target: dict) -> list[dict]:
    """The heuristic tclean arguments of iter0..iter3 (imagename and mask files aside): the one
    place they are written down. ``mask`` of iter1/iter2 is the cleanmask the sequence prepares."""
    im = dict(target["imaging"])
    common = dict(vis=vis, field=target["field"], spw=target["spw"], intent="*TARGET*",
                  datacolumn=im["datacolumn"], specmode="mfs", gridder=im["gridder"], wprojplanes=1,
                  pblimit=im["pblimit"], imsize=im["imsize"], cell=im["cell"], stokes=im["stokes"],
                  deconvolver=im["deconvolver"], nterms=im["nterms"], reffreq=target["reffreq"],
                  weighting=im["weighting"], robust=im["robust"], uvrange=im["uvrange"],
                  uvtaper=[im["uvtaper"]] if im["uvtaper"] else [], restoringbeam="",
                  phasecenter=target["phasecenter"], outframe="LSRK", conjbeams=False, usepointing=False,
                  mosweight=False, cyclefactor=im["cyclefactor"], fastnoise=True, psfcutoff=im["psfcutoff"],
                  rotatepastep=im["rotatepastep"], smallscalebias=im["smallscalebias"],
                  pointingoffsetsigdev=im["pointingoffsetsigdev"], perchanweightdensity=False, npixels=0,
                  interactive=False, fullsummary=True, parallel=False, pbcor=False)
    calls = [dict(common, niter=0, nsigma=im["nsigma_iter0"], cycleniter=im["cycleniter"],
                  threshold="0.0mJy", restoration=True, usemask="user", mask="")]
    cleaning = dict(common, niter=im["niter"], nmajor=im["nmajor"], scales=im["scales"],
                    threshold=im["threshold"], restart=True, calcpsf=False, calcres=False)
    for n in (1, 2):
        calls.append(dict(cleaning, usemask="user", nsigma=im["nsigma"], cycleniter=im["cycleniter"]))
    calls.append(dict(cleaning, usemask="pb", pbmask=im["pbmask"], mask="", nsigma=im["nsigma_final"],
                      cycleniter=im["cycleniter_final_image_nomask"]))
    return calls


def make_plane(casa, vis: str, target: dict, overrides: dict | None = None) -> dict:
    """Run the iter0..iter3 sequence for one plane, ``overrides`` (validated by
    :func:`overrides.validate`) replacing heuristics of the same name. Returns a small summary."""
    im = target["imaging"]
    R = root_of(target)
    images.remove(f"{R}.*")   # idempotent: a re-run starts from nothing
    nfield = len(target["field"].split(","))
    calls = iteration_calls(vis, target)
    stops = {}
    beam_fixed: list[str] = []
    masks = target["mask"]  # [tier1, tier2, 'pb']
    it = None
    for n, heuristic in enumerate(calls):
        prev, it = it, f"{R}.iter{n}"
        call = apply_overrides(heuristic, overrides or {}, n)
        if n in (1, 2) and "mask" not in (overrides or {}):
            call["mask"] = f"{it}.cleanmask"
        if prev is not None:
            images.remove(f"{it}.*")
            if n in (1, 2) and call["mask"] == f"{it}.cleanmask":
                _prepare_mask(casa, masks[n - 1], call["mask"], f"{prev}.pb.tt0")
            _advance(prev, it)
        ret = casa.task("tclean", **call, imagename=it)
        if n and isinstance(ret, dict) and "stopcode" in ret:
            stops[f"iter{n}"] = int(ret["stopcode"])
        beam_fixed += _fix_beams(casa, it, call["stokes"])
        _keywords(casa, it, target, n, nfield, call["pblimit"])
    beam = images.beam_of(casa, f"{R}.iter3.psf.tt0")
    return {"image": final_image(target), "root": R, "stopcodes": stops, "beam": beam,
            "beam_fixed": beam_fixed}
