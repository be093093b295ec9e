"""The operator in local and render modes, through dag.test() (real Airflow, real subprocesses)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()
    assert not bag.import_errors, bag.import_errors
    return bag


def test_mapped_fanout_local(dagbag):
    dag = dagbag.get_dag("casaflow_test_fanout")
    dr = dag.test(run_conf={"execution_mode": "local"})
    assert dr.state == "success"
    tis = {(ti.task_id, ti.map_index): ti for ti in dr.get_task_instances()}
    assert sorted(k for k in tis if k[0] == "noop_group") == [("noop_group", i) for i in range(3)]
    collected = tis[("collect", -1)].xcom_pull(task_ids="collect")
    assert collected == {"n": 3, "statuses": ["success"] * 3}
