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
from airflow.sdk import DAG, Param, task

from operators.assets import delivery_alias, emit_delivery
from operators.casa_stage import CasaStageOperator
from operators.qa_review import QAReviewOperator, qa_review_params
from operators.workflow import (
    LOCATION,
    common_params,
    fetch_inputs,
    push_products,
    workflow_dag_args,
    workspace,
)

PROJECT_CODE = r"^\d{4}\.\d\.\d{5}\.[A-Z]{1,3}$"

with DAG(
    dag_id="alma_qa2_package",
    description="ALMA QA2 delivery package of one SB, split into transfer chunks",
    max_active_runs=4,
    **workflow_dag_args(),
    tags=["casaflow", "alma"],
    doc_md=__doc__,
    params={
        "source": Param("manual", type="string", enum=["manual", "pipeline"], title="Source",
                        description="'manual': origpath is a manual-reduction SB directory; 'pipeline': origpath "
                                    "is exportdata's products directory."),
        "origpath": Param("/data/project/SB1", type="string", pattern=LOCATION, title="origpath",
                          description="The SB directory of the manual reduction (execution directories X..., "
                                      "optional Combined/), or exportdata's products directory."),
        "readme_header": Param("", type="string", pattern=r"^$|" + LOCATION[1:], title="README header",
                               description="README header file; its empty fields (Project code, SB name) are "
                                           "filled. Empty: no header."),
        "project_code": Param("2011.0.00229.S", type="string", pattern=PROJECT_CODE, title="Project code",
                              description="Names the package directory and the transfer chunks."),
        "mode": Param("hard", type="string", enum=["fake", "hard", "ticket"], title="Mode",
                      description="fake: dummy structure (fast); hard: real data, raw and calibrated split by "
                                  "CASA; ticket: valid ticket files with a dummy package."),
        "append": Param("", type="string", enum=["", "member"], title="Append",
                        description="'member': add the next member OUS beside those of base_package."),
        "base_package": Param("", type="string", pattern=r"^$|^(/.+|file:///.+)$", title="Base package",
                              description="With append='member': the existing package directory (named by the "
                                          "project code) to append to."),
        "chunk_size": Param("4G", type="string", pattern=r"^\d+(\.\d+)?[kKmMgGtT]?$", title="Chunk size",
                            description="Largest transfer chunk, e.g. '500M', '4G'."),
        "transfer_date": Param("", type="string", pattern=r"^$|^\d{4}-\d{2}-\d{2}$", title="Transfer date",
                               description="Date in the chunk names (YYYY-MM-DD). Empty: the run's date."),
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
            base = Path(params["base_package"].removeprefix("file://"))
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

    @task(outlets=[delivery_alias("alma_qa2_package")])
    def push(**context) -> dict:
        """Push the transfer chunks, their checksums and the ticket files; the delivery manifest last."""
        params = context["params"]
        extra = [(f"package/{params['project_code']}.ticket.{ext}", f"ticket/{params['project_code']}.ticket.{ext}")
                 for ext in ("tar", "zip")] + [("casaflow_weblog/weblog.tgz", "casaflow_weblog.tgz")]
        delivered = push_products(context, params.get("dataset_id") or params["project_code"], ["transfer"], extra)
        emit_delivery(context, delivered)
        return delivered

    inputs >> package >> split >> weblog
    [split, weblog] >> QAReviewOperator() >> push()
