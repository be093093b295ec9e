"""``casa-worker``: run one stage in a workspace directory. The contract with the orchestrator.

    casa-worker <stage> --workspace DIR [--param k=v ...] [--params-file F] [--tag T]
    casa-worker --list [--json]

* Inputs are read from, and outputs written to, the workspace (the process runs with it as its
  current directory, so CASA's relative paths land there).
* The result (status, products with sizes, QA, warnings, timings, cost: wall and CPU time and peak
  RSS of the process tree, see :mod:`casaflow.cost`, software versions) is written
  atomically to ``DIR/results/<stage>[.<tag>].json``, also to ``$CASAFLOW_RESULT_PATH`` when set
  (``/airflow/xcom/return.json`` in a pod), and printed as the last line of stdout.
* CASA's log goes to ``DIR/logs/<stage>[.<tag>].casa.log``; progress goes to stderr.
* The exit code is the failure class (see :mod:`casaflow.errors`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from . import registry
from .cost import Meter
from .errors import EXIT_OK, InputError, classify, exit_code_for
from .result import StageResult

log = logging.getLogger("casaflow.worker")

RESULT_PATH_ENV = "CASAFLOW_RESULT_PATH"


def _parse_params(args) -> dict:
    params: dict = {}
    if args.params_file:
        path = Path(args.params_file)
        try:
            loaded = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"--params-file {path}: no such file") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"--params-file {path}: not valid JSON ({exc})") from None
        if not isinstance(loaded, dict):
            raise InputError(f"--params-file {path}: expected a JSON object of parameters")
        params.update(loaded)
    for item in args.param or []:
        if "=" not in item:
            raise InputError(f"--param {item!r}: expected key=value")
        key, value = item.split("=", 1)
        params[key.strip()] = registry.parse_cli_value(value)
    return params


def result_path(workspace: Path, stage: str, tag: str | None) -> Path:
    return workspace / "results" / (f"{stage}.{tag}.json" if tag else f"{stage}.json")


def run_stage(stage_name: str, workspace: Path, raw_params: dict, tag: str | None = None) -> StageResult:
    """Run one stage in-process and return its result (already written to disk)."""
    workspace = workspace.resolve()
    suffix = f".{tag}" if tag else ""
    log_rel = Path("logs") / f"{stage_name}{suffix}.casa.log"
    result = StageResult(stage=stage_name, workspace=str(workspace), log=str(log_rel))
    out_path = result_path(workspace, stage_name, tag)
    meter = Meter()
    try:
        spec = registry.get(stage_name)
        meter.resource_class = spec.resource_class
        params = spec.bind(raw_params)
        result.params = params
        workspace.mkdir(parents=True, exist_ok=True)
        os.chdir(workspace)
        # The casa-*.log fallback of the project's CASA config points here too.
        os.environ["CASAFLOW_CASA_LOGFILE"] = str(workspace / log_rel)

        def casa_factory():
            from .casarun import Casa

            return Casa(workspace, stage_name + suffix, workspace / log_rel)

        ctx = registry.StageContext(workspace=workspace, result=result, _casa_factory=casa_factory)
        log.info("stage %s starting in %s with %s", stage_name, workspace, json.dumps(params, default=str))
        outputs = spec.fn(ctx, **params)
        if outputs:
            result.outputs.update(outputs)
        result.status = "success"
    except Exception as exc:  # the stage boundary: every failure becomes a classified result
        result.status = "failed"
        result.failure_class = classify(exc)
        result.message = f"{type(exc).__name__}: {exc}"
        log.error("stage %s failed (%s): %s", stage_name, result.failure_class, exc)
        if result.failure_class != "input" and workspace.exists():
            # Kept for the person debugging a science failure; the result carries the message.
            (workspace / "logs").mkdir(exist_ok=True)
            (workspace / "logs" / f"{stage_name}{suffix}.traceback.txt").write_text(traceback.format_exc())
    result.cost = meter.stop()
    result.finished = time.time()
    if workspace.exists():
        result.write(out_path)
    extra = os.environ.get(RESULT_PATH_ENV)
    if extra:
        result.write(Path(extra))
    return result


def _list(as_json: bool) -> None:
    specs = registry.load_all()
    if as_json:
        print(json.dumps([s.describe() for s in specs.values()], indent=2, default=str))
        return
    for spec in sorted(specs.values(), key=lambda s: s.name):
        first = spec.help.splitlines()[0] if spec.help else ""
        print(f"{spec.name}  [{spec.resource_class}]  {first}")
        for p in spec.params:
            req = "required" if p.required else f"default={p.default!r}"
            choices = f" one of {list(p.choices)}" if p.choices else ""
            print(f"    --param {p.name}=<{p.type}>  ({req}{choices})  {p.help}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="casa-worker", description="Run one casaflow stage in a workspace.")
    parser.add_argument("stage", nargs="?", help="stage name (see --list)")
    parser.add_argument("--workspace", help="the run's workspace directory")
    parser.add_argument("--param", action="append", metavar="K=V",
                        help="stage parameter; V is parsed as JSON when it is JSON, else taken as a string")
    parser.add_argument("--params-file", metavar="F", help="JSON object of stage parameters")
    parser.add_argument("--tag", help="distinguishes several runs of one stage in a workspace (e.g. spw group)")
    parser.add_argument("--list", action="store_true", help="list every stage and its parameters")
    parser.add_argument("--json", action="store_true", help="with --list: machine-readable")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.list:
        _list(args.json)
        return EXIT_OK
    if not args.stage or not args.workspace:
        parser.print_usage(sys.stderr)
        print("casa-worker: a stage and --workspace are required (or --list)", file=sys.stderr)
        return exit_code_for("input")
    try:
        params = _parse_params(args)
    except InputError as exc:
        print(f"casa-worker: {exc}", file=sys.stderr)
        res = StageResult(stage=args.stage, workspace=str(args.workspace), status="failed",
                          failure_class="input", message=str(exc), finished=time.time())
        print(json.dumps(res.to_dict(), sort_keys=True))
        return exit_code_for("input")
    result = run_stage(args.stage, Path(args.workspace), params, args.tag)
    sys.stdout.flush()
    print(json.dumps(result.to_dict(), sort_keys=True))
    sys.stdout.flush()
    return EXIT_OK if result.status == "success" else exit_code_for(result.failure_class)


if __name__ == "__main__":
    sys.exit(main())
