"""Test DAGs for the operator: a mapped fan-out over three groups, and failure classes."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from operators.casa_stage import CasaStageOperator
from operators.settings import settings

# Test DAGs exist only where enabled (CASAFLOW_ENABLE_TEST_DAGS, set by the tests' conftest).
ENABLED = settings().enable_test_dags

with DAG(
    dag_id="casaflow_test_fanout",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"execution_mode": Param("default", enum=["default", "local", "render", "kubernetes"])},
    tags=["casaflow-test"],
    auto_register=ENABLED,
) as fanout:
    groups = CasaStageOperator.partial(task_id="noop_group", stage="noop").expand(
        stage_params=[{"sleep": 0.1}, {"sleep": 0.2}, {"sleep": 0.3}])

    @task
    def collect(results: list) -> dict:
        return {"n": len(results), "statuses": sorted(r.get("status") for r in results)}

    collect(groups.output)

with DAG(
    dag_id="casaflow_test_failure",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"fail_with": Param("input", enum=["input", "science", "transient"])},
    tags=["casaflow-test"],
    auto_register=ENABLED,
) as failure:
    CasaStageOperator(task_id="fail", stage="noop", stage_params={"fail_with": "{{ params.fail_with }}"},
                      retries=0)

if not ENABLED:
    del fanout, failure
