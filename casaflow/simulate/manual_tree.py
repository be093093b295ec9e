"""A manual-reduction (QA2) directory tree, as the QA2 packaging guide describes it (seed 002).

Shapes (``shape``):

* ``multi``: one SB directory holding one ``X<eb>`` directory per execution, a ``Combined``
  directory (``calibrated.ms``, a FITS image, ``scriptForImaging.py``,
  ``scriptForFluxCalibration.py``), notes for the PI (``<SB>.imaging.txt``) and CASA logs;
* ``single``: one SB directory with a single execution directory that also holds the imaging
  script and the FITS image.

Each execution directory holds, as a reducer leaves it: ``uid___..ms`` (the imported data),
``.ms.split`` (the science spws, a-priori calibrated, with the calibration applied to
CORRECTED_DATA), ``.ms.split.cal`` (the calibrated data alone), the caltables
``.ms.split.<name>`` with their ``.plots`` directories, ``uid___...ms.scriptForCalibration.py``,
``checklist.txt``, a ``qa2/`` directory (png and txt) and the reducer's logs. Everything is
made by CASA (simulator, gaincal/bandpass/setjy/applycal/split/tclean/exportfits).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..alma.naming import uid_to_fs
from . import alma
from .common import corrupt, fresh_dir, write_json

SB_NAMES = {"multi": "IRC10216_setup3_b6_run_x2", "single": "IRC10216_setup4_b6_run_x1"}


def _plot(path: Path, values, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(np.ravel(values), ".")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=50)
    plt.close(fig)


def _execution(casa, xdir: Path, eb_index: int, preset, rng, scratch: Path) -> dict:
    """One execution directory, reduced by hand."""
    xdir.mkdir(parents=True)
    uid = uid_to_fs(alma.EBS[eb_index])
    ms = xdir / f"{uid}.ms"
    alma._observe(casa, ms, preset, eb_index)
    alma._predict(casa, ms, scratch, preset)
    alma._antenna_gains(casa, ms, rng, preset.nchan)
    corrupt(casa.tools, ms, rng, preset.noise_jy, phase_rms_deg=0.0)
    split = f"{ms}.split"
    casa.task("split", vis=str(ms), outputvis=split, datacolumn="data", spw=alma.spw_list(preset))
    tables = {name: f"{split}.{name}" for name in ("ap_pre_bandpass", "bandpass", "phase_int", "ampli_inf",
                                                  "flux_inf")}
    bp, ph, tg = alma.BP_CAL.name, alma.PH_CAL.name, alma.TARGET.name
    casa.task("setjy", vis=split, field=bp, standard="manual", fluxdensity=[alma.BP_CAL.i_jy, 0, 0, 0],
              spix=[alma.BP_CAL.alpha], reffreq="100GHz", usescratch=True)
    casa.task("gaincal", vis=split, caltable=tables["ap_pre_bandpass"], field=bp, solint="int", calmode="p",
              refant="DA41", minblperant=4)
    casa.task("bandpass", vis=split, caltable=tables["bandpass"], field=bp, solint="inf", combine="scan",
              refant="DA41", solnorm=True, gaintable=[tables["ap_pre_bandpass"]], minblperant=4)
    casa.task("gaincal", vis=split, caltable=tables["phase_int"], field=f"{bp},{ph}", solint="int", calmode="p",
              refant="DA41", gaintable=[tables["bandpass"]], minblperant=4)
    casa.task("gaincal", vis=split, caltable=tables["ampli_inf"], field=f"{bp},{ph}", solint="inf", calmode="a",
              refant="DA41", gaintype="G", gaintable=[tables["bandpass"], tables["phase_int"]], minblperant=4)
    casa.task("fluxscale", vis=split, caltable=tables["ampli_inf"], fluxtable=tables["flux_inf"], reference=bp,
              transfer=[ph])
    for field, gf in ((bp, bp), (ph, ph), (tg, ph)):
        casa.task("applycal", vis=split, field=field, gaintable=[tables["bandpass"], tables["phase_int"],
                                                                 tables["flux_inf"]],
                  gainfield=["", gf, gf], interp=["linear", "linear", "linear"], calwt=False, flagbackup=False)
    casa.task("split", vis=split, outputvis=f"{split}.cal", datacolumn="corrected")
    tb = casa.tool("table")
    for name, path in tables.items():
        plots = Path(f"{path}.plots")
        plots.mkdir()
        tb.open(path)
        col = "CPARAM" if "CPARAM" in tb.colnames() else "FPARAM"
        values = np.abs(tb.getcol(col)) if col == "CPARAM" else tb.getcol(col)
        tb.close()
        _plot(plots / f"{name}.png", values, f"{uid} {name}")
    (xdir / f"{uid}.ms.scriptForCalibration.py").write_text(
        f"# Calibration script for {uid} (casaflow simulated manual reduction)\n"
        + "".join(f"{c}\n" for c in casa.calls[-12:]))
    (xdir / "checklist.txt").write_text(f"QA2 checklist for {uid}\n[x] bandpass\n[x] flux\n[x] phase\n")
    qa2 = xdir / "qa2"
    qa2.mkdir()
    for k in (1, 2, 3):
        _plot(qa2 / f"qa2_part{k}.png", rng.normal(size=20), f"{uid} qa2 part {k}")
    (qa2 / "textfile.txt").write_text(f"QA2 report for {uid}: rms as expected\n")
    (xdir / "casapy-20261120-101500.log").write_text(f"casa log of the calibration of {uid}\n")
    (xdir / "ipython-20261120-101501.log").write_text("#  ipython log\n")
    return {"uid": uid, "dir": xdir.name, "caltables": sorted(Path(t).name for t in tables.values())}


def _image(casa, preset, vis: list[str], imagename: str, fitsfile: Path) -> None:
    casa.task("tclean", vis=vis, imagename=imagename, field=alma.TARGET.name, datacolumn="data", specmode="mfs",
              imsize=[preset.imsize, preset.imsize], cell=f"{preset.cell_arcsec}arcsec", niter=preset.niter,
              nsigma=2.0, weighting="briggs", robust=0.5, pbcor=True, parallel=False)
    casa.task("exportfits", imagename=f"{imagename}.image.pbcor", fitsimage=str(fitsfile), overwrite=True)


def build(outdir: Path, casa, shape: str = "multi", preset_name: str = "tiny", seed: int = 1) -> dict:
    """Build ``<outdir>/project123/<SB>`` in the given shape; returns its truth record."""
    if shape not in SB_NAMES:
        raise ValueError(f"shape {shape!r}: expected one of {sorted(SB_NAMES)}")
    t0 = time.time()
    preset = alma.PRESETS[preset_name]
    rng = np.random.default_rng(seed)
    outdir = Path(outdir).resolve()
    sb = fresh_dir(outdir / "project123" / SB_NAMES[shape])
    scratch = fresh_dir(outdir / f".manual_sim_{shape}")
    n_exec = 2 if shape == "multi" else 1
    execs = []
    first = 0 if shape == "multi" else 1        # the single-execution SB is another EB
    for k in range(first, first + n_exec):
        uid = uid_to_fs(alma.EBS[k])
        execs.append(_execution(casa, sb / uid.rsplit("_", 1)[1], k, preset, rng, scratch))
    cal = [str(sb / e["dir"] / f"{e['uid']}.ms.split.cal") for e in execs]
    if shape == "multi":
        comb = sb / "Combined"
        comb.mkdir()
        casa.task("concat", vis=cal, concatvis=str(comb / "calibrated.ms"))
        _image(casa, preset, [str(comb / "calibrated.ms")], str(scratch / "calibrated_all_setup3_b6.clean"),
               comb / "calibrated_all_setup3_b6.clean.fits")
        (comb / "scriptForImaging.py").write_text("# imaging script\ntclean(vis='calibrated.ms', ...)\n")
        (comb / "scriptForFluxCalibration.py").write_text("# flux calibration script\nfluxscale(...)\n")
        (sb / f"{sb.name}.imaging.txt").write_text("Notes for the PI: the continuum image is in product/.\n")
        (sb / "casapy-2026-11-20T115433.log").write_text("casa log of the imaging\n")
        (sb / "ipython.log").write_text("# ipython log\n")
        fits = ["calibrated_all_setup3_b6.clean.fits"]
    else:
        xdir = sb / execs[0]["dir"]
        _image(casa, preset, cal, str(scratch / "IRC10216_setup4.clean"), xdir / "IRC10216_setup4.clean.fits")
        (xdir / "scriptForImaging.py").write_text("# imaging script\ntclean(vis=..., ...)\n")
        fits = ["IRC10216_setup4.clean.fits"]
    shutil.rmtree(scratch)
    truth = {"kind": "alma-manual-tree", "shape": shape, "preset": preset_name, "seed": seed,
             "origpath": str(sb.relative_to(outdir)), "sb": sb.name, "executions": execs, "fits": fits,
             "sources": [asdict(s) for s in (alma.BP_CAL, alma.PH_CAL, alma.TARGET)],
             "spws": [{"id": k, "start_hz": alma.BAND3_SPW_HZ[k], "nchan": preset.nchan, "width_hz": alma.SPW_WIDTH_HZ}
                      for k in range(preset.n_spw)],
             "build_seconds": round(time.time() - t0, 1)}
    write_json(outdir / f"truth.manual-{shape}.json", truth)
    return truth
