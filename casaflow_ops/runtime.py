"""The embedded single-machine runtime: Airflow (LocalExecutor) with its api-server, scheduler,
dag-processor and triggerer, its metadata database in SQLite (the default) or in a PostgreSQL
server installed from PyPI (``database="postgres"``: casaflow_ops/pgserver.py, data under
``airflow/pgdata``, Unix socket only, started and stopped with the runtime), and optionally moto's
S3 server on loopback.

Everything lives under one run directory (default ``.casaflow/runtime`` in the repository):
``airflow/`` (home and DB), ``logs/<component>.log``, ``pids/<component>.pid``, ``runtime.json``
(ports, login, destination). Components are started in their own process groups and stopped by
the PIDs recorded here, never by name. Products go to ``.casaflow/products`` by default, which
outlives the runtime.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from casaflow_ops.sqlite_args import CONNECT_ARGS

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Two api-servers: "api-server" serves the REST API and the UI (--apps core) on the runtime's port,
# "execution-api" the task processes' Execution API (--apps execution) on a port of its own. Sharing
# one process, a GET of the runs list waited 10 s behind the heartbeats and state updates of eight
# running tasks (bench/reprocess_scale); apart, each has its own process (and its own share of the
# CPU: every component is a session of its own, which Linux's autogroup schedules fairly).
COMPONENTS = ("execution-api", "api-server", "scheduler", "dag-processor", "triggerer")   # triggerer: deferred waits
# Seconds a client waits for the api-server: longer than an SQLite lock wait (sqlite_args.CONNECT_ARGS).
API_TIMEOUT = CONNECT_ARGS["timeout"] + 30
S3_BUCKET = "casaflow-products"


@dataclass
class Runtime:
    home: Path
    port: int = 8080
    s3_port: int | None = None
    user: str = "admin"
    password: str = ""
    products: str = ""
    extra_dags: str = ""     # another DAG folder parsed beside dags/ (tests: tests/dags)
    database: str = "sqlite"  # "sqlite" | "postgres"
    db_url: str = ""          # postgres: the SQLAlchemy URL over the server's Unix socket (set by up())
    execution_port: int = 0   # the Execution API's own api-server (loopback; chosen by up() if 0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- files ------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.home / "runtime.json"

    def save(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        data["home"] = str(self.home)
        self.state_file.write_text(json.dumps(data, indent=2))
        self.state_file.chmod(0o600)   # holds the generated login password

    @classmethod
    def load(cls, home: Path) -> "Runtime":
        data = json.loads((home / "runtime.json").read_text())
        data["home"] = Path(data["home"])
        return cls(**data)

    def env(self) -> dict:
        air = self.home / "airflow"
        env = dict(os.environ)
        env.update({
            "AIRFLOW_HOME": str(air),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # 2 cores: two CASA tasks side by side, one OpenMP thread each (platform notes).
            "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM", "2"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{air / 'airflow.db'}",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "casaflow_ops.sqlite_args.CONNECT_ARGS",
            # SQLite has one writer: while the scheduler expands 1000 mapped tasks in one
            # transaction the api-server's requests wait for the lock (up to sqlite_args' 60 s).
            # Task processes must wait longer than that; with Airflow's default 5 s they gave up
            # after their retries and a task of a 10,000-dataset day failed (bench/reprocess_scale).
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": str(API_TIMEOUT),
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.url,
            **({"AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.execution_port}/execution/"}
               if self.execution_port else {}),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(air / "passwords.json"),
            # An unchanged DAG file is parsed again after 30 s (Airflow's default); at 10 s the
            # dag-processor took 10-25 % of a core all day long (bench/reprocess_scale). New files
            # still appear within REFRESH_INTERVAL.
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "CASAFLOW_WORKSPACE_ROOT": str(self.home / "workspaces"),
            "CASAFLOW_PRODUCTS_DESTINATION": self.products,
            "CASAFLOW_EXECUTION_MODE": env.get("CASAFLOW_EXECUTION_MODE", "local"),
            "CASAFLOW_OMP_THREADS": env.get("CASAFLOW_OMP_THREADS", "1"),
            # Inputs only from the runtime's data directory <home>/../data (never the home, which
            # holds the generated login) and its S3 bucket, unless the caller (the tests, a
            # benchmark) names its own (hooks/inputs.py).
            "CASAFLOW_ALLOWED_INPUTS": env.get("CASAFLOW_ALLOWED_INPUTS")
            or ",".join([str(self.home.parent / "data")] + ([f"s3://{S3_BUCKET}"] if self.s3_port else [])),
            "PYTHONPATH": str(REPO),
        })
        if self.database == "postgres":
            if not self.db_url:
                raise RuntimeError("the runtime's PostgreSQL server has not been started (runtime up)")
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.db_url
            del env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"]     # SQLite's lock waits only
        if self.extra_dags:
            bundle = "airflow.dag_processing.bundles.local.LocalDagBundle"
            env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps([
                {"name": "dags-folder", "classpath": bundle, "kwargs": {}},
                {"name": "extra-dags", "classpath": bundle, "kwargs": {"path": self.extra_dags}}])
        if self.s3_port:
            env["AIRFLOW_CONN_CASAFLOW_S3"] = json.dumps({
                "conn_type": "aws", "login": "casaflow-local", "password": "casaflow-local",
                "extra": {"endpoint_url": f"http://127.0.0.1:{self.s3_port}", "region_name": "us-east-1",
                          "config_kwargs": {"s3": {"addressing_style": "path"}}}})
        return env

    def pid_file(self, name: str) -> Path:
        return self.home / "pids" / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        try:
            pid = int(self.pid_file(name).read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        try:       # started by this very process (tests, benchmarks): reap it once it has exited
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return None
        except ChildProcessError:
            pass
        return pid

    # -- lifecycle --------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        if self.pid(name):
            return
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        (self.home / "pids").mkdir(parents=True, exist_ok=True)
        log = open(self.home / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=self.home,
                                start_new_session=True)
        self.pid_file(name).write_text(str(proc.pid))

    def up(self, timeout: float = 180.0) -> None:
        air = self.home / "airflow"
        air.mkdir(parents=True, exist_ok=True)
        passwords = air / "passwords.json"
        if not passwords.exists():
            passwords.write_text(json.dumps({self.user: self.password}))
            passwords.chmod(0o600)
        if self.database == "postgres":
            from . import pgserver

            self.db_url = pgserver.start(self.pgdata)
            self.save()
        subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=self.env(), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.s3_port:
            self._spawn("s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.s3_port)])
        if not self.execution_port:
            self.execution_port = free_port()
            self.save()
        for name in COMPONENTS:
            if name == "scheduler":   # its forked task processes inherit the preloaded modules
                self._spawn(name, [str(BIN / "python"), "-m", "casaflow_ops.airflow_component", name])
            elif name == "execution-api":
                self._spawn(name, [str(BIN / "airflow"), "api-server", "--apps", "execution",
                                   "--port", str(self.execution_port)])
            elif name == "api-server":
                self._spawn(name, [str(BIN / "airflow"), "api-server", "--apps", "core"])
            else:
                self._spawn(name, [str(BIN / "airflow"), name])
        self.wait_healthy(timeout)
        if self.s3_port:
            self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.s3_port}", region_name="us-east-1",
                              aws_access_key_id="casaflow-local", aws_secret_access_key="casaflow-local")
        if S3_BUCKET not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
            client.create_bucket(Bucket=S3_BUCKET)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as r:
                    health = json.loads(r.read())
                if health.get("scheduler", {}).get("status") == "healthy" and self._execution_api_up():
                    return
                last = json.dumps(health)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last = str(exc)
            for name in COMPONENTS:
                if not self.pid(name):
                    raise RuntimeError(f"{name} exited; see {self.home / 'logs' / (name + '.log')}")
            time.sleep(2)
        raise TimeoutError(f"Airflow not healthy after {timeout:.0f} s ({last}); logs in {self.home / 'logs'}")

    def _execution_api_up(self) -> bool:
        if not self.execution_port:
            return True
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.execution_port}/execution/health", timeout=5) as r:
                return json.loads(r.read()).get("status") == "healthy"
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def down(self, timeout: float = 30.0) -> list[str]:
        """SIGTERM every component's process group, wait for all at once, SIGKILL what is left."""
        running = {}
        for name in (*reversed(COMPONENTS), "s3"):
            pid = self.pid(name)
            if pid is None:
                self.pid_file(name).unlink(missing_ok=True)
                continue
            running[name] = pid
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while any(self.pid(n) for n in running) and time.monotonic() < deadline:
            time.sleep(0.5)
        for name, pid in running.items():
            if self.pid(name):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.pid_file(name).unlink(missing_ok=True)
        if self.database == "postgres":
            from . import pgserver

            if pgserver.stop(self.pgdata):           # after every client is gone
                running["postgres"] = 0
        return list(running)

    @property
    def pgdata(self) -> Path:
        return self.home / "airflow" / "pgdata"

    def status(self) -> dict:
        out = {name: ("running (pid %d)" % p) if (p := self.pid(name)) else "stopped"
               for name in (*COMPONENTS, *(("s3",) if self.s3_port else ()))}
        if self.database == "postgres":
            from . import pgserver

            p = pgserver.pid(self.pgdata)
            out["postgres"] = f"running (pid {p})" if p else "stopped"
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as r:
                out["health"] = json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            out["health"] = f"unreachable ({exc})"
        return out


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_home() -> Path:
    return Path(os.environ.get("CASAFLOW_RUNTIME_DIR", REPO / ".casaflow" / "runtime"))


class RuntimeInUse(RuntimeError):
    """The runtime is up, and the change asked for would need a restart."""


def create(home: Path | None = None, port: int = 8080, with_s3: bool = False, s3_port: int = 9000,
           extra_dags: Path | None = None, database: str = "sqlite") -> Runtime:
    """``extra_dags``: a DAG folder parsed beside the repository's dags/ (the tests' DAGs);
    ``database``: "sqlite" or "postgres" (fixed when the runtime's directory is first made)."""
    if database not in ("sqlite", "postgres"):
        raise ValueError(f"database: expected sqlite or postgres, got {database!r}")
    home = home or default_home()
    if (home / "runtime.json").exists():
        rt = Runtime.load(home)
        if with_s3 and not rt.s3_port:
            running = [n for n in COMPONENTS if rt.pid(n)]
            if running:     # its components keep their environment: the push would stay local
                raise RuntimeInUse(f"the runtime in {home} is up with products in {rt.products} "
                                   f"({', '.join(running)} running): stop it first (casaflow runtime down) "
                                   "to switch it to S3")
            rt.s3_port = s3_port
            rt.products = f"s3://{S3_BUCKET}/deliveries"
        rt.save()
        return rt
    products = f"s3://{S3_BUCKET}/deliveries" if with_s3 else str(home.parent / "products")
    rt = Runtime(home=home, port=port, s3_port=s3_port if with_s3 else None,
                 password=secrets.token_urlsafe(12), products=products,
                 extra_dags=str(Path(extra_dags).resolve()) if extra_dags else "", database=database)
    rt.save()
    return rt


class Api:
    """A small REST client for the runtime (Airflow's CLI costs ~4 s a call)."""

    def __init__(self, rt: Runtime):
        self.rt = rt
        self._token = None

    def _request(self, method: str, path: str, body=None, auth: bool = True):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.rt.url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        if auth:
            req.add_header("Authorization", f"Bearer {self.token()}")
        try:
            with urllib.request.urlopen(req, timeout=API_TIMEOUT) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")

    def token(self) -> str:
        if self._token is None:
            status, body = self._request("POST", "/auth/token",
                                         {"username": self.rt.user, "password": self.rt.password}, auth=False)
            if status not in (200, 201):
                raise RuntimeError(f"login to {self.rt.url} failed: HTTP {status} {body}")
            self._token = body["access_token"]
        return self._token

    def get(self, path: str):
        return self._request("GET", path)

    def post(self, path: str, body: dict):
        return self._request("POST", path, body)

    def patch(self, path: str, body: dict):
        return self._request("PATCH", path, body)

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _ = self.get(f"/api/v2/dags/{dag_id}")
            if status == 200:
                return
            time.sleep(2)
        raise TimeoutError(f"DAG {dag_id} not parsed after {timeout:.0f} s")

    def trigger(self, dag_id: str, conf: dict) -> tuple[int, dict]:
        self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})
        return self.post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
