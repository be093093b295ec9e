"""FITS header work on exported VLASS images (reference §6.5): the frequency-dependent wide-field
position correction (VLASS Memo 14, Eq. 9), the header fix (PIPE-641) and keyword comments.

All three edit a FITS file in place through astropy, via a temporary copy renamed over the
original, so a crash never leaves a half-edited file.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.time import Time

from .. import atomic

CORRECTION_MARK = "Position correction "
KEYWORD_COMMENTS = {
    "VLASSITY": "VLASS image type", "VLASSPT": "VLASS product type", "VLASSTN": "VLASS tile name",
    "VLASSPC": "VLASS phasecenter", "VLASSEP": "VLASS epoch", "VLASSVR": "VLASS version number",
    "VLASSPL": "VLASS Stokes/polarization parameter",
    "VLASSRJ": "Rejected plane relevant for VLASS CC processing",
    "VLASSSPW": "Spectral windows used for image", "VLASSBWN": "Nominal bandwidth",
    "VLASSBW": "Actual bandwidth after flagging", "VLASSWP": "Number of w-projection planes",
}


def _edit(path: Path, fn) -> None:
    with atomic.atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        with fits.open(tmp, mode="update") as hdul:
            fn(hdul[0].header)


def gmst_hours(mjd_utc: float) -> float:
    """Greenwich mean sidereal time (IAU 1982, UT1 ~ UTC: good to ~1 s, ample for a 0.25" term)."""
    d = mjd_utc + 2400000.5 - 2451545.0
    return (18.697374558 + 24.06570982441908 * d) % 24.0


def correction(ra_deg: float, dec_deg: float, freq_hz: float, mjd_mid: float, lon_deg: float,
               lat_deg: float) -> dict:
    """The offset of VLASS Memo 14 Eq. 9 for one image. Angles in radians unless named."""
    lst_h = gmst_hours(mjd_mid) + lon_deg / 15.0
    if lst_h < 0:
        lst_h += 24.0
    ha = math.radians(lst_h * 15.0) - math.radians(ra_deg)
    if ha < 0:
        ha += 2 * math.pi
    phi, dec = math.radians(lat_deg), math.radians(dec_deg)
    zd = math.acos(math.sin(phi) * math.sin(dec) + math.cos(phi) * math.cos(dec) * math.cos(ha))
    chi = math.atan(math.sin(ha) / (math.cos(dec) * math.tan(phi) - math.sin(dec) * math.cos(ha)))
    ha_w = math.atan2(math.sin(ha), math.cos(ha))   # wrap into (-pi, pi]
    if ha_w < 0 and chi > 0:
        chi -= math.pi
    elif ha_w > 0 and chi < 0:
        chi += math.pi
    delta_rad = math.radians(0.25 / 3600.0) * math.tan(zd) * (3e9 / freq_hz) ** 2
    new = SkyCoord(ra_deg * u.deg, dec_deg * u.deg, frame="icrs").directional_offset_by(
        (math.degrees(chi) + 180.0) * u.deg, delta_rad * u.rad)
    delta_arcsec = math.degrees(delta_rad) * 3600.0
    return {"crval1": float(new.ra.deg), "crval2": float(new.dec.deg), "zd_deg": math.degrees(zd),
            "chi_rad": chi, "delta_arcsec": delta_arcsec,
            "shift": (-delta_arcsec * math.sin(chi), -delta_arcsec * math.cos(chi))}


def apply_position_correction(path: Path, mjd_mid: float, lon_deg: float, lat_deg: float) -> dict | None:
    """Correct CRVAL1/2 in place; None (with nothing changed) if the file is already corrected."""
    header = fits.getheader(path)
    if any(CORRECTION_MARK in str(h) for h in header.get("HISTORY", [])):
        return None
    ra, dec = header["CRVAL1"], header["CRVAL2"]
    if header.get("CUNIT1", "deg").strip().lower().startswith("rad"):
        ra, dec = math.degrees(ra), math.degrees(dec)
    freq = float(header["CRVAL3"]) if "FREQ" in str(header.get("CTYPE3", "")) else float(header["CRVAL4"])
    c = correction(ra, dec, freq, mjd_mid, lon_deg, lat_deg)

    def edit(h):
        h["CRVAL1"], h["CRVAL2"] = c["crval1"], c["crval2"]
        h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
        h["ZD"] = (c["zd_deg"], "Zenith distance of telescope pointing at TELMJD")
        h["TELMJD"] = (mjd_mid, "MJD of zenith distance and hour angle")
        h.add_history(f"Uncorrected CRVAL1 = {ra:.12E} deg")
        h.add_history(f"Uncorrected CRVAL2 = {dec:.12E} deg")
        h.add_history("ZD parameter represents the zenith distance of telescope pointing at TELMJD.")
        h.add_history("TELMJD parameter represents the time of zenith distance and hour angle.")
        h.add_history(f"Position correction ({c['shift'][0]:.3E}/cos(CRVAL2), {c['shift'][1]:.3E}) arcsec applied")

    _edit(Path(path), edit)
    return {**c, "uncorrected": (ra, dec)}


def header_fix(path: Path, first_scan_start_mjd: float, last_scan_end_mjd: float) -> None:
    """DATE-OBS/DATE-END from the scans, FK5 -> ICRS, OBJECT from the file name (PIPE-641)."""
    obj = Path(path).name.split(".")
    obj = obj[4] if len(obj) > 4 else None

    def edit(h):
        h["DATE-OBS"] = (Time(first_scan_start_mjd, format="mjd", scale="utc").isot, "First scan started")
        end = (Time(last_scan_end_mjd, format="mjd", scale="utc").isot, "Last scan finished")
        if "DATE-END" in h:
            h["DATE-END"] = end
        else:
            h.insert("DATE-OBS", ("DATE-END",) + end, after=True)
        if str(h.get("RADESYS", "")).strip().upper() == "FK5":
            h["RADESYS"] = "ICRS"
        if obj and str(h.get("OBJECT", "")).strip().lower() != obj.lower():
            h["OBJECT"] = obj

    _edit(Path(path), edit)


def keyword_comments(path: Path) -> list[str]:
    """Comments for the VLASS keywords (PIPE-2461). The VLASSRMS/VLASSPK comments name the TT0
    (TT1) images when the FITS file name says tt0 (tt1) or alpha, as the reference decides.
    Returns the keywords that were missing."""
    missing = []
    lower = Path(path).name.lower()
    tt = "TT0" if "tt0" in lower else "TT1" if "tt1" in lower else None

    def edit(h):
        comments = dict(KEYWORD_COMMENTS)
        if tt == "TT0" or "alpha" in lower:
            comments["VLASSRMS"], comments["VLASSPK"] = "Median rms calculated from RMS_TT0 (I)", \
                "Peak flux density of INTENSITY_PBCOR_TT0 (I)"
        elif tt == "TT1":
            comments["VLASSRMS"], comments["VLASSPK"] = "Median rms calculated from RMS_TT1 (I)", \
                "Peak flux density of INTENSITY_PBCOR_TT1 (I)"
        else:
            comments["VLASSRMS"], comments["VLASSPK"] = "Median RMS calculated from RMS image", \
                "Peak flux density of INTENSITY_PBCOR image"
        for key, comment in comments.items():
            if key in h:
                h.comments[key] = comment
            else:
                missing.append(key)

    _edit(Path(path), edit)
    return missing
