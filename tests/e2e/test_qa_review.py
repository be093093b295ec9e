"""QA review before delivery on the embedded runtime (real scheduler, api-server, Airflow's HITL
operator), answered through the REST endpoint: approve, reject with a reason, the timeout's
default outcome, and 'auto' delivering a good score without asking. The DAG is
tests/dags/casaflow_test_review.py (a stage recording a given QA score, the weblog, the review,
the push): no CASA."""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path

import pytest

from .runtime_helpers import runtime_with_test_dags, task_states, trigger, wait_for, wait_run_done

pytestmark = [pytest.mark.e2e, pytest.mark.runtime]

DAG = "casaflow_test_review"
HITL = "/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/qa_review/-1/hitlDetails"
RUNS = {
    "approve": {"qa_review": "required", "qa_score": 0.95, "dataset_id": "rv-approve"},
    "reject": {"qa_review": "auto", "qa_score": 0.2, "dataset_id": "rv-reject"},
    "timeout": {"qa_review": "required", "qa_review_timeout_minutes": 0.1, "dataset_id": "rv-timeout"},
    "auto-good": {"qa_review": "auto", "qa_score": 0.8, "dataset_id": "rv-auto"},
}


@pytest.fixture(scope="module")
def review(tmp_path_factory):
    home = tmp_path_factory.mktemp("review") / "runtime"
    with runtime_with_test_dags(home, [DAG]) as (r, api):
        for name, conf in RUNS.items():
            trigger(api, DAG, f"rv-{name}", conf)
        yield r, api


def workspace(r, run: str) -> Path:
    return Path(r.home) / "workspaces" / DAG / f"rv-{run}"


def waiting_detail(api, run: str) -> dict:
    """The review's HITL request once the task is parked waiting for it.

    Then a few seconds more: in Airflow 3.3.2 the task process that parked the task exits and the
    LocalExecutor reports that ~2 s later; a response that re-queues the task before the scheduler
    has processed that report makes it see a 'queued' task whose process "succeeded" and fail it
    (observed here). A person never answers that fast; a test does."""
    def parked():
        states = task_states(api, DAG, f"rv-{run}")
        if states.get("qa_review") in ("awaiting_input", "deferred"):
            status, body = api.get(HITL.format(dag=DAG, run=f"rv-{run}"))
            return body if status == 200 else None
        assert states.get("qa_review") not in ("success", "failed", "upstream_failed"), states
        return None
    detail = wait_for(f"rv-{run} waiting for review", parked)
    time.sleep(8)
    return detail


def delivered(r, dataset: str) -> Path:
    return Path(r.products) / dataset / "delivery_manifest.xml"


def test_approve_delivers_and_the_weblog_says_who_approved(review):
    r, api = review
    detail = waiting_detail(api, "approve")
    assert detail["options"] == ["Approve", "Reject"] and detail["defaults"] == ["Reject"]
    assert "Run QA score: **0.95** (threshold 0.66)" in detail["body"]
    assert str(workspace(r, "approve") / "weblog" / "index.html") in detail["body"]
    assert "the outcome is **reject**" in detail["body"]
    # each summary line its own list item (plain consecutive lines run together in the UI)
    assert "\n- **Failed stages:** none\n- **Failed spw groups (planes):** none\n- **Rejected planes:** none\n" \
        in detail["body"]
    assert delivered(r, "rv-approve").exists() is False            # nothing goes out before the decision
    status, body = api.patch(HITL.format(dag=DAG, run="rv-approve"),
                             {"chosen_options": ["Approve"], "params_input": {"reason": "checked the images"}})
    assert status == 200, body
    assert wait_run_done(api, DAG, "rv-approve") == "success"
    assert task_states(api, DAG, "rv-approve")["push"] == "success"
    assert delivered(r, "rv-approve").is_file()
    rec = json.loads((workspace(r, "approve") / "results" / "qa-review.json").read_text())
    assert rec["status"] == "success" and rec["outputs"]["decision"] == "approved"
    assert rec["outputs"]["reviewer"] == r.user and rec["outputs"]["reason"] == "checked the images"
    # The delivered weblog tarball was re-packed with the decision in it.
    with tarfile.open(Path(r.products) / "rv-approve" / "weblog.tgz") as tf:
        page = tf.extractfile("weblog/index.html").read().decode()
    assert "QA review: approved" in page and "checked the images" in page


def test_reject_with_a_reason_stops_the_delivery_and_is_reported(review):
    from casaflow_ops.status import failure_of

    r, api = review
    detail = waiting_detail(api, "reject")        # auto, score 0.2 < 0.66: waits
    assert "Run QA score: **0.20**" in detail["body"]
    assert "burn: 0.20 QA score 0.2 given as a parameter" in detail["body"]
    status, body = api.patch(HITL.format(dag=DAG, run="rv-reject"),
                             {"chosen_options": ["Reject"], "params_input": {"reason": "spw 3 beam far too large"}})
    assert status == 200, body
    assert wait_run_done(api, DAG, "rv-reject") == "failed"
    states = task_states(api, DAG, "rv-reject")
    assert states["qa_review"] == "failed" and states["push"] == "upstream_failed"
    assert not (Path(r.products) / "rv-reject").exists()
    # What the reprocessing report and `casaflow status` show for the run.
    failure = failure_of(DAG, "rv-reject", str(Path(r.home) / "workspaces"))
    assert failure == {"failure_class": "rejected", "message": f"qa-review: rejected by {r.user}: spw 3 beam far too large"}
    page = (workspace(r, "reject") / "weblog" / "index.html").read_text()
    assert "QA review: rejected" in page and "spw 3 beam far too large" in page and "Not delivered." in page
    # A second answer is refused: the decision stands.
    again = api.patch(HITL.format(dag=DAG, run="rv-reject"), {"chosen_options": ["Approve"], "params_input": {}})
    assert again[0] == 409


def test_no_response_takes_the_stated_default_outcome(review):
    r, api = review
    assert wait_run_done(api, DAG, "rv-timeout", timeout=180) == "failed"
    status, detail = api.get(HITL.format(dag=DAG, run="rv-timeout"))
    assert status == 200, detail
    assert "Without a response within 0.1 minutes the outcome is **reject**" in detail["body"]
    assert "Run QA score: none recorded" in detail["body"]
    assert detail["chosen_options"] == ["Reject"] and not detail.get("responded_by_user")
    rec = json.loads((workspace(r, "timeout") / "results" / "qa-review.json").read_text())
    assert rec["failure_class"] == "rejected" and rec["outputs"]["timed_out"] is True
    assert rec["outputs"]["reviewer"] == ""
    assert "no response within the review timeout: default outcome reject" in rec["outputs"]["reason"]
    assert not (Path(r.products) / "rv-timeout").exists()


def test_auto_delivers_a_score_at_or_above_the_threshold_without_asking(review):
    r, api = review
    assert wait_run_done(api, DAG, "rv-auto-good") == "success"
    status, _ = api.get(HITL.format(dag=DAG, run="rv-auto-good"))
    assert status == 404                                       # no one was asked
    rec = json.loads((workspace(r, "auto-good") / "results" / "qa-review.json").read_text())
    assert rec["outputs"]["decision"] == "delivered without review"
    assert rec["message"] == "delivered without review: score 0.80 >= 0.66"
    assert delivered(r, "rv-auto").is_file()
