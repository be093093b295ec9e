"""Test environment: a private Airflow home and DAGs folder, workspaces and products in a temp
directory, and (on request) moto's S3 server over HTTP on loopback.

The Airflow environment must be in place before anything imports airflow, hence module level.
Under pytest-xdist every worker process gets its own temp directory (its own Airflow DB,
workspaces, moto server); only the simulated inputs, which are read-only to the tests and cost
minutes of CASA to build, live in one directory shared by all workers (``SHARED``).
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from casaflow_ops.runtime import free_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
_BASE = Path(tempfile.mkdtemp(prefix="casaflow-tests-"))
DAGS = _BASE / "dags"
DAGS.mkdir()
for folder in (REPO / "dags", REPO / "tests" / "dags"):
    for dag_file in sorted(folder.glob("*.py")):
        (DAGS / dag_file.name).symlink_to(dag_file)

os.environ.update({
    "AIRFLOW_HOME": str(_BASE / "airflow"),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_BASE / 'airflow' / 'airflow.db'}",
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "CASAFLOW_WORKSPACE_ROOT": str(_BASE / "workspaces"),
    "CASAFLOW_PRODUCTS_DESTINATION": str(_BASE / "products"),
    "CASAFLOW_EXECUTION_MODE": "local",
    "CASAFLOW_CASA_CACHEDIR": str(_BASE / "casa-cache"),
})
(_BASE / "airflow").mkdir()

# The first process to import this file (xdist's controller, or pytest itself without xdist)
# puts the shared directory inside its own temp directory, which it removes at the end; the
# workers it spawns inherit the variable.
os.environ.setdefault("CASAFLOW_TEST_SHARED_DIR", str(_BASE / "shared"))
SHARED = Path(os.environ["CASAFLOW_TEST_SHARED_DIR"])

# Inputs only from where the deployment allows (hooks/inputs.py): the tests' own directories and
# pytest's tmp_path directories; the S3 fixtures add their buckets. The no-op workflow and the
# test DAGs exist only when enabled, as in a deployment that wants them.
TEST_ALLOWED_INPUTS = ",".join([str(_BASE), str(SHARED),
                                str(Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}")])
os.environ["CASAFLOW_ALLOWED_INPUTS"] = TEST_ALLOWED_INPUTS
os.environ["CASAFLOW_ENABLE_TEST_DAGS"] = "1"


def pytest_configure(config):
    """``--basetemp DIR`` moves the tmp_path directories: allow inputs from there too."""
    base = config.getoption("basetemp", None)
    if base:
        os.environ["CASAFLOW_ALLOWED_INPUTS"] += "," + str(Path(base).resolve())

# CASA uses every core by default; with several test workers running CASA side by side that
# oversubscribes the cores (the platform notes measured it), so each worker gets its share.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


@pytest.fixture(scope="session")
def airflow_db():
    """An initialised Airflow metadata DB (SQLite) for dag.test()."""
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], check=True, capture_output=True, cwd=_BASE)
    return _BASE / "airflow" / "airflow.db"


@pytest.fixture(scope="session")
def base_dir():
    return _BASE


@pytest.fixture(scope="session")
def moto_server():
    """moto's S3 server over HTTP on loopback; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _new_bucket(endpoint: str):
    """A fresh bucket and the JSON of an Airflow connection casaflow_s3 pointing at it."""
    import json
    import uuid

    import boto3

    name = f"casaflow-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=name)
    conn = {"conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1",
                      "config_kwargs": {"s3": {"addressing_style": "path"}}}}
    return client, name, json.dumps(conn)


@pytest.fixture
def s3_bucket(moto_server, monkeypatch):
    client, name, conn = _new_bucket(moto_server)
    monkeypatch.setenv("AIRFLOW_CONN_CASAFLOW_S3", conn)
    monkeypatch.setenv("CASAFLOW_ALLOWED_INPUTS", f"{os.environ['CASAFLOW_ALLOWED_INPUTS']},s3://{name}")
    return client, name


@pytest.fixture(scope="module")
def s3_bucket_module(moto_server):
    client, name, conn = _new_bucket(moto_server)
    old = os.environ.get("AIRFLOW_CONN_CASAFLOW_S3")
    old_allowed = os.environ["CASAFLOW_ALLOWED_INPUTS"]
    os.environ["AIRFLOW_CONN_CASAFLOW_S3"] = conn
    os.environ["CASAFLOW_ALLOWED_INPUTS"] = f"{old_allowed},s3://{name}"
    yield client, name
    os.environ["CASAFLOW_ALLOWED_INPUTS"] = old_allowed
    if old is None:
        os.environ.pop("AIRFLOW_CONN_CASAFLOW_S3", None)
    else:
        os.environ["AIRFLOW_CONN_CASAFLOW_S3"] = old


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CASAFLOW_KEEP_TEST_DIR"):
        print(f"\ntest directory kept: {_BASE}")
    else:
        shutil.rmtree(_BASE, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    """Say it loudly when the container tests could not run (tests/containers)."""
    from tests.containers.engine import engine

    if engine() is None:
        terminalreporter.write_sep("!", "CONTAINER TESTS DID NOT RUN: no container engine (podman or docker) "
                                   "on this machine; tests/containers were skipped", red=True, bold=True)


# The longest test files start first, so that parallel test workers finish at about the same time
# (scripts/test has pytest-xdist hand out whole files in collection order). vlass_se_cube builds
# the VLASS simulation that group_failure waits for; the runtime test (operations) is mostly
# waiting on its scheduler and overlaps well with CASA, so it starts early too.
LONGEST_FIRST = ("tests/containers/test_worker_image.py", "tests/e2e/test_vlass_se_cube.py",
                 "tests/containers/test_postimaging_memory.py", "tests/e2e/test_scheduler_workflows.py",
                 "tests/e2e/test_alma_exportdata.py", "tests/e2e/test_vlass_paths.py", "tests/e2e/test_vlass_stages.py",
                 "tests/e2e/test_operations.py", "tests/containers/test_pods.py", "tests/e2e/test_alma_qa2.py",
                 "tests/e2e/test_vlass_group_failure.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep pytest's order
