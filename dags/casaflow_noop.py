"""A no-op workflow: fetch one input, run the ``noop`` worker stage, deliver the input.

It exercises everything around CASA (inputs, the worker contract, the operator, the push with
its manifest) in about a second: the reprocessing benchmarks and the operations tests use it as
the stand-in for a real workflow.

It delivers whatever it is given, so it exists only where the deployment enables test DAGs
(``CASAFLOW_ENABLE_TEST_DAGS``; the chart leaves it off): elsewhere this file defines no DAG.
"""

from __future__ import annotations

from airflow.sdk import DAG, task

from operators.assets import emit_delivery, push_task_assets
from operators.casa_stage import CasaStageOperator
from operators.params import choice, required, setting
from operators.settings import settings
from operators.workflow import (
    LOCATION,
    common_params,
    fetch_inputs,
    push_products,
    workflow_dag_args,
)

TEST = "Test behaviour"

with DAG(
    dag_id="casaflow_noop",
    auto_register=settings().enable_test_dags,
    description="No-op workflow (orchestration overhead, tests and benchmarks)",
    max_active_runs=16,
    **workflow_dag_args(),
    tags=["casaflow", "test"],
    doc_md=__doc__,
    params={
        "input": required("Input", "Any file: an absolute path or s3://bucket/key. It is delivered as the product.",
                          pattern=LOCATION, examples=["/data/input.txt", "s3://archive-bucket/inputs/input.txt"]),
        "sleep": setting(0.0, "Sleep", "Seconds the worker stage sleeps.", type="number", minimum=0, maximum=3600,
                         section=TEST),
        "fail_with": choice("Fail with", "Make the worker stage fail with this failure class (tests). Empty: "
                                         "the stage succeeds.",
                            {None: "nothing: succeed", "input": "input error (not retried)",
                             "science": "science error (not retried)", "transient": "transient error (retried)"},
                            default=None, section=TEST),
        **common_params(),
    },
) as dag:

    @task
    def prepare_inputs(**context) -> dict:
        """Fetch the input into the run's workspace."""
        return fetch_inputs(context, {"input": context["params"]["input"]})

    noop = CasaStageOperator(task_id="noop", stage="noop",
                             stage_params={"sleep": "{{ params.sleep }}", "fail_with": "{{ params.fail_with }}"})

    @task(**push_task_assets("casaflow_noop"))
    def push(**context) -> dict:
        """Deliver the input; the delivery manifest goes last."""
        params = context["params"]
        dataset_id = params.get("dataset_id") or params["input"].rsplit("/", 1)[-1]
        delivered = push_products(context, dataset_id, ["input"])
        emit_delivery(context, delivered)
        return delivered

    prepare_inputs() >> noop >> push()

if not dag.auto_register:      # test DAGs not enabled: nothing for the DAG processor to find
    del dag
