"""SQLAlchemy connect arguments for the embedded runtime's SQLite database.

The scheduler, dag-processor, triggerer, api-server, tasks and CLI calls (``airflow backfill
create``) all write to one SQLite file. Two settings make them wait for each other instead of
failing with "database is locked":

* ``timeout``: wait up to 60 s for a lock instead of Python's default 5 s.
* ``factory``: a transaction that SQLAlchemy opens with a SAVEPOINT (``session.begin_nested()``,
  which ``airflow backfill create`` uses for every run it creates) starts with
  ``BEGIN IMMEDIATE``, i.e. takes the write lock up front. Otherwise SQLite starts it as a read
  transaction, and when the first write inside it finds another process holding the write lock
  SQLite fails at once: it never waits (no busy timeout applies) when a read transaction must
  become a write transaction, because two such transactions could wait for each other forever.
  Transactions that start with a write (the usual case: Python's sqlite3 opens them just before
  the first INSERT/UPDATE/DELETE) take the write lock with their first statement and wait as they
  should, so they are left alone.

(WAL mode was tried and is worse here: it makes the same read-to-write upgrade fail whenever
another connection has committed since the read began.)
Selected with ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS=casaflow_ops.sqlite_args.CONNECT_ARGS``.
"""

from __future__ import annotations

import sqlite3


class ImmediateSavepointCursor(sqlite3.Cursor):
    """A cursor that opens a write transaction before a SAVEPOINT that would start one."""

    def execute(self, sql, parameters=(), /):
        if not self.connection.in_transaction and sql.lstrip()[:9].upper() == "SAVEPOINT":
            super().execute("BEGIN IMMEDIATE")
        return super().execute(sql, parameters)


class ImmediateSavepointConnection(sqlite3.Connection):
    """sqlite3 connection whose cursors are :class:`ImmediateSavepointCursor`."""

    def cursor(self, factory=ImmediateSavepointCursor):
        return super().cursor(factory)


CONNECT_ARGS = {"timeout": 60, "factory": ImmediateSavepointConnection}
