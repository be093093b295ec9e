"""ALMA export (hifa_exportdata) of one pipeline working directory, pushed with its manifests.

    prepare_inputs -> exportdata -> weblog (always) -> push (products and casaflow's weblog, then
    the delivery manifest)

The nine hifa_exportdata parameters are Params with the reference's defaults and meanings (empty
means the reference's default). Trigger from the UI form (only the working directory is required),
or with conf such as ``{"working_dir": "/data/MOUS_uid___A001_X1_X2/working"}``.
"""

from __future__ import annotations

from airflow.sdk import DAG, task

from operators.assets import emit_delivery, push_task_assets
from operators.casa_stage import CasaStageOperator
from operators.params import optional, required, setting
from operators.qa_review import QAReviewOperator, qa_review_params
from operators.workflow import (
    LOCATION,
    common_params,
    derived_dataset_id,
    fetch_inputs,
    push_products,
    workflow_dag_args,
)

IMAGE_NAME = r"^[A-Za-z0-9_.+-]+$"
SELECTION = "What to export"
FORMAT = "Export format"

with DAG(
    dag_id="alma_exportdata",
    description="ALMA hifa_exportdata of one pipeline working directory",
    max_active_runs=4,
    **workflow_dag_args(),
    tags=["casaflow", "alma"],
    doc_md=__doc__,
    params={
        "working_dir": required("Working directory", "The pipeline working directory (MSs, caltables, images, PPR, "
                                                     "weblog): an absolute path, or s3://bucket/key of its .tar.",
                                pattern=LOCATION, examples=["/data/MOUS_uid___A001_X1_X2/working",
                                                            "s3://archive-bucket/mous/uid___A001_X1_X2.tar"]),
        "vis": optional("vis", "MSs whose flags and calibrations are exported, one per line. Empty: every MS in the "
                               "working directory.", type="array",
                        items={"type": "string", "pattern": r"^[A-Za-z0-9_.+-]+\.ms$"}, section=SELECTION),
        "session": optional("session", "One session per vis, one per line. Empty: each MS's recorded session "
                                       "(session_1 if none).", type="array",
                            items={"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"}, section=SELECTION),
        "imaging_products_only": setting(False, "Imaging products only",
                                         "Export science target imaging products only.", type="boolean",
                                         section=SELECTION),
        "pprfile": optional("PPR file", "PPR file name or pattern in the working directory. Empty: PPR_*.xml.",
                            pattern=r"^[A-Za-z0-9_.*?+-]+$", section=SELECTION),
        "calintents": optional("Calibrator intents", "Calibrator image intents to export, comma list, wildcards "
                                                     "allowed. Empty: PHASE,BANDPASS,FLUX,CHECK,AMPLITUDE,"
                                                     "POLARIZATION.",
                               pattern=r"^[A-Za-z*?]+(,[A-Za-z*?]+)*$", examples=["*PHASE*", "PHASE,BANDPASS"],
                               section=SELECTION),
        "calimages": optional("Calibrator images", "Calibrator image names to export instead of the run's list, "
                                                   "one per line. Empty: the run's list.", type="array",
                              items={"type": "string", "pattern": IMAGE_NAME}, section=SELECTION),
        "targetimages": optional("Target images", "Science target image names to export instead of the run's "
                                                  "list, one per line. Empty: the run's list.", type="array",
                                 items={"type": "string", "pattern": IMAGE_NAME}, section=SELECTION),
        "exportmses": setting(False, "Export MSs", "Export the final MSs instead of flags, caltables and apply "
                                                   "lists.", type="boolean", section=FORMAT),
        "tarms": setting(True, "Tar the MSs", "With exportmses: <vis>.tgz instead of a copy of the MS directory.",
                         type="boolean", section=FORMAT),
        "products_dir": setting("products", "Products directory", "Name of the products directory in the run's "
                                                                  "workspace.", type="string",
                                pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", section=FORMAT),
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

    @task(**push_task_assets("alma_exportdata"))
    def push(**context) -> dict:
        """Push the products directory and casaflow's weblog of the run; the delivery manifest goes last."""
        result = context["ti"].xcom_pull(task_ids="exportdata")
        dataset_id = context["params"].get("dataset_id") or derived_dataset_id(
            result["outputs"]["oussid"], result["outputs"].get("sessions", {}))
        delivered = push_products(context, dataset_id, [result["outputs"]["products_dir"]],
                                  [("casaflow_weblog/weblog.tgz", "casaflow_weblog.tgz")])
        emit_delivery(context, delivered)
        return delivered

    inputs >> exportdata >> weblog
    [exportdata, weblog] >> QAReviewOperator() >> push()
