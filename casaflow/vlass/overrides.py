"""Per-group tclean overrides (``group_overrides``): what a user may change, and how.

A value given for a spw group replaces the heuristic of that name in every tclean call of the
group's imaging sequence (iter0..iter3), including the per-iteration heuristics (``niter``,
``nsigma``, ``cycleniter``, ``threshold``, ``mask`` ...). One exception keeps the sequence what it
is: iter0 is the dirty image, so its ``niter`` stays 0.

Parameters that choose the data or name the outputs would image other data or write products the
later stages cannot find; they are refused before any work. So are the ones that steer the
iteration sequence itself or write into the shared MS (``savemodel``: the groups image one MS side
by side). Pure Python: the Airflow side validates a trigger with it too.
"""

from __future__ import annotations

import re

from ..errors import InputError

# Choose the data: another selection would image other visibilities. (uvrange is a VLASS imaging
# heuristic, not a data choice, and may be overridden.)
DATA_SELECTION = ("vis", "selectdata", "field", "spw", "timerange", "antenna", "scan",
                  "observation", "intent", "datacolumn")
# Name or shape the outputs the later stages read (names, Stokes planes, Taylor terms, spectral axis).
OUTPUTS = ("imagename", "stokes", "specmode", "nterms", "deconvolver", "nchan", "start", "width")
# Steer the iteration sequence or write outside the group's images.
SEQUENCE = ("restart", "calcpsf", "calcres", "restoration", "savemodel", "interactive", "parallel",
            "outlierfile", "startmodel", "cfcache", "vptable", "pbcor")
REFUSED = frozenset(DATA_SELECTION + OUTPUTS + SEQUENCE)

GROUP_KEY = re.compile(r"^[0-9]+(,[0-9]+)*$")
# ``mask`` may be overridden with a CASA region expression, never with a file: an override names no
# path (inputs come only from where the deployment allows, through the run's inputs).
REGION = re.compile(r"^\s*(#CRTF|circle|box|centerbox|rotbox|poly|ellipse|annulus|rectangle)\b", re.IGNORECASE)


def validate(overrides, groups=None, known=None) -> dict[str, dict]:
    """Check ``{"3,4": {"niter": 500}}``; return it as a plain dict. ``groups`` (when known) are the
    run's spw groups, ``known`` the names tclean accepts. Raises :class:`InputError` naming every
    offending group and parameter."""
    if overrides in (None, ""):
        return {}
    if not isinstance(overrides, dict):
        raise InputError(f"group_overrides: expected an object such as {{\"3,4\": {{\"niter\": 500}}}}, "
                         f"got {type(overrides).__name__}")
    problems = []
    for group, params in overrides.items():
        if not isinstance(group, str) or not GROUP_KEY.match(group):
            problems.append(f"group {group!r} is not a spw group such as '2' or '3,4'")
            continue
        if groups is not None and group not in groups:
            problems.append(f"group {group!r} is not one of the run's spw groups ({', '.join(groups)})")
        if not isinstance(params, dict):
            problems.append(f"group {group!r}: expected an object of tclean parameters, "
                            f"got {type(params).__name__}")
            continue
        refused = sorted(k for k in params if k in REFUSED)
        if refused:
            problems.append(f"group {group!r}: {', '.join(refused)} choose the data or the outputs of the "
                            f"imaging and cannot be overridden")
        mask = params.get("mask")
        if mask not in (None, "") and not (isinstance(mask, str) and REGION.match(mask) and "/" not in mask):
            problems.append(f"group {group!r}: mask must be a region expression such as "
                            f"'circle[[10h00m00s, +02d00m00s], 30arcsec]', got {mask!r}")
        if known is not None:
            unknown = sorted(k for k in params if k not in known and k not in REFUSED)
            if unknown:
                problems.append(f"group {group!r}: {', '.join(unknown)} is not a tclean parameter")
    if problems:
        raise InputError("group_overrides: " + "; ".join(problems))
    return {g: dict(p) for g, p in overrides.items()}


def apply(call: dict, overrides: dict, iteration: int) -> dict:
    """One tclean call's arguments with the group's overrides applied (see the module doc)."""
    out = dict(call)
    out.update(overrides)
    if iteration == 0:
        out["niter"] = 0
    return out
