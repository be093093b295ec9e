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
