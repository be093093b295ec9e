"""The casa-worker contract: CLI, result.json, exit-code classes, stage registry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = str(Path(sys.executable).with_name("casa-worker"))


def run(*args, cwd=None):
    return subprocess.run([WORKER, *args], capture_output=True, text=True, cwd=cwd)


def test_list_shows_every_stage_with_params():
    proc = run("--list", "--json")
    assert proc.returncode == 0
    stages = {s["name"]: s for s in json.loads(proc.stdout)}
    assert {"noop", "inspect-ms", "simulate-vlass"} <= set(stages)
    preset = {p["name"]: p for p in stages["simulate-vlass"]["params"]}["preset"]
    assert preset["choices"] == ["tiny", "small", "large", "paths"] and preset["default"] == "tiny"
    human = run("--list").stdout
    assert "noop  [light]" in human and "--param sleep=<float>" in human


def test_success_writes_result_and_prints_it_last(tmp_path):
    proc = run("noop", "--workspace", str(tmp_path), "--param", "sleep=0.01", "--tag", "g1")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    on_disk = json.loads((tmp_path / "results" / "noop.g1.json").read_text())
    assert printed == on_disk
    assert on_disk["status"] == "success" and on_disk["failure_class"] is None
    assert on_disk["params"] == {"sleep": 0.01, "fail_with": ""}
    assert on_disk["timings"]["seconds"] >= 0.01
    assert on_disk["versions"]["casaflow"]


@pytest.mark.parametrize("cls,code", [("input", 2), ("science", 3), ("transient", 4)])
def test_exit_code_tells_failure_class(tmp_path, cls, code):
    proc = run("noop", "--workspace", str(tmp_path), "--param", f"fail_with={cls}")
    assert proc.returncode == code
    res = json.loads((tmp_path / "results" / "noop.json").read_text())
    assert res["status"] == "failed" and res["failure_class"] == cls
    assert "failing on purpose" in res["message"]


def test_bad_parameters_are_input_errors_naming_the_parameter(tmp_path):
    proc = run("noop", "--workspace", str(tmp_path), "--param", "sleep=soon")
    assert proc.returncode == 2
    assert "parameter 'sleep': expected float, got 'soon'" in proc.stdout
    proc = run("noop", "--workspace", str(tmp_path), "--param", "colour=blue")
    assert proc.returncode == 2 and "unknown parameter(s) ['colour']" in proc.stdout
    proc = run("noop", "--workspace", str(tmp_path), "--param", "fail_with=sometimes")
    assert proc.returncode == 2 and "expected one of" in proc.stdout
    proc = run("no-such-stage", "--workspace", str(tmp_path))
    assert proc.returncode == 2 and "unknown stage 'no-such-stage'" in proc.stdout


def test_params_file(tmp_path):
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"sleep": 0.0}))
    assert run("noop", "--workspace", str(tmp_path), "--params-file", str(pf)).returncode == 0
    pf.write_text("[1, 2]")
    proc = run("noop", "--workspace", str(tmp_path), "--params-file", str(pf))
    assert proc.returncode == 2 and "expected a JSON object" in proc.stderr


def test_missing_ms_is_an_input_error(tmp_path):
    proc = run("inspect-ms", "--workspace", str(tmp_path), "--param", "vis=nothere.ms")
    assert proc.returncode == 2
    assert "parameter 'vis': nothere.ms is not a MeasurementSet" in proc.stdout


def test_returncode_classes_cover_signals():
    from casaflow.errors import class_from_returncode

    assert class_from_returncode(0) is None
    assert class_from_returncode(-9) == "resource" and class_from_returncode(137) == "resource"
    assert class_from_returncode(-6) == "science"  # SIGABRT from a casacore assertion
    assert class_from_returncode(4) == "transient"
