"""VLASS-SE-CUBE imaging heuristics (reference §4.3, §4.4, §5.2) and their overrides.

The production values are the defaults. Any of them can be set in ``CCIP_parameter.list`` (that is
how the tests image 128x128 planes instead of 12500x12500).
"""

from __future__ import annotations

# The CCIP recipe's stage numbers: they become the s<N>_0. prefix of image names.
CCIP_STAGE = {"importdata": 1, "editimlist_seip": 2, "transformimagedata": 3, "restorepims": 4,
              "flagtargetsdata": 5, "editimlist_cube": 6, "makeimages": 7, "pbcor": 8, "makermsimages": 9,
              "makecutoutimages": 10, "analyzestokescubes": 11, "exportvlassdata": 12}
MAKEIMAGES_LABEL = f"{CCIP_STAGE['makeimages']}_0"
IMAGING_MODE = "VLASS-SE-CUBE"
DEFAULT_SPW = [str(i) for i in range(2, 18)]
SE_SEARCH_BUFFER_ARCSEC = 1000.0   # editimlist field search: 1800" + buffer
FLAGSTAT_HALF_WIDTH_ARCSEC = 1800.0  # flag statistics box: no buffer
FIELD_NAME_PATTERNS = ("0*", "1*", "2*", "T*")

DEFAULTS = {
    "imsize": [12500, 12500],
    "cell": "0.6arcsec",
    "niter": 20000,
    "cyclefactor": 3.0,
    "nmajor": 220,
    "scales": [0, 5, 12],
    "smallscalebias": 0.4,
    "cycleniter": 500,
    "cycleniter_final_image_nomask": 100,
    "nsigma_iter0": 2.0,
    "nsigma": 3.0,
    "nsigma_final": 4.5,
    "pblimit": 0.1,
    "pbmask": 0.4,
    "psfcutoff": 0.5,
    "rotatepastep": 5.0,
    "pointingoffsetsigdev": [300, 30],
    "robust": 1.0,
    "weighting": "briggs",
    "uvrange": "<12km",
    "uvtaper": "",
    "stokes": "IQUV",
    "deconvolver": "mtmfs",
    "nterms": 1,
    "gridder": "mosaic",
    "datacolumn": "corrected",
    "threshold": "0Jy",
}

# Plane rejection (reference §4.3 and §5.3): task inputs, not parameter-list keys.
PLANE_REJECT_MS = {"apply": True, "exclude_spw": "", "flagpct_thresh": 0.9, "nfield_thresh": 12}
PLANE_REJECT_IM = {"apply": True, "exclude_spw": "", "flagpct_thresh": 0.8, "beamdev_thresh": 0.2}


def imaging_params(plist: dict) -> dict:
    """The defaults overridden by whatever the parameter list sets."""
    out = dict(DEFAULTS)
    for key in DEFAULTS:
        if key in plist:
            out[key] = plist[key]
    if isinstance(out["imsize"], int):
        out["imsize"] = [out["imsize"], out["imsize"]]
    if isinstance(out["cell"], (list, tuple)):
        out["cell"] = str(out["cell"][0])
    return out


def merge_reject(defaults: dict, given) -> tuple[dict, list[str]]:
    """A bool sets ``apply``; a dict overrides known keys; unknown keys are warned about."""
    cfg = dict(defaults)
    warnings = []
    if isinstance(given, str) and given.strip().lower() in ("true", "false"):
        given = given.strip().lower() == "true"
    if isinstance(given, bool):
        cfg["apply"] = given
    elif isinstance(given, dict):
        for k, v in given.items():
            if k in cfg:
                cfg[k] = v
            else:
                warnings.append(f"plane rejection: unknown key {k!r} ignored")
    return cfg, warnings
