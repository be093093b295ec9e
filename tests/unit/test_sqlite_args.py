"""The embedded runtime's SQLite connect arguments: a nested-transaction write waits for another
process's write lock instead of failing with "database is locked" (what `airflow backfill create`
hit while the scheduler was writing)."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from casaflow_ops.sqlite_args import CONNECT_ARGS


def hold_write_lock(path, seconds: float, locked: threading.Event) -> threading.Thread:
    """Another process's writer: takes the write lock, keeps it `seconds`, commits."""
    def run():
        con = sqlite3.connect(path, timeout=60, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO t VALUES ('other')")
        locked.set()
        time.sleep(seconds)
        con.execute("COMMIT")
        con.close()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def read_then_write_in_savepoint(engine) -> None:
    """What backfill creation does per run: SAVEPOINT, read the latest run, insert the new one."""
    with Session(engine) as session:
        with session.begin_nested():
            session.execute(sa.text("SELECT count(*) FROM t")).scalar()
            session.execute(sa.text("INSERT INTO t VALUES ('mine')"))
        session.commit()


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "airflow.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (v TEXT)")
    con.commit()
    con.close()
    return path


def test_plain_sqlite_fails_at_once(db):
    """The failure this module exists for: without it the write fails at once, busy timeout or not."""
    engine = sa.create_engine(f"sqlite:///{db}", connect_args={"timeout": 60})
    locked = threading.Event()
    other = hold_write_lock(db, 1.0, locked)
    locked.wait(5)
    t0 = time.monotonic()
    with pytest.raises(sa.exc.OperationalError, match="database is locked"):
        read_then_write_in_savepoint(engine)
    assert time.monotonic() - t0 < 0.9
    other.join()


def test_connect_args_make_the_savepoint_write_wait(db):
    engine = sa.create_engine(f"sqlite:///{db}", connect_args=CONNECT_ARGS)
    locked = threading.Event()
    other = hold_write_lock(db, 1.0, locked)
    locked.wait(5)
    read_then_write_in_savepoint(engine)
    other.join()
    with engine.connect() as con:
        assert sorted(con.execute(sa.text("SELECT v FROM t")).scalars()) == ["mine", "other"]


def test_rolled_back_savepoint_and_plain_writes_still_work(db):
    engine = sa.create_engine(f"sqlite:///{db}", connect_args=CONNECT_ARGS)
    with Session(engine) as session:
        session.execute(sa.text("INSERT INTO t VALUES ('kept')"))
        nested = session.begin_nested()
        session.execute(sa.text("INSERT INTO t VALUES ('undone')"))
        nested.rollback()
        session.commit()
    with Session(engine) as session:
        with session.begin_nested():
            session.execute(sa.text("INSERT INTO t VALUES ('nested')"))
        session.rollback()
    with engine.connect() as con:
        assert sorted(con.execute(sa.text("SELECT v FROM t")).scalars()) == ["kept"]


def test_embedded_runtime_clients_outwait_a_lock(tmp_path):
    """Task processes and casaflow's API client wait longer for the api-server than the api-server
    waits for SQLite's write lock; Airflow's default (5 s) made tasks fail while the scheduler
    expanded a batch of 1000 mapped tasks."""
    from casaflow_ops import runtime

    env = runtime.create(home=tmp_path / "rt", port=8999).env()
    assert float(env["AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT"]) > CONNECT_ARGS["timeout"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] == "casaflow_ops.sqlite_args.CONNECT_ARGS"
