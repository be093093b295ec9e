"""Failure classes of a stage, and the exit codes that carry them across the worker contract.

The orchestrator decides retries from the exit code alone, so the classes are few and stable:

* ``input``      (exit 2): bad parameters or input data. Re-running cannot help: never retried.
* ``science``    (exit 3): CASA or the science failed (a task raised, logged SEVERE, or CASA
  aborted). Retried only if the stage's policy says so.
* ``transient``  (exit 4): infrastructure trouble (disk full, I/O error, network). Retried with
  back-off.
* ``resource``   (exit 137 / SIGKILL, never raised by the worker itself): the process was killed,
  in practice by the out-of-memory killer. Retried with more memory.
"""

from __future__ import annotations

import errno
import signal

EXIT_OK = 0
EXIT_INPUT = 2
EXIT_SCIENCE = 3
EXIT_TRANSIENT = 4
EXIT_KILLED = 128 + signal.SIGKILL  # how a shell and Kubernetes report a SIGKILLed process

FAILURE_CLASSES = ("input", "science", "transient", "resource")


class StageError(Exception):
    """Base of the failures a stage reports on purpose."""

    failure_class = "science"
    exit_code = EXIT_SCIENCE


class InputError(StageError):
    """Bad input: a parameter, a file, an archive. Says which and what was expected."""

    failure_class = "input"
    exit_code = EXIT_INPUT


class ScienceError(StageError):
    """The processing itself failed (CASA raised or logged SEVERE, or a science check failed)."""


class CasaTaskError(ScienceError):
    """A CASA task raised, returned a failure, or logged SEVERE messages."""


class TransientError(StageError):
    """Infrastructure trouble worth retrying."""

    failure_class = "transient"
    exit_code = EXIT_TRANSIENT


# OS errors that say "the machine had a problem", not "your input is wrong".
_TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.ETIMEDOUT, errno.ECONNRESET,
                     errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ESTALE,
                     errno.EAGAIN, errno.EMFILE, errno.ENFILE}


def is_transient_os_error(exc: BaseException) -> bool:
    """An OS error that says "the machine had a problem" (disk full, I/O error, ...)."""
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


def classify(exc: BaseException) -> str:
    """The failure class of any exception raised while running a stage."""
    if isinstance(exc, StageError):
        return exc.failure_class
    if isinstance(exc, MemoryError):
        return "resource"
    if is_transient_os_error(exc):
        return "transient"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "transient"
    # Anything else escaped from CASA or from our own processing: a science failure.
    return "science"


def exit_code_for(failure_class: str) -> int:
    return {"input": EXIT_INPUT, "science": EXIT_SCIENCE, "transient": EXIT_TRANSIENT,
            "resource": EXIT_KILLED}[failure_class]


def class_from_returncode(returncode: int) -> str | None:
    """The failure class of a finished worker process (a negative code is a signal, as
    subprocess reports it). ``None`` means success."""
    if returncode == EXIT_OK:
        return None
    if returncode == EXIT_INPUT:
        return "input"
    if returncode == EXIT_TRANSIENT:
        return "transient"
    if returncode in (-signal.SIGKILL, EXIT_KILLED):
        return "resource"
    # EXIT_SCIENCE, other signals (SIGABRT from a casacore assertion, SIGSEGV) and anything else.
    return "science"
