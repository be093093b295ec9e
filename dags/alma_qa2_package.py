"""QA2 delivery packaging of one SB (or of exportdata's products), split into transfer chunks.

    prepare_inputs -> package (QA_Packager: member OUS tree, README, ticket tar/zip)
      -> tarsplit (chunks no larger than chunk_size, SHA-256 list) -> weblog (always) -> push
      (chunks, tickets, checksums, casaflow's weblog, then the delivery manifest)

``append='member'`` adds the next member OUS to an existing package given as ``base_package``
(copied into the run's workspace first: the original is never modified).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pendulum
from airflow.sdk import DAG, task

from operators.assets import emit_delivery, push_task_assets
from operators.casa_stage import CasaStageOperator
from operators.params import choice, optional, required, setting
from operators.qa_review import QAReviewOperator, qa_review_params
from operators.workflow import (
    LOCATION,
    common_params,
    fetch_inputs,
    push_products,
    qa2_dataset_id,
    workflow_dag_args,
    workspace,
)

PROJECT_CODE = r"^\d{4}\.\d\.\d{5}\.[A-Z]{1,3}$"
APPEND = "Append to a package"
TRANSFER = "Transfer chunks"

with DAG(
    dag_id="alma_qa2_package",
    description="ALMA QA2 delivery package of one SB, split into transfer chunks",
    max_active_runs=4,
    **workflow_dag_args(),
    tags=["casaflow", "alma"],
    doc_md=__doc__,
    params={
        "source": choice("Source", "What origpath is.",
                         {"manual": "manual: a manual-reduction SB directory",
                          "pipeline": "pipeline: exportdata's products directory"}, default="manual"),
        "origpath": required("origpath", "The SB directory of the manual reduction (execution directories X..., "
                                         "optional Combined/), or exportdata's products directory.",
                             pattern=LOCATION, examples=["/data/2011.0.00229.S/SB1", "s3://archive-bucket/sb/SB1.tar"]),
        "project_code": required("Project code", "Names the package directory and the transfer chunks.",
                                 pattern=PROJECT_CODE, examples=["2011.0.00229.S"]),
        "mode": choice("Mode", "How the package is built.",
                       {"hard": "hard: real data, raw and calibrated split by CASA",
                        "fake": "fake: dummy structure (fast)",
                        "ticket": "ticket: valid ticket files with a dummy package"}, default="hard"),
        "readme_header": optional("README header", "README header file; its empty fields (Project code, SB name) "
                                                   "are filled. Empty: no header.", pattern=LOCATION),
        "append": choice("Append", "'member': add the next member OUS beside those of base_package. Empty: a new "
                                   "package.",
                         {None: "no: a new package", "member": "member: add a member OUS to base_package"},
                         default=None, section=APPEND),
        "base_package": optional("Base package", "With append='member': the existing package directory (named by "
                                                 "the project code) to append to.",
                                 pattern=r"^(/.+|file:///.+)$", section=APPEND),
        "chunk_size": setting("4G", "Chunk size", "Largest transfer chunk, e.g. '500M', '4G'.", type="string",
                              pattern=r"^\d+(\.\d+)?[kKmMgGtT]?$", section=TRANSFER),
        "transfer_date": optional("Transfer date", "Date in the chunk names (YYYY-MM-DD). Empty: the run's date.",
                                  pattern=r"^\d{4}-\d{2}-\d{2}$", examples=["2026-03-01"], section=TRANSFER),
        **common_params(),
        **qa_review_params(),
    },
) as dag:

    @task
    def prepare_inputs(**context) -> dict:
        """Fetch the SB directory and README header; copy the base package when appending."""
        from airflow.sdk.exceptions import AirflowFailException

        params = context["params"]
        wanted = {"origpath": params["origpath"]}
        if params["readme_header"]:
            wanted["readme_header"] = params["readme_header"]
        out = fetch_inputs(context, wanted)
        packpath = f"package/{params['project_code']}"
        target = workspace(context) / packpath
        if params["append"] == "member":
            base = Path((params["base_package"] or "").removeprefix("file://"))
            if not params["base_package"] or not base.is_dir():
                raise AirflowFailException("append='member' needs base_package: an existing package directory")
            if base.name != params["project_code"]:
                raise AirflowFailException(f"base_package {base} is not named by project_code {params['project_code']}")
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(base, target, symlinks=True)
        out["packpath"] = packpath
        out["date"] = params["transfer_date"] or pendulum.now("UTC").to_date_string()
        return out

    inputs = prepare_inputs()
    XIN = "ti.xcom_pull(task_ids='prepare_inputs')"
    package = CasaStageOperator(
        task_id="package", stage="qa2-package", resource_class="medium",
        stage_params={"origpath": "{{ %s['origpath'] if params.source == 'manual' else '' }}" % XIN,
                      "products_dir": "{{ %s['origpath'] if params.source == 'pipeline' else '' }}" % XIN,
                      "readme": "{{ %s.get('readme_header', '') }}" % XIN,
                      "packpath": "{{ %s['packpath'] }}" % XIN,
                      "mode": "{{ params.mode }}", "append": "{{ params.append }}"})
    split = CasaStageOperator(
        task_id="tarsplit", stage="tarsplit",
        stage_params={"package": "{{ %s['packpath'] }}" % XIN, "outdir": "transfer",
                      "chunk_size": "{{ params.chunk_size }}", "date": "{{ %s['date'] }}" % XIN,
                      "project": "{{ params.project_code }}"})

    weblog = CasaStageOperator(task_id="weblog", stage="run-weblog", trigger_rule="all_done",
                               stage_params={"title": "ALMA QA2 package {{ params.project_code }} {{ run_id }}"})

    @task(**push_task_assets("alma_qa2_package"))
    def push(**context) -> dict:
        """Push the transfer chunks, their checksums and the ticket files; the delivery manifest last."""
        params = context["params"]
        extra = [(f"package/{params['project_code']}.ticket.{ext}", f"ticket/{params['project_code']}.ticket.{ext}")
                 for ext in ("tar", "zip")] + [("casaflow_weblog/weblog.tgz", "casaflow_weblog.tgz")]
        dataset_id = params.get("dataset_id") or qa2_dataset_id(params["project_code"],
                                                                 context["ti"].xcom_pull(task_ids="package"))
        delivered = push_products(context, dataset_id, ["transfer"], extra)
        emit_delivery(context, delivered)
        return delivered

    inputs >> package >> split >> weblog
    [split, weblog] >> QAReviewOperator() >> push()
