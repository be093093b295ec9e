"""The run's QA score (casaflow/qa.py) and the review decision rule, on result files as the worker
writes them, and the QA review deployment settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from casaflow import qa

WORKER = str(Path(sys.executable).with_name("casa-worker"))


def worker(ws: Path, stage: str, *params: str, tag: str | None = None) -> None:
    argv = [WORKER, stage, "--workspace", str(ws)] + [a for p in params for a in ("--param", p)]
    subprocess.run(argv + (["--tag", tag] if tag else []), capture_output=True, check=False)


def test_the_lowest_stage_score_and_failed_stages_count(tmp_path):
    worker(tmp_path, "burn", "qa_score=0.9", tag="a")
    worker(tmp_path, "burn", "qa_score=0.7", tag="b")
    s = qa.summary(tmp_path)
    assert s["score"] == pytest.approx(0.7)
    assert s["reasons"] == ["burn.a: 0.90 QA score 0.9 given as a parameter",
                            "burn.b: 0.70 QA score 0.7 given as a parameter"]
    assert s["failed_stages"] == [] and s["weblog"] == ""
    worker(tmp_path, "noop", "fail_with=science")          # a failed stage: 0.34, below the threshold
    s = qa.summary(tmp_path)
    assert s["score"] == pytest.approx(0.34) and s["failed_stages"] == ["noop"]
    assert any(r.startswith("noop: 0.34 failed (science): ScienceError: failing on purpose") for r in s["reasons"])
    worker(tmp_path, "run-weblog")                          # the weblog is not judged
    assert qa.summary(tmp_path)["score"] == pytest.approx(0.34)
    assert qa.summary(tmp_path)["weblog"] == str(tmp_path / "weblog" / "index.html")


def test_failed_and_rejected_planes_are_listed(tmp_path):
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "planes.json").write_text(json.dumps({
        "planes": [{"group": "2", "keep": True}, {"group": "5", "keep": False}],
        "failed": [{"group": "3,4", "failure": "tclean"}]}))
    s = qa.summary(tmp_path)
    assert s["failed_planes"] == ["3,4"] and s["rejected_planes"] == ["5"]
    assert s["score"] is None                                # no stage judged anything here


@pytest.mark.parametrize("mode,score,waits", [
    ("required", 1.0, True), ("never", 0.0, False), ("auto", 0.66, False), ("auto", 0.65, True),
    ("auto", None, False)])
def test_who_waits(mode, score, waits):
    assert qa.needs_review(mode, score, 0.66) is waits


def test_bad_modes_and_settings_are_named(monkeypatch):
    from operators.settings import Settings

    with pytest.raises(ValueError, match="qa_review: expected auto, required or never, got 'sometimes'"):
        qa.needs_review("sometimes", 1.0, 0.5)
    for var, value, msg in [("CASAFLOW_QA_REVIEW", "maybe", "CASAFLOW_QA_REVIEW='maybe'"),
                            ("CASAFLOW_QA_THRESHOLD", "1.5", "between 0 and 1"),
                            ("CASAFLOW_QA_REVIEW_TIMEOUT_MINUTES", "0", "positive number of minutes"),
                            ("CASAFLOW_QA_REVIEW_TIMEOUT_OUTCOME", "shrug", "expected one of")]:
        with monkeypatch.context() as m:
            m.setenv(var, value)
            with pytest.raises(ValueError, match=msg):
                Settings.from_env()
    monkeypatch.setenv("CASAFLOW_QA_REVIEWERS", "alice, bob,")
    assert Settings.from_env().qa_reviewers == ("alice", "bob")
