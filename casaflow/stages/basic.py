"""Small general-purpose stages."""

from __future__ import annotations

import json
import time

from ..errors import InputError
from ..registry import Param, stage


@stage("noop", params=[
    Param("sleep", "float", default=0.0, help="seconds to sleep (for scheduling benchmarks)"),
    Param("fail_with", "str", default="", choices=("", "input", "science", "transient"),
          help="fail on purpose with this failure class (for tests of retry handling)"),
])
def noop(ctx, sleep, fail_with):
    """Do nothing (no CASA): measures the orchestration overhead; can fail on purpose."""
    from .. import errors

    if sleep:
        time.sleep(sleep)
    if fail_with:
        cls = {"input": errors.InputError, "science": errors.ScienceError,
               "transient": errors.TransientError}[fail_with]
        raise cls(f"failing on purpose with class {fail_with}")
    return {"slept": sleep}


@stage("burn", params=[
    Param("cpu_seconds", "float", default=0.0, help="CPU seconds to spend busy in the worker process"),
    Param("child_cpu_seconds", "float", default=0.0, help="CPU seconds to spend busy in one child process"),
    Param("child_memory_mb", "int", default=0, help="MiB the child process allocates and touches"),
    Param("qa_score", "float", default=None, help="record this QA score (tests of the QA review)"),
])
def burn(ctx, cpu_seconds, child_cpu_seconds, child_memory_mb, qa_score):
    """Use CPU and memory on purpose, in the worker and in a child process it waits for (no CASA):
    exercises the cost accounting (result.json ``cost``) the way a CASA task's subprocess would;
    can record a given QA score (exercises the QA review)."""
    import subprocess
    import sys

    def busy(seconds: float) -> None:
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    busy(cpu_seconds)
    if child_cpu_seconds or child_memory_mb:
        code = ("import time\n"
                f"buf = bytearray({child_memory_mb} * 1024 * 1024)\n"
                "for i in range(0, len(buf), 4096): buf[i] = 1\n"
                f"end = time.process_time() + {child_cpu_seconds}\n"
                "while time.process_time() < end: pass\n")
        subprocess.run([sys.executable, "-c", code], check=True)
    if qa_score is not None:
        if not 0 <= qa_score <= 1:
            raise InputError(f"parameter 'qa_score': expected a score between 0 and 1, got {qa_score}")
        ctx.qa(qa_score, f"QA score {qa_score} given as a parameter")
    return {"cpu_seconds": cpu_seconds, "child_cpu_seconds": child_cpu_seconds, "child_memory_mb": child_memory_mb}


@stage("inspect-ms", params=[
    Param("vis", "path", required=True, help="MeasurementSet, relative to the workspace"),
    Param("output", "path", default="", help="where to write the JSON summary (default <vis>.summary.json)"),
])
def inspect_ms(ctx, vis, output):
    """Summarise a MeasurementSet with msmetadata: spws with frequencies, correlations, fields, intents."""
    path = ctx.workspace / vis
    if not (path / "table.dat").is_file():
        raise InputError(f"parameter 'vis': {vis} is not a MeasurementSet (no table.dat in {path})")
    msmd = ctx.casa.tool("msmetadata")
    msmd.open(str(path))
    try:
        spws = [int(s) for s in msmd.spwsforintent("*")] if msmd.nrows() else []
        summary = {
            "vis": vis, "nrows": int(msmd.nrows()), "nspw_all": int(msmd.nspw()),
            "spws": [{"id": s, "nchan": int(msmd.nchan(s)), "meanfreq_hz": float(msmd.meanfreq(s)),
                      "chanwidth_hz": float(msmd.chanwidths(s)[0])} for s in sorted(spws)],
            "corr_types": [int(c) for c in msmd.corrtypesforpol(0)],
            "fields": list(msmd.fieldnames()),
            "intents": sorted(msmd.intents()),
            "antennas": list(msmd.antennanames()),
        }
    finally:
        msmd.close()
    out = ctx.workspace / (output or f"{vis}.summary.json")
    out.write_text(json.dumps(summary, indent=2))
    ctx.result.add_product(out.relative_to(ctx.workspace), role="summary")
    return {"summary": str(out.relative_to(ctx.workspace)), "nspw": len(summary["spws"]),
            "nrows": summary["nrows"]}


@stage("run-weblog", params=[
    Param("title", "str", default="casaflow run", help="page title"),
    Param("products_dir", "path", default="casaflow_weblog", help="where weblog.tgz goes (relative to the workspace)"),
])
def run_weblog(ctx, title, products_dir):
    """Render the run's weblog from what its stages left (stage table, products, QA from an AQUA report
    when there is one) and weblog.tgz; renders whatever succeeded or failed. No CASA."""
    return publish_weblog(ctx, title, products_dir)


def publish_weblog(ctx, title: str, products_dir: str, casa=None, arcname: str = "weblog") -> dict:
    """Render ``weblog/index.html``, pack it as ``<products_dir>/weblog.tgz`` (the directory is
    ``arcname`` inside), record both."""
    from .. import weblog as wl

    index = wl.render(ctx.workspace, title, casa)
    ctx.result.add_product(index.relative_to(ctx.workspace).parent, role="weblog")
    out = ctx.workspace / products_dir
    out.mkdir(parents=True, exist_ok=True)
    tgz = wl.tarball(ctx.workspace, out / "weblog.tgz", arcname)
    ctx.result.add_product(tgz.relative_to(ctx.workspace), role="weblog")
    return {"index": str(index.relative_to(ctx.workspace)), "tarball": str(tgz.relative_to(ctx.workspace))}
