"""``hifv_analyzestokescubes`` (reference §6.4): Stokes values per plane at two peaks, and plots.

The peaks (Stokes I, and linearly polarised intensity sqrt(Q^2+U^2)) are found on the lowest-
frequency pb-corrected cut-out inside a joint mask (tier-2 clean mask AND the final pb mask of
the highest-frequency plane); every plane is then sampled in the 3x3-pixel box around them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from . import images

log = logging.getLogger("casaflow.vlass.stokes")

# Approximate VLA S-band system equivalent flux density (Jy) vs frequency (GHz), for the shape of
# the expected noise curve only (it is scaled to the measured Q/U/V rms). Illustrative values read
# off the VLA's published sensitivity figures; not a calibration product.
VLA_SEFD_S = {"band": "S", "range_ghz": (2.0, 4.0),
              "freq_ghz": [2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75, 4.0],
              "sefd_jy": [420.0, 390.0, 370.0, 360.0, 350.0, 350.0, 355.0, 365.0, 380.0]}


def _mask_subimage(casa, mask: str, template: str, box: str | None) -> str:
    out = f"{mask}.subim"
    images.remove(out)
    casa.task("imsubimage", imagename=mask, outfile=out, box=box or "", stokes="I")
    return out


def joint_mask(casa, root_hi: str, box: str | None) -> tuple[str, list[str]]:
    """LEL expression combining the tier-2 clean mask and the iter3 pb mask on the cut-out grid."""
    warnings, parts = [], []
    template = f"{root_hi}.iter3.image.pbcor.tt0.subim"
    for mask in (f"{root_hi}.iter2.cleanmask", f"{root_hi}.iter3.mask"):
        try:
            parts.append(f'"{_mask_subimage(casa, mask, template, box)}">0.5')
        except Exception as exc:  # a failing mask is skipped, as the reference does
            warnings.append(f"mask {mask} skipped: {exc}")
    return " && ".join(parts), warnings


def _mask_array(casa, mask: str):
    """The joint mask as a boolean x/y array (None when there is no mask)."""
    if not mask:
        return None
    m = None
    for part in mask.split(" && "):
        plane = images.plane(casa, part.split('"')[1]) > 0.5
        m = plane if m is None else np.logical_and(m, plane, out=m)
    return m if m.any() else None


def _argmax(data: np.ndarray, mask) -> list[int]:
    """Position of the maximum inside ``mask``; ``data`` (a plane read for this) is overwritten."""
    if mask is not None:
        data[~mask] = -np.inf
    return [int(v) for v in np.unravel_index(np.nanargmax(data), data.shape)]


def _linpol_plane(casa, image: str) -> np.ndarray:
    """sqrt(Q^2 + U^2) of one plane, with two planes in memory at most."""
    pol = images.plane(casa, image, stokes=1)
    np.square(pol, out=pol)
    u = images.plane(casa, image, stokes=2)
    np.square(u, out=u)
    pol += u
    del u
    return np.sqrt(pol, out=pol)


def analyse(casa, planes: list[dict]) -> dict:
    """``planes``: [{group, reffreq_ghz, keep, root, box, rms_stats, beam}] of succeeded planes."""
    if not planes:
        return {"rois": {}, "planes": [], "warnings": ["no plane to analyse"]}
    by_freq = sorted(planes, key=lambda p: p["reffreq_ghz"])
    lo, hi = by_freq[0], by_freq[-1]
    mask, warnings = joint_mask(casa, hi["root"], hi.get("box"))
    lo_img = f"{lo['root']}.iter3.image.pbcor.tt0.subim"
    m = _mask_array(casa, mask)
    rois = {"peak_stokesi": _argmax(images.plane(casa, lo_img, stokes=0), m),
            "peak_linpolint": _argmax(_linpol_plane(casa, lo_img), m)}
    del m
    out_planes = []
    for p in by_freq:
        img = f"{p['root']}.iter3.image.pbcor.tt0.subim"
        rms = f"{p['root']}.iter3.image.pbcor.tt0.rms.subim"
        try:
            rec = {"group": p["group"], "reffreq_hz": p["reffreq_ghz"] * 1e9, "keep": p["keep"],
                   "beamarea": p["beam"]["bmaj"] * p["beam"]["bmin"],
                   "rms": {k: v["median"] for k, v in p["rms_stats"].items()}}
            for name, (x, y) in rois.items():
                box = images.box(casa, img, (x - 1, y - 1), (x + 1, y + 1))        # 3x3 x Stokes
                rbox = images.box(casa, rms, (x - 1, y - 1), (x + 1, y + 1))[..., 0]
                rec[name] = {"I": float(box[..., 0].mean()), "Q": float(box[..., 1].mean()),
                             "U": float(box[..., 2].mean()), "V": float(box[..., 3].mean()),
                             "stokesi_rms": float(rbox.mean())}
            out_planes.append(rec)
        except Exception as exc:
            warnings.append(f"plane {p['group']}: Stokes analysis failed ({exc})")
    return {"rois": rois, "planes": out_planes, "warnings": warnings, "mask": mask}


def powerlaw_fit(freq_ghz, flux, keep) -> tuple[float, float]:
    """I(nu) = A (nu / 3 GHz)^-alpha_f fitted with weight 1 for kept planes and 0 for rejected ones
    (astropy PowerLaw1D, x_0 fixed at 3 GHz). Returns (I at 3 GHz, spectral index alpha)."""
    from astropy.modeling import fitting, models

    model = models.PowerLaw1D(amplitude=max(float(np.max(flux)), 1e-12), x_0=3.0, alpha=0.7,
                              fixed={"x_0": True}, bounds={"amplitude": (0, None)})
    fitter = fitting.LevMarLSQFitter()
    weights = np.array([1.0 if k else 0.0 for k in keep])
    fit = fitter(model, np.asarray(freq_ghz), np.asarray(flux), weights=weights)
    return float(fit.amplitude.value), float(-fit.alpha.value)


def plots(result: dict, outdir: Path) -> list[str]:
    """The weblog plots: U/I vs Q/I and I vs frequency per ROI, median rms vs frequency with SEFD."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    made = []
    planes = result["planes"]
    if not planes:
        return made
    freq = np.array([p["reffreq_hz"] for p in planes]) / 1e9
    keep = [p["keep"] for p in planes]
    for roi in result["rois"]:
        i = np.array([p[roi]["I"] for p in planes])
        q = np.array([p[roi]["Q"] for p in planes]) / i
        u = np.array([p[roi]["U"] for p in planes]) / i
        fig, ax = plt.subplots(figsize=(5, 5))
        for k, p in enumerate(planes):
            ax.scatter(q[k], u[k], facecolors="C0" if keep[k] else "none", edgecolors="C0")
            ax.annotate(f"{p['group']} : {freq[k]:.3f} GHz", (q[k], u[k]), fontsize=7)
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel("Q/I")
        ax.set_ylabel("U/I")
        ax.set_title(f"Fractional polarisation at {roi}")
        name = outdir / f"stokes_summary_u_vs_q_{roi}.png"
        fig.savefig(name, dpi=80, bbox_inches="tight")
        plt.close(fig)
        made.append(name.name)

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.loglog(freq, i * 1e3, "o")
        rms_i = np.array([p["rms"].get("I", np.nan) for p in planes]) * 1e3
        floor = 2 * np.nanmedian(rms_i)
        ax.fill_between(freq, 0.5 * min(floor, np.nanmin(i) * 1e3), floor, color="grey", alpha=0.3,
                        label="< 2 x median rms")
        try:
            i3, alpha = powerlaw_fit(freq, i, keep)
            grid = np.linspace(freq.min(), freq.max(), 50)
            ax.loglog(grid, i3 * 1e3 * (grid / 3.0) ** alpha, "-", label=f"I(3GHz)={i3 * 1e3:.2f} mJy, alpha={alpha:.2f}")
            result.setdefault("fits", {})[roi] = {"i_3ghz_jy": i3, "alpha": alpha}
        except Exception as exc:
            log.warning("power-law fit at %s failed: %s", roi, exc)
        ax.set_xlabel("Frequency (GHz)")
        ax.set_ylabel("Stokes I (mJy)")
        ax.legend(fontsize=7)
        name = outdir / f"stokes_summary_flux_vs_freq_{roi}.png"
        fig.savefig(name, dpi=80, bbox_inches="tight")
        plt.close(fig)
        made.append(name.name)

    fig, ax = plt.subplots(figsize=(6, 4))
    rms = {s: np.array([p["rms"].get(s, np.nan) for p in planes]) for s in "IQUV"}
    for s, values in rms.items():
        ax.plot(freq, values * 1e6, "o-", label=s)
    mean_f = float(np.mean(freq))
    lo_f, hi_f = VLA_SEFD_S["range_ghz"]
    if lo_f <= mean_f <= hi_f:
        sefd = np.interp(freq, VLA_SEFD_S["freq_ghz"], VLA_SEFD_S["sefd_jy"])
        ratios = np.concatenate([rms[s] / sefd for s in "QUV"])
        scale = float(np.nanmedian(ratios))
        ax.plot(freq, sefd * scale * 1e6, "k--", label="scaled VLA SEFD")
    ax.set_xlim(1.9, 4.1)
    ax.set_xlabel("Frequency (GHz)")
    ax.set_ylabel("median rms (uJy/beam)")
    ax.legend(fontsize=7)
    name = outdir / "rms_Median_vs_freq.png"
    fig.savefig(name, dpi=80, bbox_inches="tight")
    plt.close(fig)
    made.append(name.name)
    return made
