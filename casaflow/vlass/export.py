"""``hifv_exportvlassdata`` in cube mode (reference §6.5).

Per plane: the IQUV pb-corrected cut-out and its rms cut-out are split into IQU and V images,
exported to FITS (stage prefix dropped), position-corrected for the plane's frequency, header-fixed
and commented. Then ``pipeline_manifest.xml``, the parameter lists, and the ``.com`` set (IQU and
V smoothed to one common beam and regridded to one WCS; not in the manifest, not archived).

Deliberate differences from the reference, also in the README: exportfits overwrites (so a re-run
needs no clean products directory); the ``.com`` images are always smoothed and regridded (as the
reference *code* does; the design doc's thresholds are computed and logged only); parameter lists
are listed in sorted order (the reference's order is a Python set's).
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

from .. import pipeline_manifest
from ..result import software_versions
from . import fitsheader, images, naming

log = logging.getLogger("casaflow.vlass.export")


def observation_times(casa, vis: str) -> dict:
    """First scan start, last scan end and their midpoint (MJD, UTC)."""
    msmd = casa.tool("msmetadata")
    msmd.open(vis)
    try:
        scans = msmd.scannumbers()
        times = msmd.timesforscans(scans)
        spw = int(msmd.spwsforscan(int(scans[0]))[0])
        exposure = float(msmd.exposuretime(scan=int(scans[0]), spwid=spw)["value"])
        telescope = msmd.observatorynames()[0]
    finally:
        msmd.close()
    start = (float(min(times)) - exposure / 2) / 86400.0
    end = (float(max(times)) + exposure / 2) / 86400.0
    me = casa.tools.measures()
    pos = me.measure(me.observatory(telescope), "WGS84")
    return {"start_mjd": start, "end_mjd": end, "mid_mjd": (start + end) / 2, "telescope": telescope,
            "lon_deg": math.degrees(pos["m0"]["value"]), "lat_deg": math.degrees(pos["m1"]["value"])}


def split_stokes(casa, image: str) -> dict[str, str]:
    out = {}
    for stokes in ("IQU", "V"):
        name = image.replace(".IQUV.", f".{stokes}.")
        images.remove(name)
        casa.task("imsubimage", imagename=image, outfile=name, stokes=stokes, dropdeg=False, overwrite=True)
        out[stokes] = name
    return out


def export_plane(casa, root: str, products: Path, obs: dict) -> list[dict]:
    """The four FITS files of one plane, in the reference's order (pbcor IQU, V, rms IQU, V)."""
    pb = split_stokes(casa, f"{root}.iter3.image.pbcor.tt0.subim")
    rms = split_stokes(casa, f"{root}.iter3.image.pbcor.tt0.rms.subim")
    peak = float(casa.task("imstat", imagename=pb["IQU"], stokes="I")["max"][0])
    rms_median = float(casa.task("imstat", imagename=rms["IQU"], stokes="I")["median"][0])
    out = []
    for image in (pb["IQU"], pb["V"], rms["IQU"], rms["V"]):
        stokes = "IQU" if ".IQU." in image else "V"
        images.set_miscinfo(casa, image, {"VLASSPL": stokes, "VLASSPK": peak, "VLASSRMS": rms_median})
        fits_path = products / (naming.strip_stage_prefix(Path(image).name) + ".fits")
        casa.task("exportfits", imagename=image, fitsimage=str(fits_path), overwrite=True)
        corr = fitsheader.apply_position_correction(fits_path, obs["mid_mjd"], obs["lon_deg"], obs["lat_deg"])
        fitsheader.header_fix(fits_path, obs["start_mjd"], obs["end_mjd"])
        missing = fitsheader.keyword_comments(fits_path)
        out.append({"image": image, "fits": fits_path.name, "stokes": stokes,
                    "kind": "rms" if ".rms" in image else "pbcor", "peak_jy": peak, "rms_median_jy": rms_median,
                    "correction_arcsec": None if corr is None else corr["delta_arcsec"],
                    "missing_keywords": missing})
    return out


def common_beam(casa, cubes: list[str]) -> dict:
    """ia.commonbeam over the (channel 0, polarisation 0) beams of the planes, x 1.00001."""
    ia = casa.tool("image")
    scratch = "commonbeam.scratch.im"
    images.remove(scratch)
    cs = casa.tools.coordsys()
    cs = cs.newcoordsys(direction=True, spectral=True)
    ia.fromshape(scratch, [128, 128, len(cubes)], csys=cs.torecord(), overwrite=True)
    for k, cube in enumerate(cubes):
        b = images.beam_of(casa, cube)
        ia.setrestoringbeam(major=f"{b['bmaj']}arcsec", minor=f"{b['bmin']}arcsec", pa=f"{b['bpa']}deg", channel=k,
                            polarization=-1)
    beam = ia.commonbeam()
    ia.close()
    images.remove(scratch)
    beam["positionangle"] = beam.pop("pa")
    for axis in ("major", "minor"):
        beam[axis]["value"] *= 1.00001
    return beam


def _smooth_regrid_stokes(casa, cube: str, label: str, target: dict, crval_rad: tuple, out: str) -> None:
    """One Stokes of ``cube`` smoothed to ``target`` (convolve2d, targetres), its reference moved to
    the position-corrected CRVAL, and regridded back onto the plane's own pixel grid."""
    sub, smooth = f"{out}.in", f"{out}.smooth"
    casa.task("imsubimage", imagename=cube, outfile=sub, stokes=label, dropdeg=False, overwrite=True)
    ia = casa.tool("image")
    ia.open(sub)
    orig_cs = ia.coordsys()
    shape = ia.shape()
    sm = ia.convolve2d(outfile=smooth, major=target["major"], minor=target["minor"], pa=target["positionangle"],
                       targetres=True, overwrite=True)
    ia.close()
    cs = sm.coordsys()
    ref = cs.referencevalue(format="n")
    ref["numeric"][0], ref["numeric"][1] = crval_rad
    cs.setreferencevalue(value=ref["numeric"])
    sm.setcoordsys(cs.torecord())
    sm.regrid(outfile=out, csys=orig_cs.torecord(), shape=shape, axes=[0, 1], overwrite=True).done()
    sm.done()
    images.remove(sub)
    images.remove(smooth)


def _com_cubes(casa, cube: str, target: dict, crval_rad: tuple) -> dict[str, str]:
    """The smoothed, regridded IQU and V images of one plane, made one Stokes at a time: CASA's
    convolve2d holds ~7 planes of the plane it convolves (an FFT), so over the IQUV cube at once it
    held ~13 (bench/vlass_scaling). I, Q and U are joined along the Stokes axis (images.join_stokes)."""
    parts = {}
    for label in images.stokes_labels(casa, cube):
        parts[label] = f"{cube}.com.part-{label}"
        _smooth_regrid_stokes(casa, cube, label, target, crval_rad, parts[label])
    out = {"IQU": f"{cube}.com.IQU", "V": f"{cube}.com.V"}
    Path(parts["V"]).rename(out["V"])
    images.join_stokes(casa, [parts[s] for s in "IQU"], out["IQU"])
    for s in "IQU":
        images.remove(parts[s])
    return out


def com_images(casa, plane_outputs: list[dict], products: Path, obs: dict) -> tuple[list[str], list[str]]:
    """The common-beam ``.com`` FITS set (pbcor images only, rejected planes included). Like the
    per-plane FITS they carry the cut-out's VLASSPK/VLASSRMS, the header fix and the keyword
    comments (the reference's _fix_vlass_fits_header and _update_vlass_fits_header)."""
    pairs = [(o["image"].replace(".IQU.", ".IQUV."), products / o["fits"], o) for o in plane_outputs
             if o["kind"] == "pbcor" and o["stokes"] == "IQU"]
    if not pairs:
        return [], []
    target = common_beam(casa, [p[0] for p in pairs])
    made, warnings = [], []
    for cube, iqu_fits, out in pairs:
        try:
            from astropy.io import fits

            images.remove(f"{cube}.com.*")
            hdr = fits.getheader(iqu_fits)
            subs = _com_cubes(casa, cube, target, (math.radians(hdr["CRVAL1"]), math.radians(hdr["CRVAL2"])))
            for stokes in ("IQU", "V"):
                sub = subs[stokes]
                b = images.beam_of(casa, sub)
                ia = casa.tool("image")
                ia.open(sub)
                if stokes == "IQU":
                    ia.setrestoringbeam(remove=True)
                    ia.setrestoringbeam(major=f"{b['bmaj']}arcsec", minor=f"{b['bmin']}arcsec", pa=f"{b['bpa']}deg")
                name = iqu_fits.name.replace(".IQU.iter", f".{stokes}.iter").replace(".fits", ".com.fits")
                info = ia.miscinfo()
                info.update({"VLASSPL": stokes, "VLASSPK": out["peak_jy"], "VLASSRMS": out["rms_median_jy"]})
                ia.setmiscinfo(info)
                ia.tofits(str(products / name), overwrite=True)
                ia.close()
                fitsheader.header_fix(products / name, obs["start_mjd"], obs["end_mjd"])
                fitsheader.keyword_comments(products / name)
                made.append(name)
            images.remove(f"{cube}.com.*")
        except Exception as exc:  # one failed .com image does not stop the others (reference)
            warnings.append(f".com image for {cube} failed: {exc}")
            log.warning("%s", warnings[-1])
    return made, warnings


def write_manifest(products: Path, products_rel: str, fits_names: list[str], parameter_files: list[str],
                   casa_version: str, ous: str = "unknown") -> Path:
    """The reference's element order and attributes; ``ous`` names the run's OUS/request (the
    piperesults and ous names and each weblog/casa_cmdlog element's ous attribute)."""
    m = pipeline_manifest.PipelineManifest(ous)
    m.add("casaversion", name=casa_version)
    m.add("pipeline_version", name="casaflow " + software_versions().get("casaflow", ""))
    m.add("procedure_name", name="hifv_vlassCCIP")
    m.add("weblog", name="weblog.tgz", level="N/A", ous=ous, package="N/A", datatype="weblog", format="tgz")
    m.add("casa_cmdlog", name="casa_commands.log", level="N/A", ous=ous, package="N/A",
          datatype="casa_commands", format="log")
    for name in fits_names:
        m.add("image", name=f"{products_rel.rstrip('/')}/{name}", imtype="target", manualstring="N/A")
    for name in sorted(parameter_files):
        m.add("parameter_list", name=name)
    return m.write(products / "pipeline_manifest.xml")


def run(casa, workspace: Path, vis: str, planes: list[dict], products_rel: str, parameter_files: list[str],
        ous: str = "unknown") -> dict:
    products = workspace / products_rel
    if products.exists():
        shutil.rmtree(products)    # a re-run replaces the whole export
    products.mkdir(parents=True)
    obs = observation_times(casa, vis)
    outputs = []
    for p in planes:
        outputs += export_plane(casa, p["root"], products, obs)
    copied = []
    for name in parameter_files:
        shutil.copyfile(workspace / name, products / name)
        copied.append(name)
    commands = workspace / "casa_commands.log"
    if commands.exists():
        shutil.copyfile(commands, products / "casa_commands.log")
        copied.append("casa_commands.log")
    manifest = write_manifest(products, products_rel, [o["fits"] for o in outputs], parameter_files,
                              software_versions().get("casatools", ""), ous)
    com, warnings = com_images(casa, outputs, products, obs)
    return {"products_dir": products_rel, "fits": outputs, "manifest": manifest.name, "com": com, "copied": copied,
            "warnings": warnings, "observation": obs}
