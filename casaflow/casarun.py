"""Calling CASA tasks from a stage: logged, recorded, and failing loudly.

CASA tasks do not always raise when they fail: many log a SEVERE message and return. Every task
call therefore goes through :meth:`Casa.task`, which

* records the call as one line in the workspace's ``casa_commands.log`` (as the pipeline does),
* runs it with CASA's log going to the stage's log file in the workspace,
* reads the log lines the call produced and raises :class:`CasaTaskError` on any SEVERE line that
  is not known to be harmless, or when the task returns ``False`` (CASA's old way of failing).

casatools *tools* log SEVERE without raising just as often, so :meth:`Casa.tool` hands out a
checked tool: every method call that returns normally is followed by the same log check
(:meth:`Casa.check_tool_log`). A tool method that raises propagates its own exception unchanged
(callers catch ``RuntimeError`` where a tool failing is an expected answer).

"Harmless" is a short list of whole known messages from a known origin (:data:`BENIGN_SEVERE`),
never a substring: a real failure that merely mentions ``TAI_UTC`` still fails.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from .casaenv import import_casa
from .errors import CasaTaskError

log = logging.getLogger("casaflow.casa")

# SEVERE messages CASA 6.7 prints on every run that say nothing about the task at hand:
# (origin, whole message). The casadata wheel's leap-second table is older than the data, and
# casacore says so in three lines (the 2nd and 3rd are continuations, origin marked "+").
BENIGN_SEVERE = frozenset({
    ("MeasTable::dUTC(Double)", "Leap second table TAI_UTC seems out-of-date."),
    ("MeasTable::dUTC(Double)", "Until the table is updated (see the CASA documentation or your system admin),"),
    ("MeasTable::dUTC(Double)", "times and coordinates derived from UTC could be wrong by 1s or more."),
})
_ORIGIN_FUNC = re.compile(r"^(\S+(?:\([^)]*\))?)")


def is_benign(line: str) -> bool:
    """Is this SEVERE log line one of :data:`BENIGN_SEVERE`, whole message and origin?"""
    fields = line.rstrip("\r\n").split("\t", 3)
    if len(fields) != 4:
        return False
    origin, message = fields[2], fields[3].strip()
    func = _ORIGIN_FUNC.match(origin)
    return bool(func) and (func.group(1), message) in BENIGN_SEVERE


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
        return [ln for ln in lines if not is_benign(ln)]

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
        if ret is False:
            raise CasaTaskError(f"CASA task {name} returned False (failed without raising)")
        log.info("CASA %s done in %.1f s", name, time.monotonic() - t0)
        return ret

    def tool(self, name: str):
        """A fresh casatools tool instance (``image``, ``table``, ``msmetadata``, ...), checked:
        a method call that logs SEVERE (benign messages excepted) raises :class:`CasaTaskError`."""
        return CheckedTool(self, name, getattr(self.tools, name)())

    def check_tool_log(self, offset: int, what: str) -> None:
        """Raise if a tool operation since ``offset`` logged SEVERE (tools don't always raise)."""
        severe = self.severe_since(offset)
        if severe:
            raise CasaTaskError(f"{what} logged SEVERE: " + " | ".join(s.split('\t')[-1] for s in severe[-5:]))

    @property
    def offset(self) -> int:
        return self._log_offset()


class CheckedTool:
    """A casatools tool whose every method call is followed by :meth:`Casa.check_tool_log`."""

    __slots__ = ("_casa", "_name", "_tool")

    def __init__(self, casa: Casa, name: str, tool):
        self._casa, self._name, self._tool = casa, name, tool

    def __getattr__(self, attr: str):
        value = getattr(self._tool, attr)
        if not callable(value) or attr.startswith("_"):
            return value
        casa, what = self._casa, f"CASA tool {self._name}.{attr}"

        def checked(*args, **kwargs):
            offset = casa.offset
            ret = value(*args, **kwargs)
            casa.check_tool_log(offset, what)
            return ret

        checked.__name__ = attr
        return checked

    def __repr__(self) -> str:
        return f"<checked {self._name} tool>"
