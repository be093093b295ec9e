"""Airflow DAGs that start workflows on asset events: an upstream system posts an event on a
workflow's inputs asset (REST ``POST /api/v2/assets/events``, extra = the run's conf) and
``<workflow>__on_inputs`` triggers one run per event, validated like a manual trigger. See
operators/assets.py."""

from __future__ import annotations

from operators.assets import inputs_trigger_dag
from operators.settings import settings

vlass_se_cube_on_inputs = inputs_trigger_dag(
    "vlass_se_cube", "Starts vlass_se_cube for new SE-continuum resources posted as asset events")
if settings().enable_test_dags:    # like casaflow_noop itself: only where test DAGs are enabled
    casaflow_noop_on_inputs = inputs_trigger_dag(
        "casaflow_noop", "Starts casaflow_noop for each posted asset event (tests, benchmarks)")
