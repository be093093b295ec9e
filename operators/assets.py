"""Data-aware scheduling: the Assets casaflow produces and consumes.

**Deliveries.** Each delivery emits one asset event on the asset of its workflow and products
destination (``delivery_asset``), so an archive's ingest DAG can be scheduled on casaflow's
deliveries: ``schedule=[delivery_asset("vlass_se_cube", "s3://archive/vlass")]``, reading the events as
``context["triggering_asset_events"][delivery_asset(...)]`` (iterating the mapping's values would
also list each event under the alias it was emitted through: twice). The event's
``extra`` carries ``dataset_id``, ``manifest`` (the delivery manifest's URL), ``destination``,
``dag_id``, ``run_id`` and ``objects``. The destination is a run Param, so a DAG's push task
declares an AssetAlias (``delivery_alias``) and attaches the event to the right asset at run time
(``emit_delivery``).

**New inputs.** An upstream system posts an asset event on ``inputs_asset(workflow)`` (REST
``POST /api/v2/assets/events`` with ``{"asset_id": <id>, "extra": {<the workflow's conf>}}``);
the DAG ``<workflow>__on_inputs`` (``inputs_trigger_dag``) is scheduled on that asset and
triggers one run of the workflow per event with the event's extra as its conf: the same
validation as a manual trigger (Airflow validates the conf against the workflow's Params when it
creates the run; an invalid one fails that trigger task with the Param's error).
"""

from __future__ import annotations

import datetime as dt
import logging
from urllib.parse import quote

from airflow.sdk import Asset, AssetAlias

log = logging.getLogger("casaflow.assets")

# Keys of an inputs event's extra that are Airflow's or the poster's bookkeeping, not conf.
NOT_CONF = ("from_rest_api", "from_trigger")


def delivery_asset(workflow: str, destination: str) -> Asset:
    """The asset of ``workflow``'s deliveries to ``destination`` (one per workflow and destination)."""
    dest = destination.rstrip("/")
    return Asset(name=f"casaflow.delivery.{workflow}:{dest}",
                 uri=f"x-casaflow-delivery://{workflow}/{quote(dest, safe='')}", group="casaflow-delivery")


def delivery_alias(workflow: str) -> AssetAlias:
    """Declared as the outlet of ``workflow``'s push task."""
    return AssetAlias(name=f"casaflow.deliveries.{workflow}", group="casaflow-delivery")


def push_task_assets(workflow: str) -> dict:
    """The ``@task(...)`` keywords of ``workflow``'s push task: the alias its events go through
    (outlet), and the asset of the deployment's default destination as an inlet. The inlet emits
    nothing; it makes the DAG processor create that asset when it parses the DAG. Otherwise the
    first deliveries of several runs finishing at once each try to create it while recording
    their event, all but one fail on the asset table's unique name, and Airflow marks a push
    that has delivered as failed."""
    from .workflow import destination

    return {"outlets": [delivery_alias(workflow)], "inlets": [delivery_asset(workflow, destination({}))]}


def emit_delivery(context, delivered: dict) -> None:
    """Attach the delivery's asset event (extra: dataset id, manifest ...) to the push task's alias.
    ``delivered`` is push_products' summary."""
    from .workflow import destination

    dag_id = context["dag"].dag_id
    dest = destination(context.get("params") or {})
    asset = delivery_asset(dag_id, dest)
    extra = {"dataset_id": delivered["dataset_id"], "manifest": delivered["manifest"], "destination": dest,
             "dag_id": dag_id, "run_id": context["run_id"], "objects": delivered.get("objects")}
    context["outlet_events"][delivery_alias(dag_id)].add(asset, extra=extra)
    log.info("asset event on %s: %s", asset.name, extra)


def inputs_asset(workflow: str) -> Asset:
    """Posting an event on this asset (extra = the inputs and Params) starts a run of ``workflow``."""
    return Asset(name=f"casaflow.inputs.{workflow}", uri=f"x-casaflow-inputs://{workflow}", group="casaflow-inputs")


def inputs_trigger_dag(workflow: str, description: str):
    """``<workflow>__on_inputs``: scheduled on ``inputs_asset(workflow)``; one run of ``workflow`` per
    asset event, its conf the event's extra."""
    import pendulum
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
    from airflow.sdk import DAG, task

    with DAG(dag_id=f"{workflow}__on_inputs", schedule=[inputs_asset(workflow)],
             start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, max_active_runs=1,
             tags=["casaflow", "assets"], description=description,
             doc_md=f"Starts `{workflow}` for each event posted on the asset `{inputs_asset(workflow).name}` "
                    f"(extra = the run's conf). See operators/assets.py.") as dag:

        @task
        def runs_to_start(**context) -> list[dict]:
            """One trigger per asset event; an extra that is not an object is refused here."""
            from airflow.sdk.exceptions import AirflowFailException

            out = []
            events = context["triggering_asset_events"][inputs_asset(workflow)]
            for ev in sorted(events, key=lambda e: e.timestamp):
                extra = dict(ev.extra or {})
                for key in NOT_CONF:
                    extra.pop(key, None)
                if not extra:
                    raise AirflowFailException(f"asset event of {ev.timestamp.isoformat()}: extra is empty; "
                                               f"expected the {workflow} conf (its inputs and Params)")
                # One run per event: the event's time names it (a re-run of this task finds it).
                stamp = ev.timestamp.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
                out.append({"conf": extra, "trigger_run_id": f"asset__{stamp}__{len(out)}"})
            log.info("%d run(s) of %s to start", len(out), workflow)
            return out

        TriggerDagRunOperator.partial(task_id="trigger", trigger_dag_id=workflow, logical_date=None,
                                      wait_for_completion=False,
                                      map_index_template="{{ task.trigger_run_id }}").expand_kwargs(runs_to_start())
    return dag
