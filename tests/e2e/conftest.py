"""Simulated inputs, built once per test session by the project's own simulator (real CASA)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = str(Path(sys.executable).with_name("casa-worker"))


@pytest.fixture(scope="session")
def vlass_tiny(base_dir):
    """The tiny VLASS preset: PIMS, reimaging_resources.tgz, parameter lists and truth.json."""
    ws = base_dir / "sim-vlass"
    proc = subprocess.run([WORKER, "simulate-vlass", "--workspace", str(ws), "--param", "preset=tiny"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = ws / "input"
    truth = json.loads((out / "truth.json").read_text())
    return {"dir": out, "truth": truth, "pims": out / truth["pims"],
            "resources": out / "reimaging_resources.tgz", "seip": out / "SEIP_parameter.list",
            "ccip": out / "CCIP_parameter.list"}


def run_worker(*args):
    return subprocess.run([WORKER, *args], capture_output=True, text=True)


@pytest.fixture(scope="session")
def alma_tiny(base_dir):
    """The tiny ALMA pipeline working directory (two EBs in two sessions), and its truth."""
    ws = base_dir / "sim-alma"
    proc = run_worker("simulate-alma", "--workspace", str(ws), "--param", "preset=tiny")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = ws / "input"
    truth = json.loads((out / "truth.json").read_text())
    return {"dir": out, "truth": truth, "working": out / truth["working"]}


@pytest.fixture(scope="session")
def manual_trees(base_dir):
    """Manual-reduction trees in the QA2 guide's two shapes: {'multi': path, 'single': path}."""
    ws = base_dir / "sim-manual"
    out = {}
    for shape in ("multi", "single"):
        proc = run_worker("simulate-manual-tree", "--workspace", str(ws), "--param", f"shape={shape}")
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        out[shape] = ws / json.loads(proc.stdout.strip().splitlines()[-1])["outputs"]["origpath"]
    return out
