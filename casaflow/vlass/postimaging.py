"""Per-plane post-imaging: hifv_pbcor, hif_makermsimages, hif_makecutoutimages (reference §6.1-6.3)."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from . import images
from .planes import image_type

CUTOUT_DEG = 1.0 + 2.0 / 60.0   # 1 deg + 2' buffer


def base_of(image: str) -> str:
    """``R.IQUV.iter3`` from ``R.IQUV.iter3.image.tt0``."""
    return image.split(".image", 1)[0]


def pbcor(casa, image: str) -> list[str]:
    """impbcor of the image and the residual with the plane's pb (divide, no cutoff)."""
    base = base_of(image)
    out = []
    for src, dst in ((f"{base}.image.tt0", f"{base}.image.pbcor.tt0"),
                     (f"{base}.residual.tt0", f"{base}.image.residual.pbcor.tt0")):
        images.remove(dst)
        casa.task("impbcor", imagename=src, pbimage=f"{base}.pb.tt0", outfile=dst, mode="divide",
                  cutoff=-1.0, stretch=False)
        out.append(dst)
    return out


# hif_makermsimages' imdev: a sliding 60" box, robust (xmadm, chauvenet) rms.
IMDEV = dict(region="", box="", chans="", stokes="", mask="", overwrite=True, stretch=False, grid=[10, 10],
             anchor="ref", xlength="60arcsec", ylength="60arcsec", interp="cubic", stattype="xmadm",
             statalg="chauvenet", zscore=-1, maxiter=-1)


def rms_image(casa, image: str) -> str:
    """imdev of the pb-corrected image, as the reference calls it on the whole image, but one
    Stokes at a time: imdev holds ~8 planes of its input at once (bench/vlass_scaling: 9.8 planes
    over the IQUV cube), one Stokes ~2 planes. Each Stokes is cut out (imsubimage, streamed: imdev's
    ``stokes=`` selection cannot anchor Q, U or V at the reference pixel, whose world Stokes is I),
    imdev'd, and the planes are joined along the Stokes axis (``images.join_stokes``).
    Pixels, mask, units, beam, keywords and coordinates are those of imdev over the whole cube
    (tests/e2e/test_vlass_memory.py compares them)."""
    src = f"{base_of(image)}.image.pbcor.tt0"
    out = f"{src}.rms"
    images.remove(out)
    images.remove(f"{out}.scratch-*")
    labels = images.stokes_labels(casa, src)
    parts = []
    for label in labels:
        sub, part = f"{out}.scratch-{label}.in", f"{out}.scratch-{label}"
        casa.task("imsubimage", imagename=src, outfile=sub, stokes=label, dropdeg=False, overwrite=True)
        casa.task("imdev", imagename=sub, outfile=part, **IMDEV)
        images.remove(sub)
        parts.append(part)
    if len(parts) == 1:
        Path(parts[0]).rename(out)
    else:
        images.join_stokes(casa, parts, out)
    images.remove(f"{out}.scratch-*")
    return out


def rms_statistics(casa, rms: str) -> dict:
    """Per-Stokes robust statistics of an rms image, one plane at a time through CASA's own
    ``ia.statistics`` (it streams: nothing of the size of a plane is held here)."""
    return {label: {k: v for k, v in images.plane_statistics(casa, rms, stokes=k).items() if k != "npts"}
            for k, label in enumerate(images.stokes_labels(casa, rms))}


def _round_half_up(x: float) -> int:
    return int(Decimal(str(x)).quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def cutout_box(casa, image: str, cutout_imsize=None) -> str | None:
    """'blcx,blcy,trcx,trcy' of the central 1 deg + 2' (or None: the whole image fits)."""
    ia = casa.tool("image")
    ia.open(image)
    try:
        cs = ia.coordsys()
        shape = ia.shape()
        refpix = cs.referencepixel()["numeric"]
        incr = cs.increment(format="n", type="direction")["numeric"]
        cs.done()
    finally:
        ia.close()
    cell_arcsec = abs(math.degrees(incr[0]) * 3600.0)
    size_deg = abs(refpix[0] * math.degrees(incr[0])) * 2
    nx, ny = int(shape[0]), int(shape[1])
    if cutout_imsize:
        size = cutout_imsize if isinstance(cutout_imsize, (list, tuple)) else [cutout_imsize, cutout_imsize]
    elif size_deg <= CUTOUT_DEG:
        return None
    else:
        n = _round_half_up(3600.0 * CUTOUT_DEG / cell_arcsec)
        size = [n, n]
    blc = [max(0, nx // 2 - size[0] / 2), max(0, ny // 2 - size[1] / 2)]
    trc = [min(nx - 1, nx // 2 + size[0] / 2 - 1), min(ny - 1, ny // 2 + size[1] / 2 - 1)]
    return f"{blc[0]},{blc[1]},{trc[0]},{trc[1]}"


def cutouts(casa, image: str, cutout_imsize=None) -> dict:
    """``<input>.subim`` for the image, residual, pbcor, rms, psf, residual pbcor and pb."""
    base = base_of(image)
    inputs = [f"{base}.image.tt0", f"{base}.residual.tt0", f"{base}.image.pbcor.tt0",
              f"{base}.image.pbcor.tt0.rms", f"{base}.psf.tt0", f"{base}.image.residual.pbcor.tt0",
              f"{base}.pb.tt0"]
    box = cutout_box(casa, image, cutout_imsize)
    made = {}
    for src in inputs:
        if not Path(src).exists():
            continue
        out = f"{src}.subim"
        images.remove(out)
        casa.task("imsubimage", imagename=src, outfile=out, box=box or "")
        made[src] = out
    pbcor_sub = f"{base}.image.pbcor.tt0.subim"
    rms_sub = f"{base}.image.pbcor.tt0.rms.subim"
    peak = float(casa.task("imstat", imagename=pbcor_sub, stokes="I")["max"][0])
    rms_median = float(casa.task("imstat", imagename=rms_sub, stokes="I")["median"][0])
    labels = images.stokes_labels(casa, pbcor_sub)
    for sub in (pbcor_sub, rms_sub):     # INTENSITY_PBCOR_TT0 and RMS_TT0, as the reference names them
        images.set_miscinfo(casa, sub, {"VLASSPL": labels, "VLASSPK": peak, "VLASSRMS": rms_median,
                                        "VLASSITY": image_type(sub)})
    return {"box": box, "subims": sorted(made.values()), "peak_jy": peak, "rms_median_jy": rms_median,
            "stokes": labels, "rms_stats": rms_statistics(casa, rms_sub), "beam": images.beam_of(casa, pbcor_sub)}
