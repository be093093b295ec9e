"""The run's context: small JSON records stages leave in ``<workspace>/context/`` for later stages.

This is the workspace-side equivalent of the pipeline context; only these files, never the
orchestrator's XCom, carry what a later stage needs (XCom carries the small result JSON).
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import atomic
from ..errors import InputError


def path(workspace: Path, name: str) -> Path:
    return Path(workspace) / "context" / f"{name}.json"


def write(workspace: Path, name: str, data) -> Path:
    target = path(workspace, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(target, json.dumps(data, indent=2, sort_keys=True))
    return target


def read(workspace: Path, name: str, needed_by: str):
    target = path(workspace, name)
    try:
        return json.loads(target.read_text())
    except FileNotFoundError:
        raise InputError(f"{needed_by} needs {target.relative_to(workspace)}, written by an earlier "
                         f"stage; run the workflow's stages in order") from None
