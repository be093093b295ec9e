"""Waiting for many triggered DAG runs at once.

The reprocessing DAG triggers up to 1000 workflow runs per batch. Letting each
``TriggerDagRunOperator`` wait for its own run (``wait_for_completion``, deferred) costs one
deferred trigger per run polling the API server every few seconds, plus one more task process per
run when it resumes. At a 2000-dataset day that polling took the triggerer and the api-server to
most of a core between them and starved the workflow runs themselves (bench/results/README.md).
Here one trigger waits for a whole batch and asks in chunks: one request per 50 runs still
running per poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

log = logging.getLogger("casaflow.run_wait")

FINISHED = ["success", "failed"]
# run ids travel as repeated query parameters of one GET; 50 ids (~80 characters each) keep the
# request line far below the API server's 16 KiB limit on an HTTP request head.
CHUNK = 50


def group_runs(runs: Iterable[dict]) -> dict[str, list[str]]:
    """{dag_id: [run_id, ...]} from TriggerDagRunOperator kwargs (``trigger_dag_id``, ``trigger_run_id``)."""
    grouped: dict[str, list[str]] = {}
    for r in runs or []:
        grouped.setdefault(r["trigger_dag_id"], []).append(r["trigger_run_id"])
    return grouped


class DagRunsFinishedTrigger(BaseTrigger):
    """Fires once every listed run that exists has finished (success or failed).

    A listed run that does not exist (its trigger task failed before creating it) is not waited
    for: the waiting task runs only after every trigger task has ended, so by then each run that
    will ever exist does.
    """

    def __init__(self, runs: dict[str, list[str]], poll_interval: float = 15.0):
        super().__init__()
        self.runs = runs
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {"runs": self.runs,
                                                                      "poll_interval": self.poll_interval}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        count = sync_to_async(RuntimeTaskInstance.get_dr_count)
        chunks = [(dag_id, ids[i:i + CHUNK]) for dag_id, ids in self.runs.items() for i in range(0, len(ids), CHUNK)]
        # How many of each chunk's runs exist is fixed by now (every trigger task has ended), so it
        # is asked once; each poll then costs one request per chunk still running.
        pending = [(dag_id, chunk, await count(dag_id=dag_id, run_ids=chunk)) for dag_id, chunk in chunks]
        while True:
            still = []
            for dag_id, chunk, existing in pending:
                if await count(dag_id=dag_id, run_ids=chunk, states=FINISHED) < existing:
                    still.append((dag_id, chunk, existing))
            if not still:
                yield TriggerEvent({"runs": sum(len(ids) for ids in self.runs.values())})
                return
            self.log.info("%d of %d chunks of runs still running", len(still), len(chunks))
            pending = still
            await asyncio.sleep(self.poll_interval)


class WaitForDagRunsOperator(BaseOperator):
    """Waits, deferred (no worker slot held), until the given triggered runs have all finished.

    ``runs`` is the list a batch's ``TriggerDagRunOperator`` was expanded from (dicts with
    ``trigger_dag_id`` and ``trigger_run_id``), usually an XComArg. Whether each run succeeded is
    for the caller to judge afterwards: this task only waits.
    """

    template_fields = ("runs",)

    def __init__(self, *, runs: Any, poll_interval: float = 15.0, **kwargs):
        super().__init__(**kwargs)
        self.runs = runs
        self.poll_interval = poll_interval

    def execute(self, context) -> dict:
        grouped = group_runs(self.runs)
        total = sum(len(ids) for ids in grouped.values())
        if not total:
            log.info("no runs to wait for")
            return {"runs": 0}
        log.info("waiting for %d run(s) of %s", total, ", ".join(sorted(grouped)))
        self.defer(trigger=DagRunsFinishedTrigger(grouped, self.poll_interval), method_name="execute_complete")

    def execute_complete(self, context, event: dict) -> dict:
        log.info("all %d run(s) finished", event["runs"])
        return event
