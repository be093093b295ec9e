"""A flag template (``<vis root>.flagtargetstemplate.txt``, reference ``hifv_flagtargetsdata``):
flagdata ``list``-mode commands, one per line, ``#`` comments and blank lines ignored.

The template comes from outside the run, so it is checked before flagdata sees it: every line
must be ``key='value'`` pairs with known flagging keys. A command that would read or write files
(``inpfile``, ``outfile``, ``savepars`` ...), act on another MS (``vis``) or change what flagdata
does with the flags (``action``, ``flagbackup``) is an input error naming the line.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from ..errors import InputError

MODES = {"manual", "clip", "quack", "shadow", "elevation", "tfcrop", "rflag", "extend", "unflag"}
KEYS = {
    "mode", "reason", "field", "spw", "antenna", "timerange", "correlation", "scan", "intent", "array",
    "uvrange", "observation", "feed", "autocorr",
    # mode parameters
    "datacolumn", "clipminmax", "clipoutside", "channelavg", "chanbin", "timeavg", "timebin", "clipzeros",
    "quackinterval", "quackmode", "quackincrement", "tolerance", "addantenna", "lowerlimit", "upperlimit",
    "ntime", "combinescans", "timecutoff", "freqcutoff", "timefit", "freqfit", "maxnpieces", "flagdimension",
    "usewindowstats", "halfwin", "extendflags", "winsize", "timedev", "freqdev", "timedevscale",
    "freqdevscale", "spectralmax", "spectralmin", "extendpols", "growtime", "growfreq", "growaround",
    "flagneartime", "flagnearfreq",
}
_PAIR = re.compile(r"^([a-z]+)=(.*)$", re.DOTALL)


def commands(path: Path) -> list[str]:
    """The template's flagging commands, validated; raises :class:`InputError` naming the file and line."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"flag template {path.name}: cannot be read as text ({exc})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.strip().startswith("#"):
            continue
        where = f"flag template {path.name} line {n}"
        try:
            tokens = shlex.split(line, comments=False, posix=True)
        except ValueError as exc:
            raise InputError(f"{where}: {exc} in {line!r}") from None
        keys = {}
        for token in tokens:
            m = _PAIR.match(token)
            if not m:
                raise InputError(f"{where}: expected key='value' pairs, got {token!r}")
            keys[m.group(1)] = m.group(2)
        unknown = sorted(set(keys) - KEYS)
        if unknown:
            raise InputError(f"{where}: {', '.join(unknown)} not allowed in a flag template "
                             f"(selection and flagging-mode keys only)")
        mode = keys.get("mode", "manual")
        if mode not in MODES:
            raise InputError(f"{where}: mode {mode!r} is not one of {', '.join(sorted(MODES))}")
        out.append(line.strip())
    return out
