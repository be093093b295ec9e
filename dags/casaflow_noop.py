"""A no-op workflow: fetch one input, run the ``noop`` worker stage, deliver the input.

It exercises everything around CASA (inputs, the worker contract, the operator, the push with
its manifest) in about a second: the reprocessing benchmarks and the operations tests use it as
the stand-in for a real workflow.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from operators.assets import delivery_alias, emit_delivery
from operators.casa_stage import CasaStageOperator
from operators.workflow import (
    LOCATION,
    common_params,
    fetch_inputs,
    push_products,
    workflow_dag_args,
)

with DAG(
    dag_id="casaflow_noop",
    description="No-op workflow (orchestration overhead, tests and benchmarks)",
    max_active_runs=16,
    **workflow_dag_args(),
    tags=["casaflow", "test"],
    doc_md=__doc__,
    params={
        "input": Param("/data/input.txt", type="string", pattern=LOCATION, title="Input",
                       description="Any file: an absolute path or s3://bucket/key. It is delivered as the product."),
        "sleep": Param(0.0, type="number", minimum=0, maximum=3600, title="Sleep",
                       description="Seconds the worker stage sleeps."),
        "fail_with": Param("", type="string", enum=["", "input", "science", "transient"], title="Fail with",
                           description="Make the worker stage fail with this failure class (tests)."),
        **common_params(),
    },
) as dag:

    @task
    def prepare_inputs(**context) -> dict:
        """Fetch the input into the run's workspace."""
        return fetch_inputs(context, {"input": context["params"]["input"]})

    noop = CasaStageOperator(task_id="noop", stage="noop",
                             stage_params={"sleep": "{{ params.sleep }}", "fail_with": "{{ params.fail_with }}"})

    @task(outlets=[delivery_alias("casaflow_noop")])
    def push(**context) -> dict:
        """Deliver the input; the delivery manifest goes last."""
        params = context["params"]
        dataset_id = params.get("dataset_id") or params["input"].rsplit("/", 1)[-1]
        delivered = push_products(context, dataset_id, ["input"])
        emit_delivery(context, delivered)
        return delivered

    prepare_inputs() >> noop >> push()
