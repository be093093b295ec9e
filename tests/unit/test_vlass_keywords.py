"""VLASS keyword values, comments and manifest names as the reference writes them (no CASA):
imaging.get_vlass_image_type, exportvlassdata._update_vlass_fits_header, manifest.PipelineManifest."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from casaflow.vlass import export, fitsheader
from casaflow.vlass.planes import image_type, rejection_message

R = "s7_0.VLASS2.2.se.T23t09.J232327+502432.v1.spw2.IQUV.iter3"


@pytest.mark.parametrize("suffix,expected", [
    (".image.pbcor.tt0.subim", "INTENSITY_PBCOR_TT0"),
    (".image.pbcor.tt0.rms.subim", "RMS_TT0"),
    (".image.pbcor.tt0", "INTENSITY_PBCOR_TT0"),
    (".image.pbcor.tt0.rms", "RMS_TT0"),
    (".psf.tt0", "PSF_TT0"),
    (".weight.tt1", "WEIGHT_TT1"),
    (".alpha.error", "ALPHAERR"),
    (".alpha", "ALPHA"),
    (".image.tt0", "UNKNOWN"),                  # the reference has no type for the plain image
    (".image.residual.pbcor.tt0", "UNKNOWN"),   # nor for the pb-corrected residual
    (".pb.tt0", "UNKNOWN"),
])
def test_image_type_as_the_reference(suffix, expected):
    assert image_type(f"/ws/{R}{suffix}") == expected


def _fits(tmp_path, name, keys):
    path = tmp_path / name
    hdu = fits.PrimaryHDU(np.zeros((2, 2), dtype=np.float32))
    for k, v in keys.items():
        hdu.header[k] = v
    hdu.writeto(path)
    return path


def test_comments_name_the_tt0_images(tmp_path):
    path = _fits(tmp_path, "VLASS2.2.se.T23t09.J232327+502432.v1.spw2.IQU.iter3.image.pbcor.tt0.subim.fits",
                 {"VLASSITY": "INTENSITY_PBCOR_TT0", "VLASSRMS": 1e-4, "VLASSPK": 0.05})
    missing = fitsheader.keyword_comments(path)
    h = fits.getheader(path)
    assert h.comments["VLASSRMS"] == "Median rms calculated from RMS_TT0 (I)"
    assert h.comments["VLASSPK"] == "Peak flux density of INTENSITY_PBCOR_TT0 (I)"
    assert h.comments["VLASSITY"] == "VLASS image type"
    assert "VLASSRJ" in missing and "VLASSPK" not in missing


def test_comments_without_a_taylor_term_in_the_name(tmp_path):
    path = _fits(tmp_path, "x.image.fits", {"VLASSRMS": 1e-4, "VLASSPK": 0.05})
    fitsheader.keyword_comments(path)
    h = fits.getheader(path)
    assert h.comments["VLASSRMS"] == "Median RMS calculated from RMS image"
    assert h.comments["VLASSPK"] == "Peak flux density of INTENSITY_PBCOR image"


def test_manifest_names_the_ous(tmp_path):
    from casaflow import pipeline_manifest

    path = export.write_manifest(tmp_path, "products", ["a.fits"], ["CCIP_parameter.list"], "6.7", "uid___A001_X1_X2")
    root = pipeline_manifest.read(path)
    assert root.tag == "piperesults" and root.get("name") == "uid___A001_X1_X2"
    ous = root.find("ous")
    assert ous.get("name") == "uid___A001_X1_X2"
    for tag in ("weblog", "casa_cmdlog"):
        el = ous.find(tag)
        assert list(el.attrib) == ["name", "level", "ous", "package", "datatype", "format"]
        assert el.get("ous") == "uid___A001_X1_X2"
    assert [c.tag for c in ous] == ["casaversion", "pipeline_version", "procedure_name", "weblog", "casa_cmdlog",
                                    "image", "parameter_list"]


@pytest.mark.parametrize("rejected, imaged, text", [
    # the reference's wording (hif/tasks/makeimages/qa.py): 'are' only for more than one plane
    (0, 4, "0 of 4 imaged planes is rejected."),
    (1, 4, "1 of 4 imaged planes is rejected."),
    (3, 4, "3 of 4 imaged planes are rejected."),
])
def test_rejection_message_worded_as_the_reference(rejected, imaged, text):
    assert rejection_message(rejected, imaged) == text
