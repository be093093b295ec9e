"""Small image-tool helpers shared by the VLASS stages (beams, keywords, statistics, removal).

Pixels are read one plane at a time (``plane``: one Stokes of one channel, through ``getchunk``
with blc/trc), strided for display (``thumbnail``), or not at all (``plane_statistics``: CASA's
own ``ia.statistics`` over a one-plane region, which streams the image). Nothing after imaging
reads a whole cube: a production plane is 12500^2 pixels (0.6 GB as float32), the IQUV cube four
of those. Axis order is CASA's image order, [ra, dec, stokes, freq].
"""

from __future__ import annotations

import glob
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def remove(pattern: str) -> None:
    for p in glob.glob(pattern):
        path = Path(p)
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def exists(name: str) -> bool:
    return Path(name).exists()


@contextmanager
def opened(casa, name: str):
    """An image tool open on ``name``, closed afterwards whatever happens."""
    ia = casa.tool("image")
    ia.open(name)
    try:
        yield ia
    finally:
        ia.close()


def shape(casa, name: str) -> list[int]:
    with opened(casa, name) as ia:
        return [int(n) for n in ia.shape()]


def has_beam(casa, name: str) -> bool:
    with opened(casa, name) as ia:
        return bool(ia.restoringbeam())


def copy_beams(casa, source: str, target: str) -> bool:
    """CAS-13401: copy the per-plane restoring beams of ``source`` (a PSF) onto ``target`` when the
    shapes match and ``target`` has none. Returns whether anything was copied."""
    if not (exists(source) and exists(target)):
        return False
    if shape(casa, source) != shape(casa, target) or has_beam(casa, target):
        return False
    ia = casa.tool("image")
    ia.open(source)
    beams = ia.restoringbeam()
    ia.close()
    if not beams:
        return False
    ia.open(target)
    try:
        if "beams" in beams:
            for chan_key, per_pol in beams["beams"].items():
                for pol_key, beam in per_pol.items():
                    ia.setrestoringbeam(beam=beam, channel=int(chan_key.lstrip("*")),
                                        polarization=int(pol_key.lstrip("*")))
        else:
            ia.setrestoringbeam(beam=beams)
    finally:
        ia.close()
    return True


def beam_of(casa, name: str, channel: int = 0, polarization: int = 0) -> dict:
    """Restoring beam (arcsec, deg) of one plane."""
    with opened(casa, name) as ia:
        rb = ia.restoringbeam(channel=channel, polarization=polarization)
    qa = casa.tools.quanta()
    return {"bmaj": qa.convert(rb["major"], "arcsec")["value"], "bmin": qa.convert(rb["minor"], "arcsec")["value"],
            "bpa": qa.convert(rb["positionangle"], "deg")["value"]}


def set_miscinfo(casa, name: str, values: dict) -> None:
    with opened(casa, name) as ia:
        info = ia.miscinfo()
        info.update(values)
        ia.setmiscinfo(info)


def stokes_labels(casa, name: str) -> str:
    with opened(casa, name) as ia:
        cs = ia.coordsys()
        labels = "".join(cs.stokes())
        cs.done()
        return labels


def join_stokes(casa, parts: list[str], out: str) -> None:
    """Single-Stokes images joined along the Stokes axis (axis 2) into ``out`` by CASA's
    ``ia.imageconcat`` (streamed), with the first part's keywords: imageconcat merges the parts'
    keywords as KEY, KEY_1, KEY_2 ..."""
    with opened(casa, parts[0]) as ia:
        info = ia.miscinfo()
    ia = casa.tool("image")
    try:
        joined = ia.imageconcat(outfile=out, infiles=parts, axis=2, relax=True, overwrite=True)
        joined.setmiscinfo(info)
        joined.done()
    finally:
        ia.close()


def _plane_box(shape, stokes: int, chan: int) -> tuple[list[int], list[int]]:
    blc = [0, 0] + [0] * (len(shape) - 2)
    trc = [int(shape[0]) - 1, int(shape[1]) - 1] + [0] * (len(shape) - 2)
    for axis, index in ((2, stokes), (3, chan)):
        if axis < len(shape):
            if not 0 <= index < shape[axis]:
                raise IndexError(f"plane index {index} outside axis {axis} of length {shape[axis]}")
            blc[axis] = trc[axis] = int(index)
    return blc, trc


def plane(casa, name: str, stokes: int = 0, chan: int = 0) -> np.ndarray:
    """One x/y plane (2-D, float) of ``name``: the only full-resolution read after imaging."""
    with opened(casa, name) as ia:
        blc, trc = _plane_box(ia.shape(), stokes, chan)
        return np.asarray(ia.getchunk(blc=blc, trc=trc, dropdeg=False)).reshape(trc[0] + 1, trc[1] + 1)


def box(casa, name: str, blc_xy, trc_xy, chan: int = 0) -> np.ndarray:
    """Pixels [x0:x1+1, y0:y1+1, every stokes] of one channel: a small window of the cube."""
    with opened(casa, name) as ia:
        shape = [int(n) for n in ia.shape()]
        blc = [max(0, int(blc_xy[0])), max(0, int(blc_xy[1]))] + [0] * (len(shape) - 2)
        trc = [min(shape[0] - 1, int(trc_xy[0])), min(shape[1] - 1, int(trc_xy[1]))] + \
              [n - 1 for n in shape[2:]]
        if len(shape) > 3:
            blc[3] = trc[3] = chan
        chunk = np.asarray(ia.getchunk(blc=blc, trc=trc, dropdeg=False))
    return chunk.reshape(chunk.shape[:3]) if chunk.ndim > 3 else chunk


def thumbnail(casa, name: str, stokes: int = 0, chan: int = 0, max_pixels: int = 512) -> np.ndarray:
    """One plane read with a stride so that neither side exceeds ``max_pixels``: memory does not
    grow with the image. A display aid only (a stride can step over a peak)."""
    with opened(casa, name) as ia:
        blc, trc = _plane_box(ia.shape(), stokes, chan)
        step = max(1, -(-max(trc[0] + 1, trc[1] + 1) // max_pixels))
        inc = [step, step] + [1] * (len(blc) - 2)
        chunk = np.asarray(ia.getchunk(blc=blc, trc=trc, inc=inc, dropdeg=False))
    return chunk.reshape(chunk.shape[0], chunk.shape[1])


def plane_statistics(casa, name: str, stokes: int = 0, chan: int = 0, robust: bool = True) -> dict:
    """``ia.statistics`` of one plane (CASA streams it; masked and non-finite pixels excluded):
    max, min, mean, median and madrms (1.4826 x the median absolute deviation)."""
    rg = casa.tools.regionmanager()
    with opened(casa, name) as ia:
        blc, trc = _plane_box(ia.shape(), stokes, chan)
        st = ia.statistics(region=rg.box(blc=blc, trc=trc), robust=robust, list=False, verbose=False)
    rg.done()
    if not len(st.get("npts", [])) or float(st["npts"][0]) == 0:
        return {"max": float("nan"), "min": float("nan"), "median": float("nan"), "mean": float("nan"),
                "madrms": float("nan"), "npts": 0}
    out = {k: float(st[k][0]) for k in ("max", "min", "mean")}
    out["npts"] = int(st["npts"][0])
    if robust:
        out["median"] = float(st["median"][0])
        out["madrms"] = float(st["medabsdevmed"][0]) * 1.4826
    return out


def madrms(values: np.ndarray, overwrite: bool = False) -> float:
    """1.4826 x the median absolute deviation of the finite values. With ``overwrite`` the
    selection is worked on in place (one copy of the selected values, no more)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan")
    if not overwrite:
        return float(np.median(np.abs(v - np.median(v))) * 1.4826)
    med = np.median(v, overwrite_input=True)
    v -= med
    np.abs(v, out=v)
    return float(np.median(v, overwrite_input=True) * 1.4826)
