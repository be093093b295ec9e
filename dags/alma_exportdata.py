"""ALMA export (hifa_exportdata) of one pipeline working directory, pushed with its manifests.

    prepare_inputs -> exportdata -> weblog (always) -> push (products and casaflow's weblog, then
    the delivery manifest)

The nine hifa_exportdata parameters are Params with the reference's defaults and meanings. Trigger
from the UI form, or with conf such as ``{"working_dir": "/data/MOUS_uid___A001_X1_X2/working"}``.
"""

from __future__ import annotations

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
)

IMAGE_NAME = r"^[A-Za-z0-9_.+-]+$"

with DAG(
    dag_id="alma_exportdata",
    description="ALMA hifa_exportdata of one pipeline working directory",
    max_active_runs=4,
    **workflow_dag_args(),
    tags=["casaflow", "alma"],
    doc_md=__doc__,
    params={
        "working_dir": Param("/data/working", type="string", pattern=LOCATION, title="Working directory",
                             description="The pipeline working directory (MSs, caltables, images, PPR, weblog): "
                                         "an absolute path, or s3://bucket/key of its .tar."),
        "vis": Param([], type="array", items={"type": "string", "pattern": r"^[A-Za-z0-9_.+-]+\.ms$"}, title="vis",
                     description="MSs whose flags and calibrations are exported. Empty: every MS in the working "
                                 "directory."),
        "session": Param([], type="array", items={"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"},
                         title="session", description="One session per vis. Empty: each MS's recorded session "
                                                      "(session_1 if none)."),
        "imaging_products_only": Param(False, type="boolean", title="Imaging products only",
                                       description="Export science target imaging products only."),
        "exportmses": Param(False, type="boolean", title="Export MSs",
                            description="Export the final MSs instead of flags, caltables and apply lists."),
        "tarms": Param(True, type="boolean", title="Tar the MSs",
                       description="With exportmses: <vis>.tgz instead of a copy of the MS directory."),
        "pprfile": Param("", type="string", pattern=r"^$|^[A-Za-z0-9_.*?+-]+$", title="PPR file",
                         description="PPR file name or pattern in the working directory. Empty: PPR_*.xml."),
        "calintents": Param("", type="string", pattern=r"^$|^[A-Za-z*?]+(,[A-Za-z*?]+)*$", title="Calibrator intents",
                            description="Calibrator image intents to export, comma list, wildcards allowed "
                                        "('*PHASE*'). Empty: PHASE,BANDPASS,FLUX,CHECK,AMPLITUDE,POLARIZATION."),
        "calimages": Param([], type="array", items={"type": "string", "pattern": IMAGE_NAME}, title="Calibrator images",
                           description="Calibrator image names to export instead of the run's list."),
        "targetimages": Param([], type="array", items={"type": "string", "pattern": IMAGE_NAME},
                              title="Target images",
                              description="Science target image names to export instead of the run's list."),
        "products_dir": Param("products", type="string", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
                              title="Products directory",
                              description="Name of the products directory in the run's workspace."),
        **common_params(),
        **qa_review_params(),
    },
) as dag:

    @task
    def prepare_inputs(**context) -> dict:
        """Fetch (or link) the working directory into the run's workspace."""
        return fetch_inputs(context, {"working_dir": context["params"]["working_dir"]})

    inputs = prepare_inputs()
    exportdata = CasaStageOperator(
        task_id="exportdata", stage="alma-exportdata", resource_class="medium",
        stage_params={"working_dir": "{{ ti.xcom_pull(task_ids='prepare_inputs')['working_dir'] }}",
                      **{k: "{{ params.%s }}" % k for k in ("vis", "session", "imaging_products_only", "exportmses",
                                                           "tarms", "pprfile", "calintents", "calimages",
                                                           "targetimages", "products_dir")}})

    weblog = CasaStageOperator(task_id="weblog", stage="run-weblog", trigger_rule="all_done",
                               stage_params={"title": "ALMA exportdata {{ run_id }}"})

    @task(outlets=[delivery_alias("alma_exportdata")])
    def push(**context) -> dict:
        """Push the products directory and casaflow's weblog of the run; the delivery manifest goes last."""
        result = context["ti"].xcom_pull(task_ids="exportdata")
        dataset_id = context["params"].get("dataset_id") or result["outputs"]["oussid"]
        delivered = push_products(context, dataset_id, [result["outputs"]["products_dir"]],
                                  [("casaflow_weblog/weblog.tgz", "casaflow_weblog.tgz")])
        emit_delivery(context, delivered)
        return delivered

    inputs >> exportdata >> weblog
    [exportdata, weblog] >> QAReviewOperator() >> push()
