"""What a stage cost, measured by the worker itself, and the totals of a run or a campaign.

A stage's cost (in its ``result.json`` under ``cost``):

* ``wall_seconds``: elapsed time of the stage (monotonic clock).
* ``cpu_seconds``: user + system CPU time of the worker process *and* of every child process it
  waited for (``getrusage(RUSAGE_SELF)`` + ``getrusage(RUSAGE_CHILDREN)``), during the stage. A
  child still running when the stage ends (none should be) is not counted.
* ``peak_rss_bytes``: the larger of the worker process's own peak resident set (over the process's
  whole life: the ``casa-worker`` process runs exactly one stage; on Linux ``VmHWM`` of
  ``/proc/self/status``, because ``ru_maxrss`` of RUSAGE_SELF carries over the peak of the process
  that forked it across ``exec``: an Airflow task process of 1 GB would make every stage it starts
  look 1 GB large) and the peak of the *largest single*
  child: Linux reports ``ru_maxrss`` of RUSAGE_CHILDREN as the maximum over the children, not their
  sum, so two children of 1 GB each that ran together show as 1 GB. Both parts are kept
  (``peak_rss_self_bytes``, ``peak_rss_children_bytes``).
* ``resource_class``: the stage's class (light/medium/heavy), the key of the per-class peaks.

Core-hours are CPU hours (cpu_seconds / 3600), what a batch system would charge for busy cores.
"""

from __future__ import annotations

import resource
import sys
import time

RESOURCE_CLASSES = ("light", "medium", "heavy")
# ru_maxrss is in kilobytes on Linux, in bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


def own_peak_rss() -> int:
    """This process image's own peak resident set in bytes (not inherited across exec)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT


class Meter:
    """Started when the stage starts; ``stop()`` returns the stage's cost."""

    def __init__(self, resource_class: str = "light"):
        self.resource_class = resource_class
        self._wall0 = time.monotonic()
        self._self0 = resource.getrusage(resource.RUSAGE_SELF)
        self._children0 = resource.getrusage(resource.RUSAGE_CHILDREN)

    def stop(self) -> dict:
        wall = time.monotonic() - self._wall0
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        user = (me.ru_utime - self._self0.ru_utime) + (kids.ru_utime - self._children0.ru_utime)
        system = (me.ru_stime - self._self0.ru_stime) + (kids.ru_stime - self._children0.ru_stime)
        self_rss, kids_rss = own_peak_rss(), kids.ru_maxrss * _MAXRSS_UNIT
        return {"wall_seconds": round(wall, 3), "cpu_seconds": round(user + system, 3),
                "cpu_user_seconds": round(user, 3), "cpu_system_seconds": round(system, 3),
                "peak_rss_bytes": max(self_rss, kids_rss), "peak_rss_self_bytes": self_rss,
                "peak_rss_children_bytes": kids_rss, "resource_class": self.resource_class}


def run_totals(results: list[dict]) -> dict:
    """Totals of one run from its stages' results: CPU core-hours, the sum of stage wall times,
    the run's elapsed time (first stage start to last stage end; parallel groups overlap), and the
    peak RSS per resource class. Stages without a ``cost`` (older results) are counted in
    ``unmeasured``."""
    cpu = wall = 0.0
    peaks: dict[str, int] = {}
    starts, ends, unmeasured, measured = [], [], 0, 0
    from .qa import REVIEW_STAGE

    for r in results:
        if r.get("stage") == REVIEW_STAGE:     # a person's decision, not compute
            continue
        c = r.get("cost")
        if not c:
            unmeasured += 1
            continue
        measured += 1
        cpu += c["cpu_seconds"]
        wall += c["wall_seconds"]
        cls = c.get("resource_class") or "light"
        peaks[cls] = max(peaks.get(cls, 0), int(c["peak_rss_bytes"]))
        t = r.get("timings") or {}
        if t.get("started") is not None and t.get("finished") is not None:
            starts.append(t["started"])
            ends.append(t["finished"])
    return {"stages": measured, "unmeasured": unmeasured, "core_hours": round(cpu / 3600, 6),
            "cpu_seconds": round(cpu, 3), "stage_wall_seconds": round(wall, 3),
            "elapsed_seconds": round(max(ends) - min(starts), 3) if starts else 0.0,
            "peak_rss_bytes": max(peaks.values(), default=0), "peak_rss_by_class": peaks}


def estimate(done: list[dict], remaining: int, parallel: int = 1) -> dict:
    """A campaign estimate from the run totals of the datasets already done: the mean core-hours
    and elapsed time per dataset, times the datasets remaining; wall time with ``parallel`` runs at
    once (the mean elapsed time per dataset times ceil(remaining / parallel))."""
    if parallel < 1:
        raise ValueError(f"parallel: expected at least 1, got {parallel}")
    measured = [d for d in done if d and d.get("stages")]
    if not measured:
        return {"basis": 0, "remaining": remaining, "core_hours": None, "wall_hours": None,
                "mean_core_hours": None, "mean_elapsed_seconds": None, "parallel": parallel}
    mean_cpu = sum(d["core_hours"] for d in measured) / len(measured)
    mean_elapsed = sum(d["elapsed_seconds"] for d in measured) / len(measured)
    rounds = -(-remaining // parallel)
    peak = max(d.get("peak_rss_bytes", 0) for d in measured)
    return {"basis": len(measured), "remaining": remaining, "parallel": parallel,
            "mean_core_hours": round(mean_cpu, 6), "mean_elapsed_seconds": round(mean_elapsed, 3),
            "core_hours": round(mean_cpu * remaining, 6), "wall_hours": round(mean_elapsed * rounds / 3600, 6),
            "peak_rss_bytes": peak}


def human_bytes(n: int | float | None) -> str:
    """``1536`` -> ``1.5 KiB``; '' for None."""
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
