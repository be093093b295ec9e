"""The batch wait of reprocess_catalog: one deferred trigger per batch, serialisable for the triggerer.

Its behaviour against a real scheduler and api-server is exercised by tests/e2e/test_operations.py
(backfills whose report judges every dataset only after its run finished)."""

from __future__ import annotations

import importlib
from pathlib import Path

from operators.run_wait import CHUNK, DagRunsFinishedTrigger, WaitForDagRunsOperator, group_runs

REPO = Path(__file__).resolve().parents[2]


def test_group_runs_by_workflow_in_order():
    runs = [{"trigger_dag_id": "a", "trigger_run_id": "r1", "conf": {}},
            {"trigger_dag_id": "b", "trigger_run_id": "r2", "conf": {}},
            {"trigger_dag_id": "a", "trigger_run_id": "r3", "conf": {}}]
    assert group_runs(runs) == {"a": ["r1", "r3"], "b": ["r2"]}
    assert group_runs([]) == {} and group_runs(None) == {}


def test_trigger_round_trips_through_its_classpath():
    trigger = DagRunsFinishedTrigger({"casaflow_noop": [f"r{i}" for i in range(3 * CHUNK + 1)]}, poll_interval=2.5)
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert kwargs["poll_interval"] == 2.5 and len(kwargs["runs"]["casaflow_noop"]) == 3 * CHUNK + 1


def test_reprocess_catalog_waits_per_batch_not_per_run():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "reprocess_catalog.py"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["reprocess_catalog"]
    waits = [t for t in dag.tasks if t.task_id.startswith("wait_")]
    assert len(waits) == 10
    for w in waits:
        k = w.task_id.split("_")[1]
        assert isinstance(w, WaitForDagRunsOperator) and w.trigger_rule == "all_done"
        assert {f"select_{k}", f"trigger_{k}"} <= w.upstream_task_ids
        assert "report" in w.downstream_task_ids
        trigger = dag.get_task(f"trigger_{k}")
        assert trigger.partial_kwargs.get("wait_for_completion") is False
    assert dag.get_task("report").upstream_task_ids == {w.task_id for w in waits}


def test_reprocess_catalog_creates_one_batch_of_runs_at_a_time():
    """Batch k+1 is selected (and its trigger tasks expanded) only once batch k's runs are created,
    even if some of batch k's triggers failed: at 10,000 datasets, expanding six batches in one
    scheduler loop kept the api-server waiting on SQLite's write lock for up to 43 s."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags" / "reprocess_catalog.py")).dags["reprocess_catalog"]
    assert dag.get_task("select_0").upstream_task_ids == set()
    for k in range(1, 10):
        select = dag.get_task(f"select_{k}")
        assert select.upstream_task_ids == {f"trigger_{k - 1}"} and select.trigger_rule == "all_done"


def test_the_datasets_tasks_outrank_the_trigger_tasks(airflow_db):
    """The scheduler queues the highest priority first. Every task of every workflow a trigger
    starts must outrank every trigger task, or a big day runs all its triggers before any
    dataset's task (seen: 2000 triggers first, the first delivery after 33 min). The weights are
    computed as the scheduler does: from the serialized DAG, by the task's weight rule."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.taskinstance import TaskInstance
    from airflow.serialization.serialized_objects import DagSerialization

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors

    def weights(dag_id: str) -> dict[str, int]:
        dag = DagSerialization.from_dict(DagSerialization.to_dict(bag.dags[dag_id]))
        return {t.task_id: TaskInstance(task=t, run_id="r", map_index=0, dag_version_id=None).priority_weight
                for t in dag.tasks}

    reprocess = weights("reprocess_catalog")
    triggers = {k: v for k, v in reprocess.items() if k.startswith("trigger_")}
    assert len(triggers) == 10
    workflows = bag.dags["reprocess_catalog"].params.get_param("workflows").schema["items"]["enum"]
    assert set(workflows) == {"vlass_se_cube", "alma_exportdata", "casaflow_noop"}
    for dag_id in workflows:
        task_id, lowest = min(weights(dag_id).items(), key=lambda kv: kv[1])
        assert lowest > max(triggers.values()), (dag_id, task_id, lowest, triggers)
