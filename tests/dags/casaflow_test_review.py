"""Test DAGs for the QA review and the delivery assets, cheap (no CASA):

* ``casaflow_test_review``: a stage that records a given QA score (``burn``), the run's weblog
  (``run-weblog``), the QA review, and the push of the weblog tarball with its asset event: the
  shape of every casaflow workflow's tail.
* ``casaflow_test_ingest``: an archive's ingest DAG scheduled on casaflow_noop's deliveries to the
  deployment's default destination; it reads each triggering event's manifest.
"""

from __future__ import annotations

import json

import pendulum
from airflow.sdk import DAG, Param, task

from operators.assets import delivery_asset, emit_delivery, push_task_assets
from operators.casa_stage import CasaStageOperator
from operators.qa_review import QAReviewOperator, qa_review_params
from operators.settings import settings
from operators.workflow import common_params, push_products, workflow_dag_args

with DAG(
    dag_id="casaflow_test_review",
    **workflow_dag_args(),
    tags=["casaflow-test"],
    auto_register=settings().enable_test_dags,
    params={"qa_score": Param(None, type=["null", "number"], minimum=0, maximum=1, title="QA score",
                              description="The score the stage records (empty: none)."),
            **common_params(), **qa_review_params()},
) as review_dag:
    scored = CasaStageOperator(task_id="scored", stage="burn", stage_params={"qa_score": "{{ params.qa_score }}"})
    weblog = CasaStageOperator(task_id="weblog", stage="run-weblog", trigger_rule="all_done",
                               stage_params={"title": "review test {{ run_id }}", "products_dir": "products"})

    @task(**push_task_assets("casaflow_test_review"))
    def push(**context) -> dict:
        dataset_id = context["params"].get("dataset_id") or "review-test"
        delivered = push_products(context, dataset_id, ["products"])
        emit_delivery(context, delivered)
        return delivered

    scored >> weblog >> QAReviewOperator() >> push()


DELIVERIES = delivery_asset("casaflow_noop", settings().products_destination)

with DAG(
    dag_id="casaflow_test_ingest",
    schedule=[DELIVERIES],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["casaflow-test"],
    auto_register=settings().enable_test_dags,
) as ingest_dag:

    @task
    def ingest(**context) -> list[dict]:
        """What an archive's ingest would start from: each delivery's dataset id and manifest (read
        here, to show it is there)."""
        from pathlib import Path

        seen = []
        # By the asset: the mapping also lists each event under the alias it was emitted through.
        for ev in context["triggering_asset_events"][DELIVERIES]:
            manifest = ev.extra["manifest"]
            path = Path(manifest.removeprefix("file://"))
            seen.append({"dataset_id": ev.extra["dataset_id"], "manifest": manifest,
                         "manifest_bytes": path.stat().st_size if path.is_file() else None,
                         "source_run_id": ev.source_run_id})
        print("INGEST " + json.dumps(seen))
        return seen

    ingest()

if not settings().enable_test_dags:   # test DAGs exist only where enabled (the tests' conftest)
    del review_dag, ingest_dag
