"""Calling CASA tasks from a stage: logged, recorded, and failing loudly.

CASA tasks do not always raise when they fail: many log a SEVERE message and return. Every task
call therefore goes through :meth:`Casa.task`, which

* records the call as one line in the workspace's ``casa_commands.log`` (as the pipeline does),
* runs it with CASA's log going to the stage's log file in the workspace,
* reads the log lines the call produced and raises :class:`CasaTaskError` on any SEVERE line that
  is not known to be harmless.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from .casaenv import import_casa
from .errors import CasaTaskError

log = logging.getLogger("casaflow.casa")

# SEVERE lines CASA 6.7 prints on every run that say nothing about the task at hand.
BENIGN_SEVERE = (
    re.compile(r"TAI_UTC"),                       # leap-second table age in the casadata wheel
    re.compile(r"out-of-date", re.IGNORECASE),     # same message, other wording
    re.compile(r"Until the table is updated"),      # ... its continuation lines
    re.compile(r"derived from UTC could be wrong"),
)


def _fmt(value) -> str:
    return repr(value)


class Casa:
    """One per stage process. ``casa.task("tclean", vis=..., ...)`` and ``casa.tool("image")``."""

    def __init__(self, workspace: Path, stage: str, log_path: Path):
        self.workspace = workspace
        self.stage = stage
        self.log_path = log_path
        self.commands_path = workspace / "casa_commands.log"
        self.tools, self.tasks = import_casa()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.tasks.casalog.setlogfile(str(log_path))
        self.tasks.casalog.origin(f"casaflow.{stage}")
        self.calls: list[str] = []

    # -- log inspection -------------------------------------------------------------------
    def _log_offset(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def severe_since(self, offset: int) -> list[str]:
        """SEVERE lines written to the stage's CASA log after ``offset``, benign ones excepted."""
        if not self.log_path.exists():
            return []
        with open(self.log_path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", "replace")
        lines = [ln for ln in text.splitlines() if "\tSEVERE\t" in ln or " SEVERE " in ln]
        return [ln for ln in lines if not any(p.search(ln) for p in BENIGN_SEVERE)]

    # -- calls ----------------------------------------------------------------------------
    def task(self, name: str, **kwargs):
        func = getattr(self.tasks, name)
        call = f"{name}(" + ", ".join(f"{k}={_fmt(v)}" for k, v in kwargs.items()) + ")"
        self.calls.append(call)
        with open(self.commands_path, "a") as fh:
            fh.write(f"# {self.stage} {time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}\n{call}\n")
        log.info("CASA %s", call if len(call) < 400 else call[:400] + " ...")
        offset = self._log_offset()
        t0 = time.monotonic()
        try:
            ret = func(**kwargs)
        except Exception as exc:  # CASA raises RuntimeError, AssertionError, ValueError, ...
            severe = self.severe_since(offset)
            detail = ("; CASA log: " + " | ".join(s.split("\t")[-1] for s in severe[-3:])) if severe else ""
            raise CasaTaskError(f"CASA task {name} failed: {exc}{detail}") from exc
        severe = self.severe_since(offset)
        if severe:
            msgs = " | ".join(s.split("\t")[-1].strip() for s in severe[-5:])
            raise CasaTaskError(f"CASA task {name} logged {len(severe)} SEVERE message(s): {msgs}")
        log.info("CASA %s done in %.1f s", name, time.monotonic() - t0)
        return ret

    def tool(self, name: str):
        """A fresh casatools tool instance (``image``, ``table``, ``msmetadata``, ...)."""
        return getattr(self.tools, name)()

    def check_tool_log(self, offset: int, what: str) -> None:
        """Raise if a tool operation since ``offset`` logged SEVERE (tools don't always raise)."""
        severe = self.severe_since(offset)
        if severe:
            raise CasaTaskError(f"{what} logged SEVERE: " + " | ".join(s.split('\t')[-1] for s in severe[-5:]))

    @property
    def offset(self) -> int:
        return self._log_offset()
