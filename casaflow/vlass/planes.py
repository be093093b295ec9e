"""After the per-group chains: post-imaging plane rejection, VLASS keywords and QA (reference §5.1, §5.3).

Planes whose chain failed are recorded as failures with the reference's QA score 0.34; they do
not stop the others. Rejected planes are kept and flagged ``VLASSRJ=True``.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

import numpy as np

from . import heuristics as H
from . import images

FAILED_PLANE_SCORE = 0.34


def compress_spw(group: str) -> str:
    """'2,3,4' -> '2~4'; '2,4,5' -> '2,4~5'."""
    ids = sorted(int(s) for s in group.split(","))
    runs, start, prev = [], ids[0], ids[0]
    for i in ids[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        runs.append(str(start) if start == prev else f"{start}~{prev}")
        if i is not None:
            start = prev = i
    return ",".join(runs)


def image_type(name: str, append_tt: bool = True) -> str:
    """VLASSITY as the reference derives it from the file name (imaging.get_vlass_image_type):
    ALPHAERR, ALPHA, RMS, INTENSITY_PBCOR, WEIGHT, SUMWT, PSF, else UNKNOWN (the plain image, the
    pb and the pb-corrected residual among them), with _TT0/_TT1 appended from the name."""
    n = Path(name).name.lower()
    base = ("ALPHAERR" if ".alpha.error" in n else "ALPHA" if ".alpha" in n else "RMS" if ".rms" in n else
            "INTENSITY_PBCOR" if "image.pbcor." in n else "WEIGHT" if ".weight." in n else
            "SUMWT" if ".sumwt." in n else "PSF" if ".psf." in n else "UNKNOWN")
    if base == "UNKNOWN" or not append_tt:
        return base
    return base + ("_TT0" if "tt0" in n else "_TT1" if "tt1" in n else "")


def name_keywords(imagename: str) -> dict:
    tile = re.search(r"\.(T\d+t\d+)\.", imagename)
    epoch = re.search(r"VLASS(\d+\.\d+)", imagename)
    version = re.search(r"\.v(\d+)(?:\.|$)", imagename)
    return {"VLASSTN": tile.group(1) if tile else "", "VLASSEP": epoch.group(1) if epoch else "",
            "VLASSVR": version.group(1) if version else ""}


def unflagged_bandwidth(casa, vis: str, group: str) -> float:
    """Sum over the group's spws of unflagged channels x channel width (Hz)."""
    summary = casa.task("flagdata", vis=vis, mode="summary", spwchan=True, spw=group)
    msmd = casa.tool("msmetadata")
    msmd.open(vis)
    try:
        total = 0.0
        for spw in group.split(","):
            widths = msmd.chanwidths(int(spw))
            for chan, w in enumerate(widths):
                stat = summary.get("spw:channel", {}).get(f"{spw}:{chan}")
                if stat is None or stat["flagged"] < stat["total"]:
                    total += abs(float(w))
        return total
    finally:
        msmd.close()


def rejection_message(rejected: int, imaged: int) -> str:
    """The QA message of the post-imaging rejection, worded as the reference words it
    (hif/tasks/makeimages/qa.py: 'are' only for more than one rejected plane)."""
    return f"{rejected} of {imaged} imaged planes {'are' if rejected > 1 else 'is'} rejected."


def reject(planes: list[dict], cfg: dict) -> tuple[int | None, list[bool], list[float]]:
    """Plane keep flags: beam within (1 +/- beamdev) of the nu^-1 scaling of the median plane, and
    flag fraction below the threshold; or an excluded spw; or rejection off."""
    if not planes:
        return None, [], []
    bmaj = np.array([p["beam"]["bmaj"] for p in planes])
    bmin = np.array([p["beam"]["bmin"] for p in planes])
    freq = np.array([p["reffreq_ghz"] for p in planes])
    ref = int(np.argsort(bmin * freq)[len(planes) // 2])
    exp_maj = bmaj[ref] * freq[ref] / freq
    exp_min = bmin[ref] * freq[ref] / freq
    dev = float(cfg["beamdev_thresh"])
    exclude = set(str(cfg.get("exclude_spw", "")).replace(" ", "").split(",")) - {""}
    keep, beam_dev = [], []
    for i, p in enumerate(planes):
        ok_beam = (exp_maj[i] * (1 - dev) < bmaj[i] < exp_maj[i] * (1 + dev)) and \
                  (exp_min[i] * (1 - dev) < bmin[i] < exp_min[i] * (1 + dev))
        ok = (ok_beam and p["flagpct"] < cfg["flagpct_thresh"]) or bool(set(p["group"].split(",")) & exclude) \
            or not cfg["apply"]
        keep.append(bool(ok))
        beam_dev.append(float(max(abs(bmaj[i] / exp_maj[i] - 1), abs(bmin[i] / exp_min[i] - 1))))
    return ref, keep, beam_dev


def write_keywords(casa, root: str, target: dict, keep: bool, bw_unflagged: float) -> list[str]:
    """VLASS miscinfo keywords on every ``R.IQUV.iter3.*`` image (image, pbcor, rms, cut-outs)."""
    written = []
    common = {"VLASSBWN": float(target["nominal_bandwidth_hz"]), "VLASSRJ": not keep,
              "VLASSSPW": compress_spw(target["group"]), "VLASSPC": target["phasecenter"],
              "VLASSPL": target["imaging"]["stokes"], "VLASSPT": H.IMAGING_MODE, "VLASSBW": bw_unflagged,
              "VLASSWP": 0, **name_keywords(target["imagename"])}
    for path in sorted(glob.glob(f"{root}.iter3.*")):
        if not images.exists(f"{path}/table.dat"):
            continue
        values = dict(common, VLASSITY=image_type(path))
        if ".subim" in path and ".pbcor" in path:
            values.pop("VLASSPL")  # the cut-out stage set the Stokes actually present
        images.set_miscinfo(casa, path, values)
        written.append(path)
    return written
