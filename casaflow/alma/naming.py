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


# Intent codes in image names: ``_known_intents`` in the reference's
# pipeline/infrastructure/filenamer.py. ``filenamer.Image.intent`` writes an intent outside this
# table as it is (``DIFFGAINREF``, ``FLUX``), so an upper-case intent is also an intent part.
INTENT_CODES = {"bp": "BANDPASS", "flux": "AMPLITUDE", "ph": "PHASE", "sci": "TARGET", "chk": "CHECK",
                "pol": "POLARIZATION", "pang": "POLANGLE", "plk": "POLLEAKAGE"}
CODE_FOR_INTENT = {v: k for k, v in INTENT_CODES.items()}
CAL_INTENTS = ("BANDPASS", "PHASE", "AMPLITUDE", "CHECK", "POLARIZATION", "POLANGLE", "POLLEAKAGE", "FLUX",
               "DIFFGAINREF", "DIFFGAINSRC")

# ``calintents=''``: the reference's default set (hif exportdata ``_export_images``).
DEFAULT_CALINTENTS = ("PHASE", "BANDPASS", "CHECK", "AMPLITUDE", "POLARIZATION")

# Datatype part (PIPE-1710, hif_makeimlist): 'regcal' or 'selfcal'; absent in older names.
DATATYPES = ("regcal", "selfcal")

# The one pattern of a pipeline image name, in ``FileNameComponentBuilder.build`` order:
# <prefix>.s<stage>_<sub>.<source>_<intent>.[virt]spw<ids>[.<band>].<specmode>[.<datatype>].<stokes>
# .iter<N>.<product>. <prefix> is the OUS status uid, an EB name or a session name.
IMAGE_RE = re.compile(
    r"^(?P<prefix>[^.]+)\.s(?P<stage>\d+)_(?P<sub>\d+)\.(?P<source>.+)_(?P<code>bp|ph|flux|sci|chk|pol|pang|plk|[A-Z]+)"
    r"\.(?P<virt>virt)?spw(?P<spw>\d+(?:_\d+)*)(?:\.(?P<band>[A-Za-z0-9]+))??"
    r"\.(?P<specmode>mfs|cont|cube|repBW)(?:\.(?P<datatype>regcal|selfcal))?\.(?P<stokes>[IQUVXYRLPOA]+)"
    r"\.iter(?P<iter>\d+)\.(?P<product>(?:image|pb|mask|alpha|psf|residual|model|sumwt|cleanmask|weight)"
    r"(?:\.tt\d)?(?:\.pbcor|\.error)?)$")
# What a pipeline image looks like, loosely: a stage part, an iteration and a product. A name
# like this that IMAGE_RE does not match is warned about, never silently skipped.
LOOKS_LIKE_IMAGE_RE = re.compile(r"\.s\d+_\d+\..+\.iter\d+\.(image|pb|mask|alpha)")


def parse_image_name(name: str) -> dict | None:
    """The parts of a pipeline image name (current or pre-PIPE-1710), or None if ``name`` is not one."""
    m = IMAGE_RE.match(name)
    if not m:
        return None
    d = m.groupdict()
    d["sourcetype"] = INTENT_CODES.get(d["code"], d["code"])
    d["stage"], d["sub"], d["iter"] = int(d["stage"]), int(d["sub"]), int(d["iter"])
    tt = re.search(r"\.tt(\d)", d["product"])
    d["tt"] = int(tt.group(1)) if tt else None
    d["pbcor"] = d["product"].endswith(".pbcor")
    d["kind"] = d["product"].split(".")[0]
    return d


def looks_like_image(name: str) -> bool:
    return bool(LOOKS_LIKE_IMAGE_RE.search(name))


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
