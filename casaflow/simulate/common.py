"""Pieces shared by the simulators: antenna files, sky models, corruption, tarballs."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import atomic
from ..archive import write_tgz
from ..casaenv import casadata_measurespath


def antenna_file(name: str) -> Path:
    """An observatory antenna configuration shipped with casadata (e.g. ``vla.d.cfg``)."""
    path = casadata_measurespath() / "alma" / "simmos" / name
    if not path.is_file():
        raise FileNotFoundError(f"antenna configuration {name} not found in casadata ({path})")
    return path


def read_antennas(path: Path) -> dict:
    """Parse a simmos ``.cfg`` (XYZ coordinates): x, y, z, diameters, names, observatory."""
    xs, ys, zs, diam, names = [], [], [], [], []
    observatory = ""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            if "observatory=" in line:
                observatory = line.split("=", 1)[1].strip()
            continue
        parts = line.split()
        if len(parts) < 5:
            continue
        xs.append(float(parts[0])); ys.append(float(parts[1])); zs.append(float(parts[2]))
        diam.append(float(parts[3])); names.append(parts[4])
    return {"x": xs, "y": ys, "z": zs, "diam": diam, "names": names, "observatory": observatory}


@dataclass
class PointSource:
    """A polarised point source. Fluxes in Jy at ``ref_freq_hz``; all Stokes share ``alpha``."""

    name: str
    ra_deg: float
    dec_deg: float
    i_jy: float
    q_jy: float
    u_jy: float
    v_jy: float
    alpha: float
    ref_freq_hz: float

    def stokes_at(self, freq_hz: float) -> list[float]:
        scale = (freq_hz / self.ref_freq_hz) ** self.alpha
        return [self.i_jy * scale, self.q_jy * scale, self.u_jy * scale, self.v_jy * scale]

    @property
    def frac_q(self) -> float:
        return self.q_jy / self.i_jy

    @property
    def frac_u(self) -> float:
        return self.u_jy / self.i_jy


def offset_direction(ra_deg: float, dec_deg: float, dx_arcsec: float, dy_arcsec: float) -> tuple[float, float]:
    """Small sky offset (east, north) in arcsec from (ra, dec), on the tangent plane."""
    dec = dec_deg + dy_arcsec / 3600.0
    ra = ra_deg + dx_arcsec / 3600.0 / math.cos(math.radians(dec_deg))
    return ra, dec


def fmt_j2000(ra_deg: float, dec_deg: float) -> str:
    """'J2000 hh:mm:ss.sss +dd.mm.ss.ss', the phasecenter format VLASS parameter lists use."""
    ra_h = (ra_deg / 15.0) % 24.0
    h = int(ra_h); m = int((ra_h - h) * 60); s = ((ra_h - h) * 60 - m) * 60
    sign = "-" if dec_deg < 0 else "+"
    d_abs = abs(dec_deg)
    d = int(d_abs); dm = int((d_abs - d) * 60); ds = ((d_abs - d) * 60 - dm) * 60
    return f"J2000 {h:02d}:{m:02d}:{s:06.3f} {sign}{d:02d}.{dm:02d}.{ds:05.2f}"


def make_componentlist(ct, sources: list[PointSource], freq_hz: float, path: Path,
                       angle_factor: float = 1.0) -> Path:
    """A flat-spectrum component list with every source's IQUV evaluated at ``freq_hz``.

    One list per spw: casatools 6.7's simulator with primary beams ignores the spectral index of
    Q/U/V (platform notes), so the spectrum is applied here and the simulator sees constant
    spectra. It also multiplies polarisation angles by ``angle_factor`` (measured by
    :func:`simulator_angle_factor`); the angle given to it is divided by that factor so the
    visibilities carry the true angle.
    """
    if path.exists():
        shutil.rmtree(path)
    cl = ct.componentlist()
    for src in sources:
        i, q, u, v = src.stokes_at(freq_hz)
        p, chi2 = math.hypot(q, u), math.atan2(u, q)
        q, u = p * math.cos(chi2 / angle_factor), p * math.sin(chi2 / angle_factor)
        cl.addcomponent(flux=[i, q, u, v], fluxunit="Jy", polarization="Stokes",
                        dir=f"J2000 {src.ra_deg}deg {src.dec_deg}deg", shape="point",
                        freq=f"{freq_hz}Hz", spectrumtype="constant", label=src.name)
    cl.rename(str(path))
    cl.close()
    return path


_ANGLE_FACTOR: dict[str, float] = {}


def simulator_angle_factor(ct, scratch: Path, telescope: str = "EVLA") -> float:
    """Self-test of the simulator bug seen with casatools 6.7.0.31: with primary beams on
    (``setvp(dovp=True)``) the linear polarisation angle comes out doubled.

    Predicts a 10 deg source on a 3-antenna snapshot and reads the angle back from RL/RR.
    Returns 2.0 while the bug is there, 1.0 once it is fixed; anything else is an error.
    """
    if telescope in _ANGLE_FACTOR:
        return _ANGLE_FACTOR[telescope]
    ants = read_antennas(antenna_file("vla.d.cfg"))
    me = ct.measures()
    ms = scratch / "angle_selftest.ms"
    if ms.exists():
        shutil.rmtree(ms)
    sm = ct.simulator()
    sm.open(str(ms))
    sm.setconfig(telescopename=telescope, x=ants["x"][:3], y=ants["y"][:3], z=ants["z"][:3],
                 dishdiameter=ants["diam"][:3], mount=["alt-az"], antname=ants["names"][:3],
                 padname=ants["names"][:3], coordsystem="global", referencelocation=me.observatory("VLA"))
    sm.setspwindow(spwname="s", freq="3GHz", deltafreq="16MHz", freqresolution="16MHz", nchannels=1,
                   stokes="RR RL LR LL")
    sm.setfeed(mode="perfect R L")
    sm.setfield(sourcename="F", sourcedirection=me.direction("J2000", "350.8deg", "50.4deg"))
    sm.setlimits(shadowlimit=0.001, elevationlimit="8deg")
    sm.setauto(0.0)
    sm.settimes(integrationtime="10s", usehourangle=True, referencetime=me.epoch("utc", "2022/08/01/00:00:00"))
    sm.observe(sourcename="F", spwname="s", starttime="0s", stoptime="10s")
    chi = math.radians(10.0)
    src = PointSource("selftest", 350.8, 50.4, 1.0, 0.1 * math.cos(2 * chi), 0.1 * math.sin(2 * chi), 0.0, 0.0, 3e9)
    cl = make_componentlist(ct, [src], 3e9, scratch / "angle_selftest.cl")
    sm.setvp(dovp=True, usedefaultvp=True)
    sm.predict(complist=str(cl))
    sm.close()
    tb = ct.table()
    tb.open(str(ms))
    d = tb.getcol("DATA")[:, 0, 0]
    tb.close()
    shutil.rmtree(ms)
    shutil.rmtree(cl)
    measured = math.degrees(float(np.angle(d[1] / d[0]))) / 2.0
    factor = round(measured / 10.0, 2)
    if factor not in (1.0, 2.0):
        raise RuntimeError(f"simulator polarisation self-test: 10 deg came out as {measured:.2f} deg")
    _ANGLE_FACTOR[telescope] = factor
    return factor


def corrupt(ct, ms_path: Path, rng: np.random.Generator, noise_jy: float, phase_rms_deg: float) -> dict:
    """Add antenna phase errors and thermal noise to DATA, in place.

    * One phase per antenna per scan, the *same* for both hands: a separate R and L screen
      would rotate Q/U after a phase-only selfcal (platform notes).
    * Gaussian noise on all four correlations (``sm.setnoise`` only touches the parallel hands,
      which makes statwt's weights absurd). WEIGHT/SIGMA are set to match.
    Returns the phases applied, for the truth file.
    """
    tb = ct.table()
    tb.open(str(ms_path), nomodify=False)
    scans = tb.getcol("SCAN_NUMBER")
    nant = int(max(tb.getcol("ANTENNA1").max(), tb.getcol("ANTENNA2").max())) + 1
    phases = {int(s): rng.normal(0.0, math.radians(phase_rms_deg), nant) for s in np.unique(scans)}
    nrow = tb.nrows()
    chunk = 20000
    for start in range(0, nrow, chunk):
        n = min(chunk, nrow - start)
        data = tb.getcol("DATA", start, n)            # (ncorr, nchan, nrow)
        a1 = tb.getcol("ANTENNA1", start, n)
        a2 = tb.getcol("ANTENNA2", start, n)
        sc = tb.getcol("SCAN_NUMBER", start, n)
        ph = np.array([phases[int(s)][i] - phases[int(s)][j] for s, i, j in zip(sc, a1, a2)])
        data = data * np.exp(1j * ph)[None, None, :]
        noise = rng.normal(0.0, noise_jy, data.shape) + 1j * rng.normal(0.0, noise_jy, data.shape)
        tb.putcol("DATA", (data + noise).astype(np.complex64), start, n)
        ncorr = data.shape[0]
        tb.putcol("SIGMA", np.full((ncorr, n), noise_jy * math.sqrt(2), dtype=np.float32), start, n)
        tb.putcol("WEIGHT", np.full((ncorr, n), 1.0 / (2 * noise_jy ** 2), dtype=np.float32), start, n)
    tb.flush()
    tb.close()
    return {str(k): [round(math.degrees(v), 4) for v in vals] for k, vals in phases.items()}


def write_json(path: Path, data: dict) -> None:
    atomic.write_text(path, json.dumps(data, indent=2, sort_keys=True, default=lambda o: asdict(o)))


def make_tarball(path: Path, root: Path, members: list[str]) -> None:
    """A gzipped tar of ``members`` (paths relative to ``root``), deterministic and atomic."""
    write_tgz(path, [(root / rel, rel) for rel in members])


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
