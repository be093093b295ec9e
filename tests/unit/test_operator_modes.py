"""CasaStageOperator outside the scheduler: failure classes in local mode, pods in render mode."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException

from operators.casa_stage import CasaStageFailed, CasaStageOperator


def context(tmp_path, mode="local", run_id="manual__2026-01-01T00:00:00+00:00"):
    return {"dag": SimpleNamespace(dag_id="d"), "run_id": run_id, "params": {"execution_mode": mode},
            "ti": SimpleNamespace(try_number=1, dag_id="d", task_id="t", run_id=run_id, map_index=-1)}


@pytest.mark.parametrize("cls,exc", [("input", AirflowFailException), ("science", AirflowFailException),
                                     ("transient", CasaStageFailed)])
def test_local_failure_classes(tmp_path, cls, exc):
    op = CasaStageOperator(task_id="t", stage="noop", stage_params={"fail_with": cls},
                           workspace=str(tmp_path))
    with pytest.raises(exc, match=f"failed \\({cls}\\)"):
        op.execute(context(tmp_path))


def test_science_failure_retried_when_stage_policy_allows(tmp_path):
    op = CasaStageOperator(task_id="t", stage="noop", stage_params={"fail_with": "science"},
                           workspace=str(tmp_path), retry_science=True)
    with pytest.raises(CasaStageFailed):
        op.execute(context(tmp_path))


def test_local_returns_result_json(tmp_path):
    op = CasaStageOperator(task_id="t", stage="noop", stage_params={"sleep": 0}, workspace=str(tmp_path))
    result = op.execute(context(tmp_path))
    assert result["status"] == "success" and result["stage"] == "noop"


def test_default_workspace_is_per_run_and_sanitised(tmp_path, monkeypatch):
    monkeypatch.setenv("CASAFLOW_WORKSPACE_ROOT", str(tmp_path))
    op = CasaStageOperator(task_id="t", stage="noop")
    ws = op.resolve_workspace(context(tmp_path))
    # Sanitised, and told apart from every other run id by a hash suffix (safe_name is injective).
    assert re.fullmatch(rf"{tmp_path}/d/manual__2026-01-01T00_00_00_00_00-[0-9a-f]{{16}}", ws), ws


def test_render_gives_the_same_argv_as_local(tmp_path):
    op = CasaStageOperator(task_id="t", stage="noop", stage_params={"sleep": 1.5}, tag="g2",
                           workspace=str(tmp_path))
    ctx = context(tmp_path, mode="render")
    pod = op.execute(ctx)["pod"]
    container = pod["spec"]["containers"][0]
    assert [container["command"][0], *container["args"]] == op.argv(ctx)
    assert container["args"] == ["noop", "--workspace", str(tmp_path), "--param", "sleep=1.5", "--tag", "g2"]
    assert (tmp_path / "rendered" / "t.g2.yaml").is_file()


def test_mode_rejects_unknown(tmp_path):
    op = CasaStageOperator(task_id="t", stage="noop", workspace=str(tmp_path), execution_mode="cloud")
    with pytest.raises(AirflowFailException, match="execution_mode 'cloud'"):
        op.execute(context(tmp_path))
