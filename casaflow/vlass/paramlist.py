"""VLASS parameter lists (``SEIP_parameter.list``, ``CCIP_parameter.list``), reference §4.1.

One ``key = value`` per line, value a Python literal. Unlike the reference, which logs an
unreadable file and carries on with defaults, a missing file or a malformed line is an input error
naming the file, the line and what was expected: a survey must not be imaged with guessed
parameters.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

from .. import paths
from ..errors import InputError

SPW_GROUP_RE = re.compile(r"^\d+(,\d+)*$")


def _strip_comment(value: str) -> str:
    """Drop a trailing ``# comment`` outside string literals (the reference's tokenizer does)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(value).readline))
    except (tokenize.TokenError, IndentationError):
        return value
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            return value[: tok.start[1]].rstrip()
    return value


def parse(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"parameter list {path}: no such file")
    out: dict = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        if raw.startswith("#") or "=" not in raw:
            if raw.strip() and not raw.startswith("#"):
                raise InputError(f"parameter list {path.name}, line {lineno}: expected 'key = value', "
                                 f"got {raw.strip()!r}")
            continue
        key, value = raw.split("=", 1)
        key, value = key.strip(), _strip_comment(value.strip())
        if not key.isidentifier():
            raise InputError(f"parameter list {path.name}, line {lineno}: {key!r} is not a parameter name")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise InputError(f"parameter list {path.name}, line {lineno}: value of {key!r} is not a "
                             f"Python literal (strings must be quoted): {value!r}") from None
    return out


def require(params: dict, path: Path, *keys: str) -> None:
    missing = [k for k in keys if not params.get(k)]
    if missing:
        raise InputError(f"parameter list {Path(path).name}: missing required parameter(s) {missing}")


def require_name(params: dict, path: Path, key: str) -> str:
    """``key`` names files in the workspace (an image name root): a plain name, no directories,
    no ``..`` (casaflow.paths)."""
    value = params.get(key)
    where = f"parameter list {Path(path).name}: {key!r}"
    if not isinstance(value, str):
        raise InputError(f"{where}: expected a quoted name, got {value!r}")
    return paths.relative_name(value, where, single=True)


def validate_spw_groups(spw, path: Path) -> list[str]:
    """The cube-mode ``spw``: a list of spw ids or comma-separated groups of ids.

    Channel selections ('2:0~15') and ranges ('1~4') are refused naming the element; the reference
    fails late on them with an unrelated ValueError.
    """
    name = Path(path).name
    if isinstance(spw, str):
        raise InputError(f"parameter list {name}: spw must be a list of spw groups such as ['2','3,4'], "
                         f"got the string {spw!r}")
    if not isinstance(spw, (list, tuple)) or not spw:
        raise InputError(f"parameter list {name}: spw must be a non-empty list of spw groups, got {spw!r}")
    groups = []
    for element in spw:
        text = str(element).replace(" ", "")
        if ":" in text:
            raise InputError(f"parameter list {name}: spw element {element!r} has a channel selection; "
                             f"only whole spws are allowed (e.g. '2' or '2,3,4')")
        if "~" in text:
            raise InputError(f"parameter list {name}: spw element {element!r} uses range syntax; "
                             f"list the spws explicitly (e.g. '1,2,3,4')")
        if not SPW_GROUP_RE.match(text):
            raise InputError(f"parameter list {name}: spw element {element!r} is not a spw id or a "
                             f"comma-separated list of spw ids")
        groups.append(text)
    dupes = sorted({g for g in groups if groups.count(g) > 1})
    if dupes:
        raise InputError(f"parameter list {name}: spw group(s) {dupes} listed twice")
    return groups
