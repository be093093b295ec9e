"""An ALMA pipeline working directory for one MOUS, as a finished calibration + imaging run
leaves it, made for real by CASA (reference-pipeline.md §7, §8).

What is built under ``<outdir>/<RelativePath>/working`` (the tree ``executeppr`` uses):

* Two execution blocks ``uid___A002_..._X....ms`` (the execution block uid in the OBSERVATION
  table's SCHEDULE column, where msmetadata reads it). ALMA 12-m antennas at band 3, two spws
  with linear feeds XX XY YX YY, scans with BANDPASS+FLUX, PHASE and TARGET intents. Sky:
  unpolarised calibrators, a polarised target; corrupted with per-antenna bandpass ripples,
  amplitude and phase gains, and thermal noise.
* Calibration made by CASA as the pipeline does it: deterministic flags (flag version
  ``after_deterministic_flagging``), setjy on the flux calibrator, a phase-up and ``bandpass``,
  ``gaincal`` phase and amplitude, ``fluxscale`` (the derived fluxes go to ``flux.csv``), then
  ``applycal`` per field and intent, and the ``Pipeline_Final`` flag version.
* A ``<vis>_targets.ms`` per EB (the imaging MS, split of the calibrated target data).
* Images made by tclean in several ``hif_makeimages`` stages, under the current (PIPE-1710)
  names ``<prefix>.s<N>_0.<field>_<intent code>.spw<ids>.<specmode>.<regcal|selfcal>.<stokes>.iter1``:
  calibrator images of every intent code (bp, ph, flux, pol with POLI/POLA, pang, plk), check
  source images per EB (chk), the target per spw, continuum I and IQUV, a cube, and a
  self-calibrated multi-term (mtmfs, .tt0/.tt1/.alpha) continuum image.
* The run's own record as the pipeline leaves it: ``pipeline-<timestamp>.context`` and
  ``pipeline-<timestamp>/saved_state/result-stage<N>.pickle`` (see ``alma_context``), holding
  the MSs and their sessions, the stages' QA scores, flux measurements, sensitivities and image
  lists, under the reference's class paths and attribute names.
* The PPR (``PPR_<mous>.xml``), ``casa_commands.log`` (every CASA call, in order),
  ``casa_pipescript.py``, a small weblog ``pipeline-<timestamp>/html`` (its home page names the
  CASA and pipeline versions), ``cont.dat``, flag templates.
* ``old_naming/working`` beside it: the same run as archives hold runs from before PIPE-1710
  (no datatype part, no context, casaflow's fallback ``pipeline_qa.json``).
* ``truth.json`` beside ``working`` says what was simulated.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..alma.naming import fs_to_uid, uid_to_fs
from .common import PointSource, antenna_file, corrupt, fresh_dir, read_antennas, write_json

log = logging.getLogger("casaflow.simulate.alma")

PROJECT = "2025.1.00123.S"
SOUS, GOUS, MOUS = "uid://A001/X3d5e/X10", "uid://A001/X3d5e/X11", "uid://A001/X3d5e/X12"
OUS_ENTITY, OUS_PART = "uid://A001/X3d5e/X0f", "X1234567"
EBS = ("uid://A002/Xf00d12/X1a2b", "uid://A002/Xf00d12/X2c3d")
SESSIONS = ("session_1", "session_2")
RECIPE = "hifa_calimage"
PIPELINE_VERSION = "2025.1.0.36"      # as the simulated run's weblog names it
CASA_VERSION = "6.6.6-17"
TIMESTAMP = "20261120T100000"
OBS_DATES = ("2026/11/20/06:00:00", "2026/11/21/06:30:00")

BP_CAL = PointSource("J1924-2914", 291.9481, -29.2417, 2.5, 0.0, 0.0, 0.0, -0.6, 100e9)
PH_CAL = PointSource("J1923-2904", 290.8000, -29.0700, 0.8, 0.0, 0.0, 0.0, -0.4, 100e9)
TARGET = PointSource("IRAS19250", 291.3000, -29.0500, 0.05, 0.0025, -0.0015, 0.0, 0.5, 100e9)


@dataclass(frozen=True)
class AlmaPreset:
    n_ant: int
    n_spw: int
    nchan: int
    integration_s: float
    cal_scan_s: float
    target_scan_s: float
    imsize: int
    cell_arcsec: float
    niter: int
    noise_jy: float


PRESETS = {
    # For tests: two EBs calibrated and imaged in about two minutes on two cores.
    "tiny": AlmaPreset(n_ant=16, n_spw=2, nchan=8, integration_s=6.0, cal_scan_s=36.0, target_scan_s=60.0,
                       imsize=80, cell_arcsec=0.6, niter=100, noise_jy=0.02),
    "small": AlmaPreset(n_ant=25, n_spw=4, nchan=16, integration_s=6.0, cal_scan_s=60.0, target_scan_s=120.0,
                        imsize=128, cell_arcsec=0.5, niter=300, noise_jy=0.02),
}

BAND3_SPW_HZ = (100.0e9, 102.0e9, 112.0e9, 114.0e9)
SPW_WIDTH_HZ = 250e6

INTENT_STRINGS = {"bp": "CALIBRATE_BANDPASS#ON_SOURCE,CALIBRATE_FLUX#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE",
                  "ph": "CALIBRATE_PHASE#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE",
                  "sci": "OBSERVE_TARGET#ON_SOURCE"}


def relative_path() -> str:
    """The PPR's RelativePath: ``<project>_<time>/SOUS_<uid>/GOUS_<uid>/MOUS_<uid>``."""
    return (f"{PROJECT}_2026_11_20T10_00_00.000/SOUS_{uid_to_fs(SOUS)}/GOUS_{uid_to_fs(GOUS)}"
            f"/MOUS_{uid_to_fs(MOUS)}")


def ms_name(eb: str) -> str:
    return f"{uid_to_fs(eb)}.ms"


def spw_list(preset: AlmaPreset) -> str:
    return ",".join(str(i) for i in range(preset.n_spw))


# ------------------------------------------------------------------------------------------
class _Recorder:
    """The run's QA record, kept as the pipeline keeps its results: stage by stage."""

    def __init__(self):
        self.stages: list[dict] = []
        self.flux: list[dict] = []
        self.gflux: list[dict] = []
        self.sensitivities: list[dict] = []

    def stage(self, name: str, scores: list[dict], start: float, topic: str, per_ms: bool = False,
              item: dict | None = None, **extra) -> dict:
        """Record a stage. ``per_ms``: the stage is run once per EB here but is one pipeline task
        over all MSs, so later EBs add their scores to the same stage, as sub-scores. ``item``:
        what the stage's per-MS result holds (its inputs, flux measurements)."""
        same = next((s for s in self.stages if s["name"] == name), None) if per_ms else None
        if same is not None:
            same["scores"] += scores
            same["end"] = time.time()
            if item is not None:
                same["items"].append(item)
            return same
        self.stages.append({"number": self.next_number(), "name": name, "topic": topic,
                            "start": start, "end": time.time(), "scores": scores,
                            "items": [item] if item is not None else [], **extra})
        return self.stages[-1]

    def next_number(self) -> int:
        return len(self.stages) + 1

    @staticmethod
    def score(value: float, reason: str, metric: tuple = ("Unknown metric", "N/A", ""), asdm=(), session=(),
              spw=(), intent=(), field="", antenna="") -> dict:
        return {"score": float(value), "reason": reason, "hidden": False,
                "metric": {"name": metric[0], "value": metric[1], "units": metric[2]},
                "selection": {"asdm": list(asdm), "session": list(session), "spw": list(spw),
                              "intent": list(intent), "field": field, "antenna": antenna}}

    def to_dict(self) -> dict:
        return {"stages": self.stages, "flux_measurements": self.flux, "gfluxscale": self.gflux,
                "sensitivities": self.sensitivities}


def _observe(casa, ms: Path, preset: AlmaPreset, eb_index: int) -> None:
    ct = casa.tools
    ants = read_antennas(antenna_file("alma.cycle10.1.cfg"))
    n = preset.n_ant
    me = ct.measures()
    sm = ct.simulator()
    sm.open(str(ms))
    sm.setconfig(telescopename="ALMA", x=ants["x"][:n], y=ants["y"][:n], z=ants["z"][:n],
                 dishdiameter=ants["diam"][:n], mount=["alt-az"], antname=[f"DA{41 + i}" for i in range(n)],
                 padname=ants["names"][:n], coordsystem="local", referencelocation=me.observatory("ALMA"))
    chan = SPW_WIDTH_HZ / preset.nchan
    for sid in range(preset.n_spw):
        sm.setspwindow(spwname=f"X{1873 + sid}#ALMA_RB_03#BB_{sid + 1}#SW-01#FULL_RES",
                       freq=f"{BAND3_SPW_HZ[sid] + chan / 2}Hz", deltafreq=f"{chan}Hz",
                       freqresolution=f"{chan}Hz", nchannels=preset.nchan, stokes="XX XY YX YY")
    sm.setfeed(mode="perfect X Y")
    for src in (BP_CAL, PH_CAL, TARGET):
        sm.setfield(sourcename=src.name, sourcedirection=me.direction("J2000", f"{src.ra_deg}deg",
                                                                        f"{src.dec_deg}deg"))
    sm.setlimits(shadowlimit=0.001, elevationlimit="5deg")
    sm.setauto(autocorrwt=0.0)
    sm.settimes(integrationtime=f"{preset.integration_s}s", usehourangle=True,
                referencetime=me.epoch("utc", OBS_DATES[eb_index]))
    sequence = [("bp", BP_CAL, preset.cal_scan_s), ("ph", PH_CAL, preset.cal_scan_s),
                ("sci", TARGET, preset.target_scan_s), ("ph", PH_CAL, preset.cal_scan_s),
                ("sci", TARGET, preset.target_scan_s), ("ph", PH_CAL, preset.cal_scan_s)]
    t = -0.5 * sum(s for _, _, s in sequence)
    for kind, src, length in sequence:
        for sid in range(preset.n_spw):
            sm.observe(sourcename=src.name, spwname=f"X{1873 + sid}#ALMA_RB_03#BB_{sid + 1}#SW-01#FULL_RES",
                       starttime=f"{t}s", stoptime=f"{t + length}s", state_obs_mode=INTENT_STRINGS[kind])
        t += length
    sm.close()
    # The execution block is where msmetadata.schedule() reads it in an ALMA MS; the session is
    # not in the MS (the pipeline records it in its context, from hifa_importdata's 'session').
    tb = ct.table()
    tb.open(str(ms / "OBSERVATION"), nomodify=False)
    tb.putcell("SCHEDULE", 0, np.array([f"SchedulingBlock {MOUS}", f"ExecBlock {EBS[eb_index]}"]))
    tb.putcell("PROJECT", 0, PROJECT)
    tb.putcell("OBSERVER", 0, "casaflow")
    tb.close()


def _predict(casa, ms: Path, scratch: Path, preset: AlmaPreset) -> None:
    """Each field sees only its own source, at its pointing centre: predicted field by field
    without a primary beam (every source sits at the centre of its own field, and without the
    beam the others would leak in at full strength), which also keeps clear of the simulator's
    polarisation-angle bug."""
    from .common import make_componentlist

    ct = casa.tools
    for fid, src in enumerate((BP_CAL, PH_CAL, TARGET)):
        for sid in range(preset.n_spw):
            cl = make_componentlist(ct, [src], BAND3_SPW_HZ[sid] + SPW_WIDTH_HZ / 2,
                                    scratch / f"sky.f{fid}.spw{sid}.cl")
            sm = ct.simulator()
            sm.openfromms(str(ms))
            sm.setvp(dovp=False)
            sm.setdata(spwid=[sid], fieldid=[fid])
            sm.predict(complist=str(cl), incremental=False)
            sm.close()


def _antenna_gains(casa, ms: Path, rng: np.random.Generator, nchan: int) -> dict:
    """Per-antenna complex gains, the same for X and Y: amplitude (±8 %), a smooth bandpass
    ripple, and a phase that drifts slowly in time (so the phase calibrator's solutions,
    interpolated, calibrate the target as they do in a real observation)."""
    tb = casa.tool("table")
    tb.open(str(ms), nomodify=False)
    a1, a2, t = tb.getcol("ANTENNA1"), tb.getcol("ANTENNA2"), tb.getcol("TIME")
    nant = int(max(a1.max(), a2.max())) + 1
    amp = rng.normal(1.0, 0.08, nant)
    x = np.linspace(-1, 1, nchan)
    ripple = 1.0 + 0.05 * np.sin(np.pi * x[None, :] * rng.uniform(0.5, 1.5, (nant, 1)) + rng.uniform(0, 6.28, (nant, 1)))
    phase0 = np.radians(rng.normal(0.0, 40.0, nant))
    drift = np.radians(rng.normal(0.0, 10.0, nant)) / 60.0       # rad per second: ~10 deg per minute
    dt = t - t.min()
    g = amp[:, None] * ripple                                       # (nant, nchan)
    ph = (phase0[a1] + drift[a1] * dt) - (phase0[a2] + drift[a2] * dt)
    data = tb.getcol("DATA")                                        # (ncorr, nchan, nrow)
    data *= (g[a1].T * g[a2].T)[None, :, :] * np.exp(1j * ph)[None, None, :]
    tb.putcol("DATA", data)
    tb.close()
    return {"amplitude": [round(float(v), 4) for v in amp], "phase0_deg": [round(float(np.degrees(v)), 3) for v in phase0],
            "phase_drift_deg_per_min": [round(float(np.degrees(v) * 60), 3) for v in drift]}


def _flag_fraction(casa, vis: str, **sel) -> float:
    s = casa.task("flagdata", vis=vis, mode="summary", **sel)
    return s["flagged"] / s["total"] if s and s.get("total") else 0.0


def _calibrate(casa, vis: str, preset: AlmaPreset, rec: _Recorder, session: str, rng) -> dict:
    """The calibration sequence, with names as the pipeline gives its caltables."""
    spws = spw_list(preset)
    sw = spws.replace(",", "_")
    asdm = vis.removesuffix(".ms")
    tables = {
        "phaseup": f"{vis}.hifa_bandpass.s6_1.spw{sw}.solintint.gpcal.tbl",
        "bandpass": f"{vis}.hifa_bandpass.s6_3.spw{sw}.channel.solintinf.bcal.tbl",
        "phase": f"{vis}.hifa_timegaincal.s9_1.spw{sw}.solintint.gpcal.tbl",
        "amp": f"{vis}.hifa_timegaincal.s9_3.spw{sw}.solintinf.gacal.tbl",
        "flux": f"{vis}.hifa_gfluxscale.s8_3.spw{sw}.solintinf.fluxscale.tbl",
    }
    for t in tables.values():
        shutil.rmtree(t, ignore_errors=True)

    # hifa_flagdata: deterministic flags (an antenna lost for a scan), saved as the pipeline does.
    t0 = time.time()
    bad_ant = f"DA{41 + int(rng.integers(0, preset.n_ant))}"
    casa.task("flagdata", vis=vis, mode="manual", antenna=bad_ant, scan="3", flagbackup=False)
    casa.task("flagmanager", vis=vis, mode="save", versionname="after_deterministic_flagging",
              comment="Flags after deterministic flagging")
    frac = _flag_fraction(casa, vis)
    rec.stage("hifa_flagdata", [rec.score(1.0 - frac, f"{frac:.2%} of the data flagged by deterministic flagging",
                                          ("%OnlineShadowTemplateFlags", frac, "%"),
                                          asdm=[asdm], session=[session])], t0, "Flagging", per_ms=True,
              item={"inputs": {"vis": vis}})

    # hifa_gfluxscaleflag/setjy: the flux calibrator's model.
    t0 = time.time()
    casa.task("setjy", vis=vis, field=BP_CAL.name, standard="manual", fluxdensity=[BP_CAL.i_jy, 0, 0, 0],
              spix=[BP_CAL.alpha], reffreq=f"{BP_CAL.ref_freq_hz / 1e9}GHz", usescratch=True)
    for sid in range(preset.n_spw):
        rec.flux.append({"spw_name": f"X{1873 + sid}#ALMA_RB_03#BB_{sid + 1}#SW-01#FULL_RES", "spw": sid,
                         "flux_jy": BP_CAL.stokes_at(BAND3_SPW_HZ[sid] + SPW_WIDTH_HZ / 2)[0], "error_jy": 0.0,
                         "asdm": asdm, "field": f"\"{BP_CAL.name}\"",
                         "freq_ghz": (BAND3_SPW_HZ[sid] + SPW_WIDTH_HZ / 2) / 1e9})
    rec.stage("hifa_setmodels", [rec.score(1.0, "Flux calibrator model set", asdm=[asdm])], t0, "Calibration",
              per_ms=True, item={"inputs": {"vis": vis}})

    # hifa_bandpass: phase-up, then the bandpass itself.
    t0 = time.time()
    refant = "DA41"
    casa.task("gaincal", vis=vis, caltable=tables["phaseup"], field=BP_CAL.name, intent="CALIBRATE_BANDPASS#ON_SOURCE",
              solint="int", calmode="p", refant=refant, minsnr=2.0, minblperant=4)
    casa.task("bandpass", vis=vis, caltable=tables["bandpass"], field=BP_CAL.name,
              intent="CALIBRATE_BANDPASS#ON_SOURCE", solint="inf", combine="scan", refant=refant,
              minblperant=4, minsnr=3.0, solnorm=True, bandtype="B", gaintable=[tables["phaseup"]])
    tb = casa.tool("table")
    tb.open(tables["bandpass"])
    good = 1.0 - float(np.mean(tb.getcol("FLAG")))
    tb.close()
    rec.stage("hifa_bandpass", [rec.score(good, f"{good:.1%} of bandpass solutions unflagged",
                                          ("BandpassUnflagged", good, ""), asdm=[asdm],
                                          spw=spws.split(","), intent=["BANDPASS"])], t0, "Calibration", per_ms=True,
              item={"inputs": {"vis": vis}})

    # hifa_gfluxscale: amplitude gains, then the flux scale transferred to the phase calibrator.
    t0 = time.time()
    casa.task("gaincal", vis=vis, caltable=tables["phase"], field=f"{BP_CAL.name},{PH_CAL.name}", solint="int",
              calmode="p", refant=refant, minsnr=2.0, minblperant=4, gaintable=[tables["bandpass"]])
    casa.task("gaincal", vis=vis, caltable=tables["amp"], field=f"{BP_CAL.name},{PH_CAL.name}", solint="inf",
              calmode="a", refant=refant, minsnr=2.0, minblperant=4, gaintype="G",
              gaintable=[tables["bandpass"], tables["phase"]])
    fs = casa.task("fluxscale", vis=vis, caltable=tables["amp"], fluxtable=tables["flux"], reference=BP_CAL.name,
                   transfer=[PH_CAL.name])
    ph_id = next(k for k, v in fs.items() if isinstance(v, dict) and v.get("fieldName") == PH_CAL.name)
    gf = []
    for sid in range(preset.n_spw):
        flux, err = fs[ph_id][str(sid)]["fluxd"][0], fs[ph_id][str(sid)]["fluxdErr"][0]
        gf.append({"spw_name": f"X{1873 + sid}#ALMA_RB_03#BB_{sid + 1}#SW-01#FULL_RES", "spw": sid,
                   "flux_jy": float(flux), "error_jy": float(err), "asdm": asdm, "field": PH_CAL.name,
                   "freq_ghz": (BAND3_SPW_HZ[sid] + SPW_WIDTH_HZ / 2) / 1e9})
    rec.gflux += gf
    snr = min(g["flux_jy"] / g["error_jy"] if g["error_jy"] > 0 else 1e3 for g in gf)
    rec.stage("hifa_gfluxscale", [rec.score(min(1.0, snr / 20.0), f"Derived fluxes, minimum SNR {snr:.1f}",
                                            ("FluxSNR", float(snr), ""), asdm=[asdm], field=PH_CAL.name,
                                            intent=["PHASE"])], t0, "Calibration", per_ms=True,
              item={"inputs": {"vis": vis}, "flux_rows": gf})

    # hif_applycal: one call per field and intent, gains from the field's own or the phase calibrator.
    t0 = time.time()
    before = _flag_fraction(casa, vis)
    for field, intent, gainfield in ((BP_CAL.name, "CALIBRATE_BANDPASS#ON_SOURCE,CALIBRATE_FLUX#ON_SOURCE", BP_CAL.name),
                                     (PH_CAL.name, "CALIBRATE_PHASE#ON_SOURCE", PH_CAL.name),
                                     (TARGET.name, "OBSERVE_TARGET#ON_SOURCE", PH_CAL.name)):
        casa.task("applycal", vis=vis, field=field, intent=intent, spw=spws, antenna="*&*",
                  gaintable=[tables["bandpass"], tables["phase"], tables["flux"]],
                  gainfield=["", gainfield, gainfield], spwmap=[], interp=["linear,linearflag", "linear", "linear"],
                  calwt=[False, False, False], parang=False, applymode="calflagstrict", flagbackup=False)
    added = _flag_fraction(casa, vis) - before
    rec.stage("hif_applycal", [rec.score(1.0 - added, f"{added:.2%} of the data newly flagged by applycal",
                                         ("%ApplycalFlags", added, "%"), asdm=[asdm],
                                         session=[session])], t0, "Flagging", per_ms=True,
              item={"inputs": {"vis": vis}})
    casa.task("flagmanager", vis=vis, mode="save", versionname="Pipeline_Final", comment="Final pipeline flags")
    return {"tables": tables, "applied": [tables["bandpass"], tables["phase"], tables["flux"]],
            "bad_antenna": bad_ant}


def _set_miscinfo(casa, image: str, info: dict) -> None:
    ia = casa.tool("image")
    ia.open(image)
    misc = ia.miscinfo()
    misc.update(info)
    ia.setmiscinfo(misc)
    ia.close()


def _stats(casa, image: str) -> dict:
    """Statistics of the first Stokes plane (I) and the restoring beam."""
    ia = casa.tool("image")
    ia.open(image)
    st = ia.statistics(robust=True, axes=[0, 1, 3])     # per Stokes plane; the first is I
    beam = ia.restoringbeam()
    ia.close()
    if "beams" in beam:                        # per-plane beams: take the first
        beam = beam["beams"]["*0"]["*0"]
    if not beam:                               # a pb or mask has no beam
        beam = {k: {"value": float("nan")} for k in ("major", "minor", "positionangle")}
    return {"min": float(st["min"][0]), "max": float(st["max"][0]), "rms": float(st["medabsdevmed"][0] / 0.6745),
            "bmaj": beam["major"]["value"], "bmin": beam["minor"]["value"], "bpa": beam["positionangle"]["value"]}


# The datatype part of image names and the image list's datatype, as hif_makeimlist gives them.
DATATYPE_OF = {"regcal": "REGCAL_CONTLINE_ALL", "selfcal": "SELFCAL_CONTLINE_SCIENCE"}


def _image(casa, preset: AlmaPreset, prefix: str, stage: int, source: PointSource, code: str, vis: list[str],
           spw: str, specmode: str, stokes: str, intent: str, sessions: list[str], datatype: str = "regcal",
           nterms: int = 1) -> dict:
    """One hif_makeimages product as tclean makes it under the current (PIPE-1710) name
    ``<prefix>.s<stage>_0.<source>_<code>.spw<ids>.<specmode>.<datatype>.<stokes>.iter1``:
    ``.image``, ``.pb``, ``.mask``, ``.image.pbcor`` (``.tt0``/``.tt1``, ``.alpha``,
    ``.alpha.error``, ``.pb.tt0`` with nterms 2). Returns its image-list entry and files."""
    sw = spw.replace(",", "_")
    root = f"{prefix}.s{stage}_0.{source.name}_{code}.spw{sw}.{specmode}.{datatype}.{stokes}.iter1"
    for old in Path(".").glob(f"{root}.*"):
        shutil.rmtree(old, ignore_errors=True)
    mask = f"circle[[{source.ra_deg}deg, {source.dec_deg}deg], 3arcsec]"
    casa.task("tclean", vis=vis, imagename=root, field=source.name, spw=spw, datacolumn="corrected",
              specmode="cube" if specmode in ("cube", "repBW") else "mfs", gridder="standard", stokes=stokes,
              imsize=[preset.imsize, preset.imsize], cell=f"{preset.cell_arcsec}arcsec",
              phasecenter=f"J2000 {source.ra_deg}deg {source.dec_deg}deg", weighting="briggs", robust=0.5,
              niter=preset.niter, threshold="0mJy", nsigma=2.0, usemask="user", mask=mask, pblimit=0.2, pbcor=True,
              deconvolver="mtmfs" if nterms > 1 else "hogbom", nterms=nterms, parallel=False)
    tt = ".tt0" if nterms > 1 else ""
    spws = spw.split(",")
    stats = _stats(casa, f"{root}.image{tt}")
    common = {"object": source.name, "intent": intent, "specmode": specmode, "spw": spw, "virtspw": spw,
              "spwisvrt": False, "stokes": stokes, "datatype": DATATYPE_OF[datatype].lower(), "robust": 0.5,
              "weight": "briggs", "level": "member", "obspatt": "sf", "arrays": "12m", "modifier": "",
              "ctrfrq": float(np.mean([BAND3_SPW_HZ[int(s)] + SPW_WIDTH_HZ / 2 for s in spws])),
              "effbw": SPW_WIDTH_HZ * len(spws), "nspwnam": len(spws),
              **{f"spwnam{k + 1:02d}": f"X{1873 + int(s)}#ALMA_RB_03#BB_{int(s) + 1}#SW-01#FULL_RES"
                 for k, s in enumerate(spws)},
              "nsessio": len(sessions), **{f"sessio{k + 1:02d}": s for k, s in enumerate(sessions)}}
    kinds = {f"image{tt}": "image", f"image{tt}.pbcor": "pbcorimage", f"pb{tt}": "flux", "mask": "cleanmask"}
    if nterms > 1:
        kinds.update({"image.tt1": "image", "image.tt1.pbcor": "pbcorimage", "alpha": "spectral_index",
                      "alpha.error": "spectral_index_error"})
    for ext, kind in kinds.items():
        if not Path(f"{root}.{ext}").exists():
            continue
        st = stats if ext == f"image{tt}" else _stats(casa, f"{root}.{ext}")
        _set_miscinfo(casa, f"{root}.{ext}", {**common, "type": kind, "datamin": st["min"], "datamax": st["max"],
                                               "datarms": st["rms"]})
    entry = {"imagename": f"{root}.image.pbcor", "sourcename": source.name, "spwlist": spw, "specmode": specmode,
             "sourcetype": intent, "stokes": stokes, "datatype": DATATYPE_OF[datatype],
             "multiterm": nterms if nterms > 1 else None, "imageplot": "", "metadata": {}, "imaging_params": {},
             "org_direction": None, "version": 1, "version_count": 1, "imagename_prefix": prefix}
    return {"root": root, "entry": entry, "stats": stats}


def _polarization_maps(casa, root: str) -> list[str]:
    """POLI and POLA of an IQUV calibrator image, named as hif_makeimages names them
    (the IQUV part replaced), made by immath."""
    out = []
    for kind, mode in (("POLI", "poli"), ("POLA", "pola")):
        name = f"{root}.image".replace(".IQUV.", f".{kind}.")
        shutil.rmtree(name, ignore_errors=True)
        casa.task("immath", imagename=[f"{root}.image"], mode=mode, outfile=name, **({"polithresh": ""}
                                                                                      if mode == "pola" else {}))
        out.append(name)
    return out


def _expected_fits(name: str) -> str:
    """The FITS name the archive expects for a product the simulator made (stage and iteration
    parts dropped): the truth the export is checked against."""
    parts = name.split(".")
    kept = [p for p in parts if not (p.startswith("s") and "_" in p and p[1:].split("_")[0].isdigit())
            and not (p.startswith("iter") and p[4:].isdigit())]
    if "image" in kept:
        kept.remove("image")
    return ".".join(kept) + ".fits"


def _theoretical_rms(preset: AlmaPreset, vis_count: int, nbl: int, ndump: int, nchan: int, ncorr: int) -> float:
    """Natural-weighting point-source sensitivity of the combined target visibilities (Jy)."""
    sigma = preset.noise_jy * math.sqrt(2)
    nvis = vis_count * nbl * ndump * nchan * ncorr
    return sigma / math.sqrt(nvis)


# ------------------------------------------------------------------------------------------
def build(outdir: Path, casa, preset_name: str = "tiny", seed: int = 1) -> dict:
    """Build the working directory under ``outdir``; returns the truth record."""
    t_start = time.time()
    preset = PRESETS[preset_name]
    rng = np.random.default_rng(seed)
    outdir = Path(outdir).resolve()
    mous_dir = outdir / relative_path()
    working = fresh_dir(mous_dir / "working")
    (mous_dir / "rawdata").mkdir(exist_ok=True)
    (mous_dir / "products").mkdir(exist_ok=True)
    scratch = fresh_dir(outdir / ".alma_sim")
    oussid = uid_to_fs(MOUS)
    rec = _Recorder()
    first_call = len(casa.calls)

    cwd = os.getcwd()
    os.chdir(working)
    try:
        vises, cal = [], {}
        for k, eb in enumerate(EBS):
            vis = ms_name(eb)
            t0 = time.time()
            _observe(casa, Path(vis), preset, k)
            _predict(casa, Path(vis), scratch, preset)
            gains = _antenna_gains(casa, Path(vis), rng, preset.nchan)
            corrupt(casa.tools, Path(vis), rng, preset.noise_jy, phase_rms_deg=0.0)   # noise only
            msmd = casa.tool("msmetadata")
            msmd.open(vis)
            intents = set(msmd.intents())
            msmd.close()
            missing = [i for i in ("CALIBRATE_BANDPASS#ON_SOURCE", "CALIBRATE_PHASE#ON_SOURCE",
                                   "OBSERVE_TARGET#ON_SOURCE") if i not in intents]
            rec.stage("hifa_importdata", [rec.score(0.0 if missing else 1.0,
                                                    "Missing intents: " + ",".join(missing) if missing
                                                    else "All required intents present",
                                                    ("MissingIntentsMark", len(missing), ""),
                                                    asdm=[vis.removesuffix(".ms")], session=[SESSIONS[k]])],
                      t0, "Dataset", per_ms=True, item={"inputs": {"vis": vis}})
            cal[vis] = _calibrate(casa, vis, preset, rec, SESSIONS[k], rng)
            cal[vis]["gains"] = gains
            vises.append(vis)

        # hif_mstransform: the imaging MSs.
        t0 = time.time()
        targets_ms = []
        for vis in vises:
            out = vis.replace(".ms", "_targets.ms")
            shutil.rmtree(out, ignore_errors=True)
            casa.task("mstransform", vis=vis, outputvis=out, field=TARGET.name, intent="OBSERVE_TARGET#ON_SOURCE",
                      datacolumn="corrected", reindex=False)
            targets_ms.append(out)
        rec.stage("hif_mstransform", [rec.score(1.0, "Science target MSs created", asdm=[v.removesuffix(".ms") for v in vises])],
                  t0, "Dataset", item={"inputs": {"vis": vises}})

        # hifa_imageprecheck: the theoretical sensitivity of the representative target setup.
        t0 = time.time()
        tb = casa.tool("table")
        tb.open(targets_ms[0])
        nrow = tb.nrows()
        tb.close()
        theo = _theoretical_rms(preset, len(targets_ms), 1, nrow // preset.n_spw, preset.nchan, 2)
        all_spw = spw_list(preset)
        rec.stage("hifa_imageprecheck", [rec.score(1.0, "Representative target sensitivity estimated")], t0, "Dataset",
                  sensitivities=[_sensitivity_dict(preset, TARGET, all_spw, theo, None, None, None, True, "regcal")])

        # hif_makeimages, several stages, as a calibration + imaging recipe runs them: calibrator
        # images of every intent; per-EB check source images; target per spw; continuum I then
        # IQUV (which supersedes the I image, PIPE-2465); a cube; a self-calibrated multi-term
        # continuum image. (The tiny preset has no separate check or polarization calibrator
        # fields: the phase and bandpass calibrators' data are imaged under those intents.)
        made = []      # dicts: root, entry, stats, stage

        def image(*args, **kwargs):
            out = _image(casa, preset, *args, **kwargs)
            out["stage"] = args[1]
            made.append(out)
            return out

        n = rec.next_number()
        t0 = time.time()
        for sid in range(preset.n_spw):
            image(oussid, n, BP_CAL, "bp", vises, str(sid), "mfs", "I", "BANDPASS", list(SESSIONS))
            image(oussid, n, PH_CAL, "ph", vises, str(sid), "mfs", "I", "PHASE", list(SESSIONS))
        image(oussid, n, BP_CAL, "flux", vises, "0", "mfs", "I", "AMPLITUDE", list(SESSIONS))
        pol = image(oussid, n, BP_CAL, "pol", vises, "0", "mfs", "IQUV", "POLARIZATION", list(SESSIONS))
        pol["polmaps"] = _polarization_maps(casa, pol["root"])
        image(oussid, n, BP_CAL, "pang", vises, "0", "mfs", "I", "POLANGLE", list(SESSIONS))
        image(oussid, n, BP_CAL, "plk", vises, "0", "mfs", "I", "POLLEAKAGE", list(SESSIONS))
        rec.stage("hif_makeimages", [rec.score(1.0, "Calibrator images made")], t0, "Imaging", sensitivities=[])
        n = rec.next_number()
        t0 = time.time()
        for k, vis in enumerate(vises):         # check sources are imaged per EB (per_eb)
            image(vis.removesuffix(".ms"), n, PH_CAL, "chk", [vis], "0", "mfs", "I", "CHECK", [SESSIONS[k]])
        rec.stage("hif_makeimages", [rec.score(0.9, "Check source images made")], t0, "Imaging", sensitivities=[])
        targets = []
        n = rec.next_number()
        t0 = time.time()
        for sid in range(preset.n_spw):
            targets.append(image(oussid, n, TARGET, "sci", targets_ms, str(sid), "mfs", "I", "TARGET", list(SESSIONS)))
        rec.stage("hif_makeimages", [], t0, "Imaging", sensitivities=[])
        for stokes, specmode, spw, datatype, nterms in (("I", "cont", all_spw, "regcal", 1),
                                                        ("IQUV", "cont", all_spw, "regcal", 1),
                                                        ("I", "cube", "0", "regcal", 1),
                                                        ("I", "cont", all_spw, "selfcal", 2)):
            n = rec.next_number()
            t0 = time.time()
            targets.append(image(oussid, n, TARGET, "sci", targets_ms, spw, specmode, stokes, "TARGET", list(SESSIONS),
                                 datatype=datatype, nterms=nterms))
            rec.stage("hif_makeimages", [], t0, "Imaging", sensitivities=[])
        # Sensitivities of the target images: observed (image rms) against theoretical, in the
        # stage that made each image.
        for t in targets:
            tt = ".tt0" if t["entry"]["multiterm"] else ""
            st = t["stats"]
            pb = _stats(casa, f"{t['root']}.image{tt}.pbcor")
            spw = t["entry"]["spwlist"]
            nspw = len(spw.split(","))
            theo_spw = theo * math.sqrt(preset.n_spw / nspw)
            stage = next(s for s in rec.stages if s["number"] == t["stage"])
            stage["sensitivities"].append(_sensitivity_dict(
                preset, TARGET, spw, theo_spw, st, pb, t["entry"]["imagename"], ".cont." in t["root"] and
                t["entry"]["stokes"] == "I", t["root"].split(f".{t['entry']['specmode']}.")[1].split(".")[0],
                specmode=t["entry"]["specmode"]))
            ratio = st["rms"] / theo_spw
            rec.sensitivities.append({"image": t["entry"]["imagename"], "observed_jy": st["rms"],
                                      "theoretical_jy": theo_spw})
            stage["scores"].append(rec.score(min(1.0, 2.0 / max(ratio, 1e-6)),
                                             f"Observed/theoretical rms {ratio:.2f} for {t['root']}",
                                             ("RmsRatio", float(ratio), ""), spw=spw.split(","), intent=["TARGET"],
                                             field=TARGET.name))

        # Files a finished run leaves beside the data.
        calls = casa.calls[first_call:]
        Path("casa_commands.log").write_text("".join(f"# casaflow simulated pipeline run\n{c}\n" for c in calls))
        Path("casa_pipescript.py").write_text(_pipescript(vises))
        Path(f"PPR_{oussid}.xml").write_text(_ppr(vises))
        Path("cont.dat").write_text(f"Field: {TARGET.name}\n\nSpectralWindow: 0\n"
                                    f"{BAND3_SPW_HZ[0] / 1e9:.3f}~{(BAND3_SPW_HZ[0] + SPW_WIDTH_HZ) / 1e9:.3f}GHz LSRK\n")
        for vis in vises:
            Path(f"{vis.removesuffix('.ms')}.flagtemplate.txt").write_text("# flagging template\n")
            Path(f"{vis.removesuffix('.ms')}.flagtargetstemplate.txt").write_text("# target flagging template\n")
        _flux_csv(Path("flux.csv"), rec.flux)
        _weblog(Path(f"pipeline-{TIMESTAMP}"), rec, cal)
        context_path = _write_context(casa, working, vises, targets_ms, rec, made)
        # casaflow's fallback QA record (pipeline_qa.json), kept beside the working directory for
        # the old-naming fixture: a real run leaves a context instead.
        (outdir / "pipeline_qa_record.json").write_text(json.dumps(_fallback_record(rec), indent=1, default=str))
    finally:
        os.chdir(cwd)
    shutil.rmtree(scratch)
    truth = {
        "kind": "alma-working-dir", "preset": preset_name, "seed": seed, "preset_values": asdict(preset),
        "working": str(Path(relative_path()) / "working"), "project": PROJECT, "sous": SOUS, "gous": GOUS,
        "mous": MOUS, "oussid": oussid, "recipe": RECIPE, "ebs": list(EBS), "sessions": list(SESSIONS),
        "vis": vises, "targets_ms": targets_ms, "images": [m["root"] for m in made],
        "context": context_path.name,
        "image_products": _image_truth(working, made),
        "per_eb_images": [m["root"] for m in made if m["entry"]["imagename_prefix"] != oussid],
        "caltables": {v: c["applied"] for v, c in cal.items()},
        "all_caltables": {v: list(c["tables"].values()) for v, c in cal.items()},
        "sources": [asdict(s) for s in (BP_CAL, PH_CAL, TARGET)],
        "intents": {"bp": "BANDPASS,FLUX", "ph": "PHASE", "sci": "TARGET"},
        "stage_scores": {str(st["number"]): [sc["score"] for sc in st["scores"]] for st in rec.stages},
        "gfluxscale": rec.gflux,
        "spws": [{"id": s, "start_hz": BAND3_SPW_HZ[s], "nchan": preset.nchan, "width_hz": SPW_WIDTH_HZ}
                 for s in range(preset.n_spw)],
        "gains": {v: c["gains"] for v, c in cal.items()},
        "build_seconds": round(time.time() - t_start, 1),
    }
    truth["old_naming"] = old_naming_copy(outdir, mous_dir / "working", made)
    write_json(outdir / "truth.json", truth)
    return truth


def _sensitivity_dict(preset, source, spw: str, theo_jy: float, st, pb, imagename, representative: bool,
                      datatype: str, specmode: str = "cont") -> dict:
    """A ``sensitivities_for_aqua`` entry as hifa_imageprecheck / hif_makeimages keep them
    (CASA quanta for every quantity)."""
    nspw = len(spw.split(","))

    def q(value, unit):
        return None if value is None else {"value": float(value), "unit": unit}

    return {"array": "12m", "field": source.name, "intent": "TARGET", "spw": spw, "is_representative": representative,
            "bandwidth": q(SPW_WIDTH_HZ * nspw, "Hz"), "effective_bw": q(SPW_WIDTH_HZ * nspw, "Hz"),
            "bwmode": "cube" if specmode == "cube" else "cont",
            "beam": {"major": q(st["bmaj"] if st else 3.0, "arcsec"), "minor": q(st["bmin"] if st else 2.5, "arcsec"),
                     "positionangle": q(st["bpa"] if st else 0.0, "deg")},
            "cell": [q(preset.cell_arcsec, "arcsec"), q(preset.cell_arcsec, "arcsec")], "robust": 0.5, "uvtaper": [],
            "theoretical_sensitivity": q(theo_jy, "Jy/beam"),
            "observed_sensitivity": q(st["rms"], "Jy/beam") if st else None,
            "pbcor_image_min": q(pb["min"], "Jy/beam") if pb else None,
            "pbcor_image_max": q(pb["max"], "Jy/beam") if pb else None,
            "nonpbcor_image_min": q(st["min"], "Jy/beam") if st else None,
            "nonpbcor_image_max": q(st["max"], "Jy/beam") if st else None,
            "imagename": imagename, "datatype": DATATYPE_OF.get(datatype, datatype)}


# Result class of each task (the reference's module paths), and whether the task's result is a
# ResultsList of per-MS results (True) or one result.
RESULT_CLASSES = {
    "hifa_importdata": ("pipeline.hifa.tasks.importdata.almaimportdata.ALMAImportDataResults", True),
    "hifa_flagdata": ("pipeline.hifa.tasks.flagging.flagdeteralma.FlagDeterALMAResults", True),
    "hifa_setmodels": ("pipeline.h.tasks.common.commonfluxresults.FluxCalibrationResults", True),
    "hifa_bandpass": ("pipeline.hif.tasks.bandpass.common.BandpassResults", True),
    "hifa_gfluxscale": ("pipeline.hifa.tasks.fluxscale.gcorfluxscale.GcorFluxscaleResults", True),
    "hif_applycal": ("pipeline.h.tasks.applycal.applycal.ApplycalResults", True),
    "hif_mstransform": ("pipeline.hif.tasks.mstransform.mstransform.MstransformResults", True),
    "hifa_imageprecheck": ("pipeline.hifa.tasks.imageprecheck.imageprecheck.ImagePreCheckResults", True),
    "hif_makeimages": ("pipeline.hif.tasks.makeimages.resultobjects.MakeImagesResult", False),
}


def _write_context(casa, working: Path, vises: list[str], targets_ms: list[str], rec: _Recorder, made: list) -> Path:
    """``pipeline-<timestamp>.context`` and its saved_state results, from what was run."""
    from . import alma_context as ac

    ms_records, fields_of = [], {}
    for k, vis in enumerate(vises + targets_ms):
        msmd = casa.tool("msmetadata")
        msmd.open(vis)
        names = list(msmd.fieldnames())
        fields = [ac.obj("pipeline.domain.field.Field", id=i, name=n, source_id=i, intents=set())
                  for i, n in enumerate(names)]
        spws = [ac.spectral_window(i, msmd.namesforspws(i)[0], float(msmd.meanfreq(i)), float(msmd.bandwidths(i)))
                for i in range(msmd.nspw())]
        msmd.close()
        fields_of[vis] = {n: i for i, n in enumerate(names)}
        eb = EBS[k % len(EBS)]
        ms_records.append(dict(name=str(working / vis), _session=SESSIONS[k % len(SESSIONS)], execblock_id=eb,
                               fields=fields, spectral_windows=spws, array_name="ALMA", project_id=PROJECT,
                               schedblock_id=MOUS, observer="casaflow", origin_ms=str(working / vis)))

    def measurements(vis, rows, with_errors):
        out = {}
        for r in rows:
            m = ac.obj("pipeline.domain.fluxmeasurement.FluxMeasurement", spw_id=int(r["spw"]),
                       I=ac.flux_density(r["flux_jy"]), Q=ac.flux_density(0), U=ac.flux_density(0),
                       V=ac.flux_density(0), origin="casaflow simulator")
            if with_errors:
                m.uncertainty = ac.obj("pipeline.domain.fluxmeasurement.FluxMeasurement", spw_id=int(r["spw"]),
                                       I=ac.flux_density(r["error_jy"]))
            out.setdefault(fields_of[vis][r["field"].strip('"')], []).append(m)
        return out

    results = []
    for st in rec.stages:
        cls, per_ms = RESULT_CLASSES[st["name"]]
        vis_arg = [it["inputs"]["vis"] for it in st["items"]] if st["items"] else vises
        task = f"{st['name']}(vis={vis_arg!r})" if st["name"] != "hif_makeimages" else "hif_makeimages()"
        if not per_ms:
            results.append(ac.result(cls, st, task, sensitivities_for_aqua=st.get("sensitivities", [])))
            continue
        items = []
        for it in st["items"] or [{"inputs": {"vis": vises}}]:
            item = {"inputs": dict(it["inputs"])}
            vis = it["inputs"]["vis"]
            if st["name"] == "hifa_importdata":
                rows = [r for r in rec.flux if r["asdm"] == vis.removesuffix(".ms")]
                item["setjy_results"] = [ac.obj("pipeline.h.tasks.common.commonfluxresults.FluxCalibrationResults",
                                                measurements=measurements(vis, rows, False))]
                item["mses"] = []
            if st["name"] == "hifa_gfluxscale":
                item["measurements"] = measurements(vis, it["flux_rows"], True)
            if st["name"] == "hifa_imageprecheck":
                item["sensitivities_for_aqua"] = st.get("sensitivities", [])
            items.append(item)
        results.append(ac.result(cls, st, task, items=items))
    structure = {"ous_entity_type": "ObsProject", "ous_entity_id": OUS_ENTITY, "ous_part_id": OUS_PART,
                 "ousstatus_type": "OUSStatus", "ousstatus_entity_id": MOUS, "ppr_file": f"PPR_{uid_to_fs(MOUS)}.xml",
                 "recipe_name": RECIPE}
    summary = {"proposal_code": PROJECT, "proposal_title": "casaflow simulated project", "piname": "casaflow",
               "observatory": "ALMA Joint Observatory", "telescope": "ALMA"}
    cal = [m["entry"] for m in made if m["entry"]["sourcetype"] != "TARGET"]
    sci = [m["entry"] for m in made if m["entry"]["sourcetype"] == "TARGET"]
    return ac.write(working, f"pipeline-{TIMESTAMP}", ms_records=ms_records, results=results,
                    project={"summary": summary, "structure": structure}, calimages=cal, sciimages=sci)


def _image_truth(working: Path, made: list) -> list[dict]:
    """What each image-list entry made on disk, and the FITS names the archive expects for the
    default export. The superseded entries (a Stokes-I image with an IQUV one of the same
    selection, PIPE-2465) are marked: they are not exported."""
    out = []
    iquv = {(m["entry"]["sourcename"], m["entry"]["spwlist"], m["entry"]["specmode"], m["entry"]["datatype"])
            for m in made if m["entry"]["stokes"] == "IQUV" and m["entry"]["sourcetype"] == "TARGET"}
    exported_intents = {"BANDPASS", "PHASE", "CHECK", "AMPLITUDE", "POLARIZATION", "TARGET"}
    for m in made:
        e = m["entry"]
        files = sorted(p.name for p in working.glob(f"{m['root']}.*")
                       if p.name.split(m["root"] + ".", 1)[1] in
                       ("image.pbcor", "pb", "mask", "image.tt0.pbcor", "image.tt1.pbcor", "alpha", "alpha.error",
                        "pb.tt0"))
        files += [Path(p).name for p in m.get("polmaps", [])]
        superseded = e["sourcetype"] == "TARGET" and e["stokes"] == "I" and \
            (e["sourcename"], e["spwlist"], e["specmode"], e["datatype"]) in iquv
        out.append({"root": m["root"], "intent": e["sourcetype"], "prefix": e["imagename_prefix"],
                    "datatype": e["datatype"], "files": files, "exported": e["sourcetype"] in exported_intents
                    and not superseded, "fits": [_expected_fits(f) for f in files]})
    return out


def _fallback_record(rec: _Recorder) -> dict:
    """casaflow's fallback QA record format (pipeline_qa.json), from the same stages."""
    stages = [{k: v for k, v in st.items() if k in ("number", "name", "topic", "start", "end", "scores")}
              for st in rec.stages]
    return {"stages": stages, "flux_measurements": rec.flux, "gfluxscale": rec.gflux, "sensitivities": []}


OLD_NAMING_DIR = "old_naming/working"


def old_naming_copy(outdir: Path, working: Path, made: list) -> dict:
    """A working directory as archives hold runs from before PIPE-1710 (no datatype part in
    image names) and without a context: the MSs, caltables, logs, PPR and weblog of the run,
    the images renamed to the old names, and casaflow's fallback QA record pipeline_qa.json.
    One image keeps a name casaflow once wrote that matches no rule ('_check')."""
    dest = fresh_dir(outdir / OLD_NAMING_DIR)
    for p in sorted(working.iterdir()):
        if p.name.startswith(f"pipeline-{TIMESTAMP}") and p.name.endswith(".context"):
            continue
        if any(p.name.startswith(m["root"] + ".") for m in made):
            continue
        if p.is_dir() and p.name == f"pipeline-{TIMESTAMP}":
            shutil.copytree(p / "html", dest / p.name / "html")
        elif p.is_dir():
            shutil.copytree(p, dest / p.name)
        else:
            shutil.copy2(p, dest / p.name)
    (dest / "pipeline_qa.json").write_text((outdir / "pipeline_qa_record.json").read_text())
    images, expected, unmatched = [], [], []
    for m in made:
        old_root = m["root"].replace(f".{m['root'].split('.')[-3]}.", ".", 1) if m["root"].split(".")[-3] in \
            ("regcal", "selfcal") else m["root"]
        if m["entry"]["sourcetype"] == "CHECK":
            old_root = old_root.replace("_chk.", "_check.")
        for p in sorted(working.glob(f"{m['root']}.*")):
            shutil.copytree(p, dest / p.name.replace(m["root"], old_root))
        for p in m.get("polmaps", []):
            new = Path(p).name.replace(".regcal.", ".")
            shutil.copytree(working / p, dest / new)
        images.append(old_root)
        # What the default export of this copy gives: without the datatype part the regcal and
        # selfcal continuum I images share one product key, which the IQUV image supersedes;
        # the '_check' images match no rule.
        e = m["entry"]
        exported = e["sourcetype"] in {"BANDPASS", "PHASE", "AMPLITUDE", "POLARIZATION", "TARGET"} and not (
            e["sourcetype"] == "TARGET" and e["stokes"] == "I" and e["specmode"] == "cont")
        truth = next(t for t in _image_truth(working, [m]))
        if exported:
            expected += [_expected_fits(f.replace(m["root"], old_root).replace(".regcal.", "."))
                         for f in truth["files"]]
        if e["sourcetype"] == "CHECK":
            unmatched += [f"{old_root}.{ext}" for ext in ("image", "image.pbcor", "mask", "pb")
                          if (working / f"{m['root']}.{ext}").exists()]
    return {"working": OLD_NAMING_DIR, "images": images, "expected_fits": sorted(expected), "unmatched": unmatched}


def _flux_csv(path: Path, rows: list[dict]) -> None:
    lines = ["ms,field,spw,I,Q,U,V,spix,uvmin,uvmax,comment"]
    for r in rows:
        lines.append(f"{r['asdm']}.ms,{r['field'].strip(chr(34))},{r['spw']},{r['flux_jy']:.6f},0,0,0,"
                     f"{BP_CAL.alpha},0,0,\"# casaflow simulated flux\"")
    path.write_text("\n".join(lines) + "\n")


def _pipescript(vises: list[str]) -> str:
    tasks = [f"hifa_importdata(vis={[v.removesuffix('.ms') for v in vises]!r}, session={list(SESSIONS)!r})",
             "hifa_flagdata(pipelinemode=\"automatic\")", "hifa_setmodels(pipelinemode=\"automatic\")",
             "hifa_bandpass(pipelinemode=\"automatic\")", "hifa_gfluxscale(pipelinemode=\"automatic\")",
             "hifa_timegaincal(pipelinemode=\"automatic\")", "hif_applycal(pipelinemode=\"automatic\")",
             "hif_mstransform(pipelinemode=\"automatic\")", "hif_makeimages(pipelinemode=\"automatic\")",
             "hifa_exportdata(pipelinemode=\"automatic\")"]
    body = "".join(f"    {t}\n" for t in tasks)
    return f"# This CASA pipescript is meant for use with CASA 6.7 and pipeline {PIPELINE_VERSION}\ncontext = h_init()\ntry:\n{body}finally:\n    h_save()\n"


def _ppr(vises: list[str]) -> str:
    asdms = "".join(f"""
          <AsdmIdentifier>
            <AsdmRef><ExecBlockId>{fs_to_uid(v.removesuffix('.ms'))}</ExecBlockId></AsdmRef>
            <AsdmDiskName>{v.removesuffix('.ms')}</AsdmDiskName>
          </AsdmIdentifier>""" for v in vises)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<SciPipeRequest>
  <ProjectSummary>
    <ProposalCode>{PROJECT}</ProposalCode>
    <ProposalTitle>casaflow simulated project</ProposalTitle>
    <PIName>casaflow</PIName>
  </ProjectSummary>
  <ProjectStructure>
    <ObsUnitSetRef entityId="{OUS_ENTITY}" partId="{OUS_PART}" entityTypeName="ObsProject" documentVersion="1"/>
    <OUSStatusRef entityId="{MOUS}" entityTypeName="OUSStatus" documentVersion="1"/>
    <ScienceGoalOUSStatusRef entityId="{SOUS}"/>
    <GroupOUSStatusRef entityId="{GOUS}"/>
  </ProjectStructure>
  <ProcessingRequests>
    <RootDirectory>/data/alma</RootDirectory>
    <ProcessingRequest>
      <ProcessingIntents>
        <Intents><Keyword>INTERFEROMETRY_STANDARD_OBSERVING_MODE</Keyword><Value>Undefined</Value></Intents>
      </ProcessingIntents>
      <ProcessingProcedure>
        <ProcedureTitle>{RECIPE}</ProcedureTitle>
      </ProcessingProcedure>
      <DataSet>
        <RelativePath>{relative_path()}</RelativePath>
        <SchedBlockRef entityId="{MOUS}"/>
        <SchedBlockSet>
          <SchedBlockIdentifier>
            <RelativePath>{relative_path()}</RelativePath>
            <SchedBlockName>IRAS19250_a_03_TM1</SchedBlockName>{asdms}
          </SchedBlockIdentifier>
        </SchedBlockSet>
      </DataSet>
    </ProcessingRequest>
  </ProcessingRequests>
</SciPipeRequest>
"""


def _weblog(root: Path, rec: _Recorder, cal: dict) -> None:
    """A small weblog: an index with the stages and their scores, and one bandpass plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    html = fresh_dir(root / "html")
    rows = "".join(f"<tr><td>{s['number']}</td><td>{s['name']}</td>"
                   f"<td>{min((x['score'] for x in s['scores']), default='')}</td></tr>" for s in rec.stages)
    (html / "index.html").write_text(
        f"<html><head><title>Pipeline {TIMESTAMP}</title></head><body><h1>{PROJECT} {uid_to_fs(MOUS)}</h1>"
        f"<table><tr><th>Stage</th><th>Task</th><th>Score</th></tr>{rows}</table>"
        f"<img src='bandpass.png'/></body></html>\n")
    fig, ax = plt.subplots(figsize=(5, 3))
    for vis, c in cal.items():
        ax.plot(c["gains"]["amplitude"], "o", label=vis)
    ax.set_xlabel("antenna"); ax.set_ylabel("simulated amplitude gain"); ax.legend(fontsize=6)
    fig.tight_layout(); fig.savefig(html / "bandpass.png", dpi=60); plt.close(fig)
    # the home page, whose rows name the CASA and pipeline versions of the run (t1-1.mako)
    (html / "t1-1.html").write_text(
        f"<html><body><table><tr><th>Pipeline Version</th><td>{PIPELINE_VERSION}\n</td><td></td></tr>"
        f"<tr><th>Pipeline Recipe</th><td>{RECIPE}\n</td></tr><tr><th>CASA Version</th><td>{CASA_VERSION} "
        f"(<a href=\"javascript:\">environment</a>)</td></tr></table></body></html>\n")
    for s in rec.stages:
        (html / f"t2-4m.stage{s['number']}.html").write_text(f"<html><body><h2>{s['name']}</h2></body></html>\n")
