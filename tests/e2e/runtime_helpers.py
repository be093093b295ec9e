"""The embedded runtime with the tests' DAGs (tests/dags) parsed beside dags/, and small REST helpers
for the QA review and asset tests."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

from casaflow_ops.runtime import free_port

TEST_DAGS = Path(__file__).resolve().parent.parent / "dags"


@contextmanager
def runtime_with_test_dags(home: Path, dag_ids: list[str]):
    from casaflow_ops import runtime

    r = runtime.create(home=home, port=free_port(), extra_dags=TEST_DAGS)
    try:
        r.up()
        api = runtime.Api(r)
        for dag_id in dag_ids:
            api.wait_for_dag(dag_id, timeout=180)
            status, body = api.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})
            assert status == 200, body
        yield r, api
    finally:
        r.down()


def trigger(api, dag_id: str, run_id: str, conf: dict) -> None:
    status, body = api.post(f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None,
                                                               "conf": conf})
    assert status == 200, body


def run_state(api, dag_id: str, run_id: str) -> str:
    status, body = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
    assert status == 200, body
    return body["state"]


def task_states(api, dag_id: str, run_id: str) -> dict[str, str]:
    status, body = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
    assert status == 200, body
    return {t["task_id"]: t["state"] for t in body["task_instances"]}


def wait_for(what: str, fn, timeout: float = 240.0, every: float = 2.0):
    """Poll ``fn`` until it returns something truthy; its last value in the error otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise TimeoutError(f"{what}: not after {timeout:.0f} s (last: {last!r})")


def wait_run_done(api, dag_id: str, run_id: str, timeout: float = 240.0) -> str:
    return wait_for(f"{dag_id} {run_id} finished",
                    lambda: (s if (s := run_state(api, dag_id, run_id)) in ("success", "failed") else None), timeout)


def wait_for_review(api, dag_id: str, run_id: str, timeout: float = 240.0, settle: float = 8.0) -> dict:
    """The run's QA review request (its HITL detail) once the qa_review task is parked waiting.

    Then ``settle`` seconds more: in Airflow 3.3.2 the task process that parked the task exits and
    the LocalExecutor reports that ~2 s later; a response that re-queues the task before the
    scheduler has processed that report makes it see a 'queued' task whose process "succeeded"
    and fail it (observed, test_qa_review.py). A person never answers that fast; a test does."""
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/qa_review/-1/hitlDetails"

    def parked():
        states = task_states(api, dag_id, run_id)
        if states.get("qa_review") in ("awaiting_input", "deferred"):
            status, body = api.get(path)
            return body if status == 200 else None
        assert states.get("qa_review") not in ("success", "failed", "upstream_failed"), states
        assert "failed" not in states.values(), states
        return None
    detail = wait_for(f"{dag_id} {run_id} waiting for review", parked, timeout=timeout, every=3.0)
    time.sleep(settle)
    return detail
