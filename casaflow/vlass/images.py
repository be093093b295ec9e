"""Small image-tool helpers shared by the VLASS stages (beams, keywords, statistics, removal)."""

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


def pixels(casa, name: str) -> np.ndarray:
    with opened(casa, name) as ia:
        return ia.getchunk(dropdeg=False)


def madrms(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan")
    return float(np.median(np.abs(v - np.median(v))) * 1.4826)
