"""Run an Airflow component (``python -m casaflow_ops.airflow_component scheduler``) with the
modules every casaflow task needs already imported.

LocalExecutor forks its worker processes from the scheduler, and each task process from a worker,
so whatever the scheduler has imported is already in memory in every task. The task runner,
KubernetesPodOperator with the kubernetes client, and casaflow's operators and hooks take ~1.5-2 s
of CPU to import; paid once here instead of in every task, that is a large share of a short task's
cost on a small machine (bench/results/README.md, reprocess_scale).
"""

from __future__ import annotations

import importlib
import sys

PRELOAD = (
    "airflow.sdk.execution_time.task_runner",
    "airflow.providers.cncf.kubernetes.operators.pod",
    "operators.casa_stage",
    "operators.workflow",
    "hooks.inputs",
    "hooks.product_store",
)


def main() -> int:
    for name in PRELOAD:
        importlib.import_module(name)
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", *sys.argv[1:]]
    return airflow_main()


if __name__ == "__main__":
    sys.exit(main())
