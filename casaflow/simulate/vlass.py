"""A VLASS-like per-image MS (PIMS) and everything the SE-continuum run leaves behind, made by CASA.

What is built (names as VLASS uses them, see reference-pipeline.md §1 and §3):

* ``<FSID>_split.ms``: the PIMS. VLA D configuration (all 27 antennas) at S band, spectral windows
  with VLASS-style ids (2, 3, ...; ids 0 and 1 exist but hold no data, as in VLASS), full
  polarisation RR RL LR LL, a grid of mosaic pointings with TARGET intent and VLASS-style field
  names, polarised point sources with spectral indices, per-antenna phase errors (one screen for
  both hands) and thermal noise on all correlations.
* A replica of the SE-CONT run on ``<FSID>_split_split.ms`` (split of the PIMS, Nyquist weights):
  a Stokes-I mtmfs (nterms=2) imaging whose model is the "iter1" selfcal model, a flagging step
  (the checkflag stand-in, which also flags one spw group completely), ``statwt`` on the residual
  (its automatic flag backup is the ``statwt_1`` version), a phase-only ``gaincal`` selfcal table,
  and the tier-1 / tier-2 masks on the imaging grid.
* ``reimaging_resources.tgz`` holding exactly the members ``hifv_restorepims`` looks for,
  ``SEIP_parameter.list`` and ``CCIP_parameter.list``, and ``truth.json`` (what was simulated).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..vlass.naming import se_resource_names
from ..vlass.transform import split_for_imaging, split_name
from .common import (PointSource, antenna_file, corrupt, fmt_j2000, fresh_dir, make_componentlist,
                     make_tarball, offset_direction, read_antennas, simulator_angle_factor, write_json)

log = logging.getLogger("casaflow.simulate.vlass")


@dataclass(frozen=True)
class VlassPreset:
    n_spw: int                 # science spws, ids 2 .. n_spw+1
    nchan: int                 # channels per spw (statwt needs >= ~8)
    groups: tuple[str, ...]    # spw groups for CCIP_parameter.list
    flagged_group: str | None  # this group is flagged completely by the SE-CONT flagging
    grid: int                  # pointings on a grid x grid
    spacing_arcsec: float      # between pointings
    dumps: int                 # integrations per pointing
    integration_s: float
    imsize: int
    cell_arcsec: float
    niter: int                 # per clean call (production VLASS: 20000)
    noise_jy: float            # per visibility and correlation, real and imaginary part
    phase_rms_deg: float       # per antenna and scan
    # The production paths (preset "paths"): a group flagged in all but a few pointings (the
    # pre-imaging rule's nfield >= 12 with > 90 % flagged), and a group whose long baselines are
    # flagged (its beam is far wider than the nu^-1 scaling: the post-imaging rule rejects it).
    mostly_flagged_group: str | None = None
    mostly_flagged_keep: int = 3          # pointings of that group left unflagged
    long_baselines_flagged_group: str | None = None
    long_baseline_m: float = 300.0        # baselines longer than this are flagged in that group
    band_hz: tuple[float, float] = (2.0e9, 4.0e9)   # the spws are spread over this range


PRESETS = {
    # For tests: builds in well under 2 minutes on 2 cores.
    "tiny": VlassPreset(n_spw=5, nchan=8, groups=("2", "3,4", "5", "6"), flagged_group="5",
                        grid=2, spacing_arcsec=240.0, dumps=4, integration_s=5.0, imsize=128,
                        cell_arcsec=4.5, niter=300, noise_jy=0.05, phase_rms_deg=10.0),
    # For the demo: more groups (the fan-out is visible), still minutes.
    "small": VlassPreset(n_spw=8, nchan=8, groups=("2", "3", "4,5", "6", "7", "8,9"), flagged_group="6",
                         grid=3, spacing_arcsec=200.0, dumps=4, integration_s=5.0, imsize=160,
                         cell_arcsec=4.5, niter=500, noise_jy=0.05, phase_rms_deg=10.0),
    # For benchmarks: 16 spws of 64 channels, several GB.
    "large": VlassPreset(n_spw=16, nchan=64, groups=tuple(str(i) for i in range(2, 18)), flagged_group="9",
                         grid=4, spacing_arcsec=200.0, dumps=12, integration_s=5.0, imsize=256,
                         cell_arcsec=4.5, niter=1000, noise_jy=0.05, phase_rms_deg=10.0),
    # For the production code paths: 16 pointings, images of 320 x 12" = 1.07 deg (> 1 deg + 2', so
    # the cut-out box is cut), group 4 flagged in 13 of 16 pointings (skipped before imaging), group
    # 2 without its baselines > 300 m (rejected after imaging). Kept small: one spw a group, the
    # spws in the bottom of the band (2.0-2.6 GHz: a D-array beam of ~30", 2.5 cells), few channels.
    "paths": VlassPreset(n_spw=4, nchan=8, groups=("2", "3", "4", "5"), flagged_group=None,
                         grid=4, spacing_arcsec=240.0, dumps=2, integration_s=5.0, imsize=320,
                         cell_arcsec=12.0, niter=50, noise_jy=0.05, phase_rms_deg=10.0,
                         mostly_flagged_group="4", mostly_flagged_keep=3,
                         long_baselines_flagged_group="2", long_baseline_m=300.0, band_hz=(2.0e9, 2.6e9)),
}

# VLASS's S band: 2-4 GHz in 128 MHz spectral windows.
BAND_LOW_HZ = 2.0e9
BAND_HIGH_HZ = 4.0e9
SPW_WIDTH_HZ = 128e6

PHASECENTER_RA_DEG = 350.8641667    # 23:23:27.400
PHASECENTER_DEC_DEG = 50.4088889    # +50.24.32.00
FSID = "VLASS2.2.sb40000001.eb40000002.59790.4321"
SE_IMAGENAME = "VLASS2.2.se.T23t09.J232327+502432.v1"
TILE = "T23t09"
REF_FREQ_HZ = 3.0e9
OBS_DATE = "2022/08/01/00:00:00"
SE_MODEL_STAGE = 5      # SE-CONT stage of the "iter1" model
SE_SELFCAL_STAGE = 8    # SE-CONT hifv_selfcal stage
SE_TIER1_STAGE = 4
SE_TIER2_STAGE = 12


def default_sources() -> list[PointSource]:
    """The brightest source sits on the phase centre (on a pixel), polarised 10 % at 30 deg."""
    ra0, dec0 = PHASECENTER_RA_DEG, PHASECENTER_DEC_DEG

    def pol(i, p, evpa_deg, v_frac):
        chi = math.radians(2 * evpa_deg)
        return i * p * math.cos(chi), i * p * math.sin(chi), i * v_frac

    q1, u1, v1 = pol(0.050, 0.10, 30.0, 0.01)
    ra2, dec2 = offset_direction(ra0, dec0, -112.5, 90.0)
    q2, u2, v2 = pol(0.008, 0.05, -20.0, 0.0)
    ra3, dec3 = offset_direction(ra0, dec0, 148.5, -58.5)
    return [
        PointSource("SRC1", ra0, dec0, 0.050, q1, u1, v1, -0.7, REF_FREQ_HZ),
        PointSource("SRC2", ra2, dec2, 0.008, q2, u2, v2, -1.0, REF_FREQ_HZ),
        PointSource("SRC3", ra3, dec3, 0.005, 0.0, 0.0, 0.0, 0.0, REF_FREQ_HZ),
    ]


def spw_start_freqs(n_spw: int, band_hz: tuple[float, float] = (BAND_LOW_HZ, BAND_HIGH_HZ)) -> list[float]:
    """Spread the science spws over the band (ids 2.. in frequency order)."""
    if n_spw == 1:
        return [REF_FREQ_HZ - SPW_WIDTH_HZ / 2]
    return list(np.linspace(band_hz[0], band_hz[1] - SPW_WIDTH_HZ, n_spw))


def pointings(preset: VlassPreset) -> list[tuple[str, float, float]]:
    offs = (np.arange(preset.grid) - (preset.grid - 1) / 2.0) * preset.spacing_arcsec
    out = []
    for j, dy in enumerate(offs):
        for i, dx in enumerate(offs):
            ra, dec = offset_direction(PHASECENTER_RA_DEG, PHASECENTER_DEC_DEG, dx, dy)
            out.append((f"{TILE}_{j * preset.grid + i:02d}", ra, dec))
    return out


# ------------------------------------------------------------------------------------------
def _observe(casa, ms: Path, preset: VlassPreset, spw_freqs: list[float]) -> None:
    ct = casa.tools
    ants = read_antennas(antenna_file("vla.d.cfg"))
    me = ct.measures()
    sm = ct.simulator()
    sm.open(str(ms))
    # "EVLA", as real VLASS data say: with "VLA" CASA picks the old VLA_L beam model, whose
    # mosaic convolution function costs ~14 s per spw instead of ~1 s.
    sm.setconfig(telescopename="EVLA", x=ants["x"], y=ants["y"], z=ants["z"], dishdiameter=ants["diam"],
                 mount=["alt-az"], antname=ants["names"], padname=ants["names"], coordsystem="global",
                 referencelocation=me.observatory("VLA"))
    chan_width = SPW_WIDTH_HZ / preset.nchan
    # spws 0 and 1 exist without data, so science ids start at 2 as in VLASS.
    placeholder = [BAND_LOW_HZ - 2 * SPW_WIDTH_HZ, BAND_LOW_HZ - SPW_WIDTH_HZ]
    for sid, f0 in enumerate(placeholder + spw_freqs):
        sm.setspwindow(spwname=f"EVLA_S#A0C0#{sid}", freq=f"{f0 + chan_width / 2}Hz",
                       deltafreq=f"{chan_width}Hz", freqresolution=f"{chan_width}Hz",
                       nchannels=preset.nchan, stokes="RR RL LR LL")
    sm.setfeed(mode="perfect R L")
    for name, ra, dec in pointings(preset):
        sm.setfield(sourcename=name, sourcedirection=me.direction("J2000", f"{ra}deg", f"{dec}deg"))
    sm.setlimits(shadowlimit=0.001, elevationlimit="8.0deg")
    sm.setauto(autocorrwt=0.0)
    sm.settimes(integrationtime=f"{preset.integration_s}s", usehourangle=True,
                referencetime=me.epoch("utc", OBS_DATE))
    scan_len = preset.dumps * preset.integration_s
    t = -0.5 * len(pointings(preset)) * scan_len
    for name, _, _ in pointings(preset):
        # VLA observes every spw at once: same times for each spw.
        for sid in range(2, 2 + len(spw_freqs)):
            sm.observe(sourcename=name, spwname=f"EVLA_S#A0C0#{sid}", starttime=f"{t}s",
                       stoptime=f"{t + scan_len}s", state_obs_mode="OBSERVE_TARGET#UNSPECIFIED")
        t += scan_len
    sm.close()


def _predict(casa, ms: Path, scratch: Path, sources: list[PointSource], spw_freqs: list[float],
             nchan: int) -> float:
    """Predict the sky one spw at a time with a per-spw flat-spectrum component list, with the
    VLA primary beam applied (a mosaic needs it)."""
    ct = casa.tools
    factor = simulator_angle_factor(ct, scratch)
    for k, f0 in enumerate(spw_freqs):
        sid = k + 2
        cl_path = make_componentlist(ct, sources, f0 + SPW_WIDTH_HZ / 2, scratch / f"sky.spw{sid}.cl",
                                     angle_factor=factor)
        sm = ct.simulator()
        sm.openfromms(str(ms))
        sm.setvp(dovp=True, usedefaultvp=True)
        sm.setdata(spwid=[sid], fieldid=[])
        sm.predict(complist=str(cl_path), incremental=False)
        sm.close()
    return factor


def _write_masks(casa, template: Path, names: dict, sources: list[PointSource], radius_arcsec: float) -> None:
    """Tier-1 (bright sources) and tier-2 (all sources) masks: Stokes-I planes on the SE grid."""
    ia = casa.tool("image")
    ia.open(str(template))
    cs = ia.coordsys()
    shape = list(ia.shape())
    ia.close()
    incr = abs(cs.increment(format="n", type="direction")["numeric"][0])  # rad/pixel
    radius_pix = math.radians(radius_arcsec / 3600.0) / incr
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    tiers = {"tier1_mask": [s for s in sources if s.i_jy >= 0.008], "tier2_mask": sources}
    for key, srcs in tiers.items():
        pix = np.zeros(shape, dtype=np.float32)
        for s in srcs:
            world = cs.toworld([0, 0, 0, 0], format="n")["numeric"]
            world[0], world[1] = math.radians(s.ra_deg), math.radians(s.dec_deg)
            px = cs.topixel(world)["numeric"]
            inside = (xx - px[0]) ** 2 + (yy - px[1]) ** 2 <= radius_pix ** 2
            pix[inside.T, ...] = 1.0
        out = names[key]
        if Path(out).exists():
            shutil.rmtree(out)
        im = casa.tool("image")
        im.fromarray(outfile=str(out), pixels=pix, csys=cs.torecord(), overwrite=True)
        im.close()
    cs.done()


def build(outdir: Path, casa, preset_name: str = "tiny", seed: int = 1,
          groups: list[str] | None = None, flagged_group: str | None = "default",
          changes: dict | None = None) -> dict:
    """Build the PIMS and the SE-CONT resources into ``outdir``. Returns the truth record.
    ``changes`` replaces preset fields (e.g. ``{"dumps": 8}``: the benchmarks' visibility count)."""
    t_start = time.time()
    preset = replace(PRESETS[preset_name], **(changes or {}))
    if groups is not None:
        preset = replace(preset, groups=tuple(groups))
    if flagged_group != "default":
        preset = replace(preset, flagged_group=flagged_group)
    if preset.flagged_group is not None and preset.flagged_group not in preset.groups:
        raise ValueError(f"flagged_group {preset.flagged_group!r} is not one of the groups {preset.groups}")
    rng = np.random.default_rng(seed)
    outdir = Path(outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    scratch = fresh_dir(outdir / ".se_cont_run")
    spw_freqs = spw_start_freqs(preset.n_spw, preset.band_hz)
    sources = default_sources()

    pims = outdir / f"{FSID}_split.ms"
    if pims.exists():
        shutil.rmtree(pims)
    log.info("observing %s", pims.name)
    _observe(casa, pims, preset, spw_freqs)
    angle_factor = _predict(casa, pims, scratch, sources, spw_freqs, preset.nchan)
    phases = corrupt(casa.tools, pims, rng, preset.noise_jy, preset.phase_rms_deg)

    # ---- the SE-CONT run, in its own working directory ------------------------------------
    se_vis = split_name(pims.name)
    names = se_resource_names(se_vis, SE_IMAGENAME, model_stage=SE_MODEL_STAGE,
                              selfcal_stage=SE_SELFCAL_STAGE, tier1_stage=SE_TIER1_STAGE,
                              tier2_stage=SE_TIER2_STAGE)
    import os

    cwd = os.getcwd()
    os.chdir(scratch)
    try:
        # The same split the cube workflow makes: the statwt_1 flags are restored row by row.
        split_for_imaging(casa, str(pims), se_vis)
        phasecenter = fmt_j2000(PHASECENTER_RA_DEG, PHASECENTER_DEC_DEG)
        mask_regions = [f"circle[[{s.ra_deg}deg, {s.dec_deg}deg], 60arcsec]" for s in sources]
        model_root = names["model_root"]
        casa.task("tclean", vis=se_vis, imagename=model_root, datacolumn="data", specmode="mfs",
                  deconvolver="mtmfs", nterms=2, reffreq="3.0GHz", gridder="mosaic", stokes="I",
                  imsize=[preset.imsize, preset.imsize], cell=f"{preset.cell_arcsec}arcsec",
                  phasecenter=phasecenter, weighting="briggs", robust=-2.0, niter=preset.niter,
                  nsigma=3.0, usemask="user", mask=mask_regions, pblimit=0.1,
                  savemodel="modelcolumn", parallel=False)
        # checkflag stand-in: a few random antenna/scan flags, and one spw group flagged entirely.
        fl = casa.tool("table")
        fl.open(se_vis)
        nscan = len(np.unique(fl.getcol("SCAN_NUMBER")))
        fl.close()
        bad = [(int(rng.integers(0, 27)), int(rng.integers(1, nscan + 1))) for _ in range(2)]
        for ant, scan in bad:
            casa.task("flagdata", vis=se_vis, mode="manual", antenna=str(ant), scan=str(scan),
                      flagbackup=False)
        if preset.flagged_group:
            casa.task("flagdata", vis=se_vis, mode="manual", spw=preset.flagged_group, flagbackup=False)
        mostly_flagged_fields = []
        if preset.mostly_flagged_group:
            names_all = [n for n, _, _ in pointings(preset)]
            mostly_flagged_fields = names_all[preset.mostly_flagged_keep:]
            casa.task("flagdata", vis=se_vis, mode="manual", spw=preset.mostly_flagged_group,
                      field=",".join(mostly_flagged_fields), flagbackup=False)
        if preset.long_baselines_flagged_group:
            casa.task("flagdata", vis=se_vis, mode="manual", spw=preset.long_baselines_flagged_group,
                      uvrange=f">{preset.long_baseline_m}m", flagbackup=False)
        casa.task("statwt", vis=se_vis, combine="field,scan,state,corr", timebin="1yr", chanbin=1,
                  datacolumn="residual_data", flagbackup=True)
        casa.task("gaincal", vis=se_vis, caltable=names["selfcal_table"], calmode="p", gaintype="T",
                  solint="inf", combine="", refant="W08", minsnr=3.0, minblperant=4)
        _write_masks(casa, Path(f"{model_root}.pb.tt0"), names, sources, radius_arcsec=60.0)
        members = [f"{se_vis}.flagversions", names["selfcal_table"], f"{model_root}.model.tt0",
                   f"{model_root}.model.tt1", names["tier1_mask"], names["tier2_mask"]]
        make_tarball(outdir / "reimaging_resources.tgz", scratch, members)
    finally:
        os.chdir(cwd)

    # ---- parameter lists -------------------------------------------------------------------
    common = [f"imagename='{SE_IMAGENAME}'", f"phasecenter='{phasecenter}'",
              f"imsize=[{preset.imsize},{preset.imsize}]", f"cell='{preset.cell_arcsec}arcsec'"]
    (outdir / "SEIP_parameter.list").write_text(
        "# SE-CONT imaging parameters (simulated run)\n" + "\n".join(
            common + ["imaging_mode='VLASS-SE-CONT-MOSAIC'"]) + "\n")
    (outdir / "CCIP_parameter.list").write_text(
        "# VLASS-SE-CUBE parameters (simulated run)\n" + "\n".join(
            common + ["imaging_mode='VLASS-SE-CUBE'", f"spw={list(preset.groups)!r}",
                      f"niter={preset.niter}"]) + "\n")

    spws = [{"id": k + 2, "start_hz": f0, "nchan": preset.nchan, "chan_width_hz": SPW_WIDTH_HZ / preset.nchan,
             "mean_hz": f0 + SPW_WIDTH_HZ / 2}
            for k, f0 in enumerate(spw_freqs)]
    truth = {
        "kind": "vlass-pims", "preset": preset_name, "seed": seed, "preset_values": asdict(preset),
        "fsid": FSID, "pims": pims.name, "se_vis": se_vis, "se_imagename": SE_IMAGENAME, "tile": TILE,
        "phasecenter": phasecenter, "phasecenter_deg": [PHASECENTER_RA_DEG, PHASECENTER_DEC_DEG],
        "ref_freq_hz": REF_FREQ_HZ, "spws": spws, "groups": list(preset.groups),
        "flagged_groups": [preset.flagged_group] if preset.flagged_group else [],
        "mostly_flagged_group": preset.mostly_flagged_group, "mostly_flagged_fields": mostly_flagged_fields,
        "beam_rejected_group": preset.long_baselines_flagged_group,
        "fields": [n for n, _, _ in pointings(preset)],
        "sources": [asdict(s) for s in sources], "antenna_phases_deg": phases,
        "resources": {k: v for k, v in names.items() if k != "model_root"},
        "flagged_antenna_scans": bad, "simulator_angle_factor_corrected": angle_factor, "build_seconds": round(time.time() - t_start, 1),
    }
    shutil.rmtree(scratch)
    write_json(outdir / "truth.json", truth)
    return truth
