"""The Airflow image (images/airflow/Dockerfile on the local stand-in for apache/airflow): every DAG
of the repository imports inside it, casaflow's Airflow layer and the providers import, CASA does not
(the scheduler side never needs it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from . import engine

pytestmark = [pytest.mark.containers]

REPO = Path(__file__).resolve().parents[2]


def in_airflow(image: str, script: str):
    return engine.run("run", "--rm", "--network=none", "--cap-drop=ALL", "--security-opt", "no-new-privileges",
                      "--tmpfs", "/tmp", "-e", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:////tmp/airflow.db",
                      image, "sh", "-c", script, timeout=900)


def json_line(text: str):
    """The JSON document among Airflow's log lines (the CLI prints warnings on stdout too)."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith(("[{", "[]", "{")):
            return json.loads(line)
    raise AssertionError(f"no JSON output in:\n{text[-3000:]}")


def test_every_dag_imports_in_the_airflow_image(images):
    proc = in_airflow(images["airflow"], "airflow db migrate >/dev/null 2>&1 && "
                      "airflow dags list-import-errors --local -o json 2>/dev/null && echo '---' && "
                      "airflow dags list --local -o json 2>/dev/null")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors_text, dags_text = proc.stdout.split("\n---\n", 1)
    assert json_line(errors_text) == [], errors_text[-3000:]          # no DAG file fails to import
    dag_ids = {d["dag_id"] for d in json_line(dags_text)}
    expected = {"vlass_se_cube", "alma_exportdata", "alma_qa2_package", "reprocess_catalog"}
    assert expected <= dag_ids, dag_ids
    assert "casaflow_test_operator" not in dag_ids       # tests/dags is not in the image


def test_airflow_image_packages_and_user(images):
    probe = ("import importlib.util as u, json, os, sys\n"
             "mods = ['casaflow', 'operators', 'hooks', 'casaflow_ops', 'airflow.providers.cncf.kubernetes',"
             " 'airflow.providers.amazon', 'boto3', 'casatools', 'casatasks']\n"
             "from importlib import metadata\n"
             "print(json.dumps({'found': {m: u.find_spec(m.split('.')[0]) is not None and u.find_spec(m) is not None"
             " for m in mods}, 'uid': os.getuid(), 'gid': os.getgid(), 'umask': os.umask(0),"
             " 'airflow': metadata.version('apache-airflow'), 'dags': os.environ.get('AIRFLOW__CORE__DAGS_FOLDER'),"
             " 'python': sys.version_info[:3]}))\n")
    proc = engine.run("run", "--rm", "--network=none", images["airflow"], "python", "-c", probe)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    found = info["found"]
    assert all(found[m] for m in found if not m.startswith("casatool") and m != "casatasks"), found
    assert not found["casatools"] and not found["casatasks"]
    pins = dict(line.split("==", 1) for line in (REPO / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert info["airflow"] == pins["apache-airflow"]
    assert info["uid"] == engine.AIRFLOW_UID and info["gid"] == 0
    assert info["umask"] == 0o002                          # the workspace umask (images/airflow entrypoint)
    assert info["dags"] == "/opt/casaflow-src/dags" and tuple(info["python"]) >= (3, 11, 4)
