"""SQLAlchemy connect arguments for the embedded runtime's SQLite database.

The scheduler, dag-processor, triggerer, api-server, tasks and CLI calls (``airflow backfill
create``) all write to one SQLite file: wait up to 60 s for a lock instead of failing after
Python's default 5 s. (WAL mode was tried and is worse here: a read transaction that must
become a write fails at once instead of waiting.)
Selected with ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS=casaflow_ops.sqlite_args.CONNECT_ARGS``.
"""

CONNECT_ARGS = {"timeout": 60}
