"""ALMA names: archive uids, pipeline image names, intents (reference-pipeline.md §7).

Pure functions, no CASA: the exporter, the packager and the simulator all name things here.
"""

from __future__ import annotations

import re

from ..errors import InputError

UID_RE = re.compile(r"^uid://(A\d{3})/(X[0-9a-fA-F]+)/(X[0-9a-fA-F]+)$")
UID_FS_RE = re.compile(r"^uid___(A\d{3})_(X[0-9a-fA-F]+)_(X[0-9a-fA-F]+)$")


def uid_to_fs(uid: str) -> str:
    """``uid://A001/X1/X2`` -> ``uid___A001_X1_X2`` (how uids appear in file names)."""
    if UID_FS_RE.match(uid):
        return uid
    m = UID_RE.match(uid)
    if not m:
        raise InputError(f"{uid!r} is not an ALMA uid (expected uid://A001/X.../X...)")
    return "uid___" + "_".join(m.groups())


def fs_to_uid(name: str) -> str:
    m = UID_FS_RE.match(name)
    if not m:
        raise InputError(f"{name!r} is not a file-system uid (expected uid___A001_X..._X...)")
    return "uid://" + "/".join(m.groups())


# Calibrator intents as the pipeline's image lists name them (the ``sourcetype`` of an image),
# and the image-name suffix ``hif_makeimages`` gives each.
CAL_INTENTS = ("BANDPASS", "PHASE", "FLUX", "AMPLITUDE", "CHECK", "POLARIZATION", "POLANGLE",
               "POLLEAKAGE", "DIFFGAINREF", "DIFFGAINSRC")
INTENT_SUFFIX = {"bp": "BANDPASS", "ph": "PHASE", "flux": "FLUX", "amp": "AMPLITUDE", "check": "CHECK",
                 "pol": "POLARIZATION", "polang": "POLANGLE", "polleak": "POLLEAKAGE",
                 "dgref": "DIFFGAINREF", "dgsrc": "DIFFGAINSRC", "sci": "TARGET"}
SUFFIX_FOR_INTENT = {v: k for k, v in INTENT_SUFFIX.items()}

# The reference's default (``calintents=''``) is PHASE,BANDPASS,CHECK,AMPLITUDE,POLARIZATION; the
# task documentation says BANDPASS,PHASE,FLUX. Both sets are exported by default: FLUX images
# exist in data calibrated before AMPLITUDE replaced it, and nothing is lost by exporting them.
DEFAULT_CALINTENTS = ("PHASE", "BANDPASS", "FLUX", "CHECK", "AMPLITUDE", "POLARIZATION")

# <oussid>.s<stage>_<sub>.<source>_<suffix>.spw<ids>.<specmode>.<stokes>.iter<N>.image[.pbcor]
IMAGE_RE = re.compile(
    r"^(?P<prefix>.+?)\.s(?P<stage>\d+)_(?P<sub>\d+)\.(?P<source>.+)_(?P<suffix>[a-z]+)"
    r"\.spw(?P<spw>[0-9_]+)\.(?P<specmode>mfs|cont|cube|repBW)\.(?P<stokes>I|IQUV|IQU|XXYY|RRLL)"
    r"\.iter(?P<iter>\d+)\.image(?P<tt>\.tt\d)?(?P<pbcor>\.pbcor)?$")


def parse_image_name(name: str) -> dict | None:
    """The parts of a pipeline image name, or None if ``name`` is not one."""
    m = IMAGE_RE.match(name)
    if not m or m["suffix"] not in INTENT_SUFFIX:
        return None
    d = m.groupdict()
    d["sourcetype"] = INTENT_SUFFIX[d["suffix"]]
    d["stage"], d["sub"], d["iter"] = int(d["stage"]), int(d["sub"]), int(d["iter"])
    d["multiterm"] = d["tt"] is not None
    return d


def fitsname(imagename: str, version: int = 1) -> str:
    """The reference's FITS name rule (§7.4), on a base name (no directory)."""
    name = re.sub(r"\.s\d+_\d+\.", ".", imagename, count=1)
    name = re.sub(r"\.iter\d+\.image", "", name)
    name = re.sub(r"\.iter\d+\.(mask|alpha|pb)", r".\1", name)
    if version > 1:
        return f"{name}.v{version}.fits"
    return f"{name}.fits"


def expand_intents(spec: str) -> list[str]:
    """``calintents``: '' (the default set) or a comma list of intent names or wildcards
    (``*PHASE*``). A name or pattern that matches no calibrator intent is an input error."""
    import fnmatch

    if not spec.strip():
        return list(DEFAULT_CALINTENTS)
    out: list[str] = []
    for raw in spec.split(","):
        pat = raw.strip().upper()
        if not pat:
            continue
        matched = [i for i in CAL_INTENTS if fnmatch.fnmatchcase(i, pat)]
        if not matched:
            raise InputError(f"parameter 'calintents': {raw.strip()!r} matches no calibrator intent; "
                             f"known intents: {', '.join(CAL_INTENTS)}")
        out += [i for i in matched if i not in out]
    return out


def session_names(sessions: list[str], nvis: int) -> list[str]:
    """Per-MS session list (§7.3): MSs beyond the list's end go to the last session."""
    if not sessions:
        return ["session_1"] * nvis
    return [sessions[min(i, len(sessions) - 1)] for i in range(nvis)]
