"""Scheduled reprocessing from the input catalog: one workflow run per dataset observed in the run's
data interval.

    select_k -> trigger_k -> wait_k (k < 10: batch k of the day's datasets, <= 1000 runs each;
      trigger_k creates the runs, one mapped task each, and wait_k waits for the whole batch in
      one deferred trigger: no per-run polling)
      -> report (always: per dataset state, tries, manifest, failure; pushed; fails the run if a
         dataset failed, so a backfill with --reprocess-behavior failed redoes just that day)
    trigger_k -> select_k+1 (the batches' runs are created one batch after another)

The schedule is a data-interval timetable: the run for day D covers datasets *observed* in
[D, D+1). A campaign is a backfill over a date range:

    airflow backfill create --dag-id reprocess_catalog --from-date 2026-03-01 --to-date 2026-05-31 \\
        --max-active-runs 2 [--reprocess-behavior none|failed|completed]

A dataset already delivered from the same catalog record (inputs, params and software wanted:
its fingerprint) by the deployed casaflow version is skipped unless the run's ``reprocess`` Param
is true, so re-running a day redoes only what is missing or failed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, task
from airflow.timetables.interval import CronDataIntervalTimetable

from operators.run_wait import WaitForDagRunsOperator
from operators.params import optional, setting
from operators.workflow import LOCATION, execution_mode_param, products_destination_param

log = logging.getLogger("casaflow.reprocess")

BATCH_SIZE = 1000          # below Airflow's max_map_length (1024)
MAX_BATCHES = 10           # so one day holds at most 10,000 datasets; more is refused, loudly
WORKFLOW_IDS = ["vlass_se_cube", "alma_exportdata", "casaflow_noop"]
TRIGGER_PRIORITY = 0       # the scheduler's priority of the trigger tasks: below every workflow task

with DAG(
    dag_id="reprocess_catalog",
    description="Reprocess the catalog's datasets observed in each data interval",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=2,
    tags=["casaflow", "operations"],
    doc_md=__doc__,
    params={
        "catalog": optional("Catalog", "The input catalog (JSON): an absolute path or s3://bucket/key. Empty: the "
                                       "deployment's catalog (CASAFLOW_CATALOG).", pattern=LOCATION,
                            examples=["/data/catalog.json", "s3://archive-bucket/catalog.json"]),
        # A multi-select (the form offers the examples, labelled by values_display).
        "workflows": setting(WORKFLOW_IDS, "Workflows", "Only datasets of these workflows are processed.",
                             type="array", items={"type": "string", "enum": WORKFLOW_IDS}, uniqueItems=True,
                             minItems=1, examples=WORKFLOW_IDS,
                             values_display={"vlass_se_cube": "VLASS-SE-CUBE (vlass_se_cube)",
                                             "alma_exportdata": "ALMA exportdata (alma_exportdata)",
                                             "casaflow_noop": "No-op (casaflow_noop)"}),
        "reprocess": setting(False, "Reprocess delivered datasets",
                             "Redo datasets already delivered from the same catalog record and software.",
                             type="boolean"),
        "products_destination": products_destination_param(
            "Where the workflows deliver, and where the run's report goes. Empty: the deployment's default."),
        "execution_mode": execution_mode_param("Passed to every triggered workflow run."),
    },
) as dag:

    # all_done: select_k also follows trigger_k-1 (below), and a failed trigger must not stop the
    # next batch.
    @task(trigger_rule="all_done")
    def select(k: int, **context) -> list[dict]:
        """Batch k of the datasets observed in the data interval (catalog order by observation time):
        each is triggered or skipped (with the reason). Returns the batch's TriggerDagRunOperator
        arguments; the selection itself goes to XCom key 'selection' for the report."""
        from importlib.metadata import version

        from airflow.sdk.exceptions import AirflowFailException

        from casaflow.errors import InputError
        from casaflow_ops import catalog
        from hooks.inputs import read_bytes
        from hooks.product_store import ProductStoreHook
        from operators.settings import settings
        from operators.workflow import destination

        params = context["params"]
        start, end = context["data_interval_start"], context["data_interval_end"]
        location = params["catalog"] or settings().catalog
        if not location:
            raise AirflowFailException("no catalog: set the run's 'catalog' Param or the deployment's CASAFLOW_CATALOG")
        try:
            records = catalog.parse(read_bytes(location, settings().aws_conn_id), location)
        except (catalog.CatalogError, InputError) as exc:      # a bad catalog is not retried
            raise AirflowFailException(str(exc)) from None
        chosen = catalog.select(records, start, end, params["workflows"])
        if len(chosen) > BATCH_SIZE * MAX_BATCHES:
            raise AirflowFailException(f"{len(chosen)} datasets in {start}..{end}: more than one run can trigger "
                                       f"({BATCH_SIZE * MAX_BATCHES}); use a shorter schedule interval")
        mine = chosen[k * BATCH_SIZE:(k + 1) * BATCH_SIZE]
        store = ProductStoreHook(destination(params), settings().aws_conn_id)
        deployed = version("casaflow")
        attempt = context["ti"].try_number
        trigger, skipped = [], []
        for r in mine:
            base = {"id": r.id, "workflow": r.workflow, "observed": r.observed.isoformat(), "fingerprint": r.fingerprint}
            if r.software_version and r.software_version != deployed:
                skipped.append({**base, "reason": f"software version {r.software_version} wanted, {deployed} deployed"})
                continue
            head = None if params["reprocess"] else store.delivered(r.id)
            if head and head["parameters"].get("request_fingerprint") == r.fingerprint \
                    and head["software"].get("casaflow") == deployed:
                skipped.append({**base, "reason": "already delivered from the same record and software",
                                "manifest": head["url"], "run_id": head["run"].get("run_id", "")})
                continue
            run_id = f"reprocess__{r.id}__{r.fingerprint}__{start:%Y%m%d}__t{attempt}"
            trigger.append({**base, "run_id": run_id,
                            "conf": r.conf(params["products_destination"], params["execution_mode"])})
        log.info("%s..%s batch %d: %d datasets, %d to run, %d skipped", start, end, k, len(mine), len(trigger),
                 len(skipped))
        for s in skipped:
            log.info("skip %s: %s", s["id"], s["reason"])
        context["ti"].xcom_push(key="selection", value={
            "interval": [start.isoformat(), end.isoformat()], "attempt": attempt, "skipped": skipped,
            "trigger": [{k2: v for k2, v in t.items() if k2 != "conf"} for t in trigger]})
        return [{"trigger_dag_id": t["workflow"], "trigger_run_id": t["run_id"], "conf": t["conf"]} for t in trigger]

    waits, previous = [], None
    for k in range(MAX_BATCHES):
        batch = select.override(task_id=f"select_{k}")(k)
        # One batch's trigger tasks are created at a time, so one scheduler loop expands at most
        # 1000 mapped tasks (in one transaction). On the embedded runtime's SQLite, six batches
        # expanded in one loop took ~30 s and the api-server's requests waited up to 43 s for the
        # write lock. One batch still stalls requests for 10-40 s; the runtime's API timeout covers
        # that (casaflow_ops/runtime.py). Runs cannot start faster than they finish, so the
        # day's throughput is unchanged.
        if previous is not None:
            previous >> batch
        # Below every workflow task (their weights are >= 1): the scheduler queues by priority, so
        # the runs already triggered take the slots first and deliveries start with the first batch.
        # At the default (downstream) weight a trigger outranked them, and on a 2000-dataset day
        # every trigger ran before any dataset's task: the first delivery came after 33 min.
        trigger = TriggerDagRunOperator.partial(
            task_id=f"trigger_{k}", logical_date=None, wait_for_completion=False,
            map_index_template="{{ task.trigger_run_id }}", weight_rule="absolute", priority_weight=TRIGGER_PRIORITY,
        ).expand_kwargs(batch)
        # all_done: a run whose trigger failed is never created and is reported as such; the
        # others are still waited for, so the report never judges a run that is still going.
        wait = WaitForDagRunsOperator(task_id=f"wait_{k}", runs=batch, trigger_rule="all_done")
        trigger >> wait
        waits.append(wait)
        previous = trigger

    @task(trigger_rule="all_done")
    def report(**context) -> dict:
        """Per dataset: state, tries, delivered manifest, failure class and message; pushed beside the
        deliveries (``_reports/``). Fails the run when a dataset failed."""
        from airflow.sdk.exceptions import AirflowFailException

        from casaflow_ops.status import cost_of, failure_of, tries_of
        from hooks.product_store import ProductStoreHook
        from operators.settings import settings
        from operators.workflow import destination

        ti = context["ti"]
        parts = [p for p in ti.xcom_pull(task_ids=[f"select_{k}" for k in range(MAX_BATCHES)], key="selection") if p]
        if not parts:
            raise AirflowFailException("no selection was made (the select tasks failed); see their logs")
        selected = {"interval": parts[0]["interval"], "attempt": parts[0]["attempt"],
                    "trigger": [t for p in parts for t in p["trigger"]], "skipped": [s for p in parts for s in p["skipped"]]}
        store = ProductStoreHook(destination(context["params"]), settings().aws_conn_id)
        rows = []
        for t in selected["trigger"]:
            try:
                state = ti.get_dagrun_state(dag_id=t["workflow"], run_id=t["run_id"])
            except Exception:           # never created (the trigger itself failed)
                state = "not triggered"
            head = store.delivered(t["id"]) if state == "success" else None
            failure = failure_of(t["workflow"], t["run_id"]) if state == "failed" else {}
            if state == "failed" and not failure:
                tasks = ti.get_task_states(dag_id=t["workflow"], run_ids=[t["run_id"]]).get(t["run_id"], {})
                failed = sorted(k for k, v in tasks.items() if v in ("failed", "upstream_failed"))
                failure = {"failure_class": "unknown", "message": f"failed task(s): {', '.join(failed)}; see their logs"}
            rows.append({"id": t["id"], "workflow": t["workflow"], "observed": t["observed"],
                         "state": "delivered" if head else state, "tries": tries_of(t["run_id"]),
                         "run_id": t["run_id"], "manifest": head["url"] if head else "",
                         "cost": cost_of(t["workflow"], t["run_id"]) if state in ("success", "failed") else {},
                         **failure})
        for s in selected["skipped"]:
            rows.append({"id": s["id"], "workflow": s["workflow"], "observed": s["observed"], "state": "skipped",
                         "tries": tries_of(s.get("run_id", "")), "run_id": s.get("run_id", ""),
                         "manifest": s.get("manifest", ""), "message": s["reason"]})
        doc = {"dag_id": context["dag"].dag_id, "run_id": context["run_id"], "interval": selected["interval"],
               "attempt": selected["attempt"], "created": dt.datetime.now(dt.timezone.utc).isoformat(),
               "datasets": sorted(rows, key=lambda r: (r["observed"], r["id"]))}
        safe = context["run_id"].replace(":", "_").replace("+", "_")
        url = store.put_bytes(f"_reports/reprocess_catalog/{safe}.a{selected['attempt']}.json",
                              json.dumps(doc, indent=1).encode())
        log.info("report: %s", url)
        for r in doc["datasets"]:
            log.info("%-40s %-10s tries=%s %s %s", r["id"], r["state"], r["tries"], r.get("manifest", ""),
                     r.get("message", ""))
        bad = [r["id"] for r in doc["datasets"] if r["state"] not in ("delivered", "skipped")]
        if bad:
            raise AirflowFailException(f"{len(bad)} dataset(s) not delivered: {', '.join(bad[:20])}; report {url}")
        return {"report": url, "datasets": len(doc["datasets"])}

    waits >> report()
