"""VLASS-SE-CUBE (coarse-cube imaging, recipe hifv_vlassCCIP): one mapped task group per spw group.

    prepare_inputs -> importdata -> editimlist(SEIP) -> transformimagedata -> restorepims
      -> flagtargetsdata -> editimlist(CCIP, cube) -> [plane x N: makeimages -> pbcor -> rms -> cutout]
      -> planes (runs on the groups that succeeded) -> analyzestokescubes -> exportvlassdata
      -> weblog (always) -> push (products, then the delivery manifest)

Trigger it from the UI's form (the four inputs are required; everything else is optional or has a
default, grouped in collapsed sections), or with conf such as
``{"pims": "/data/X_split.ms", "reimaging_resources": "/data/reimaging_resources.tgz",
"seip_parameter_list": "/data/SEIP_parameter.list", "ccip_parameter_list": "/data/CCIP_parameter.list"}``.
"""

from __future__ import annotations

from airflow.sdk import DAG, task, task_group

from operators.assets import emit_delivery, push_task_assets
from operators.casa_stage import CasaStageOperator
from operators.params import optional, required, setting
from operators.qa_review import QAReviewOperator, qa_review_params
from operators.workflow import (
    LOCATION,
    common_params,
    fetch_inputs,
    push_products,
    workflow_dag_args,
)

IMAGING = "Imaging"

with DAG(
    dag_id="vlass_se_cube",
    description="VLASS coarse-cube (VLASS-SE-CUBE) imaging of one per-image MS",
    max_active_runs=4,
    **workflow_dag_args(),
    tags=["casaflow", "vlass"],
    doc_md=__doc__,
    params={
        "pims": required("PIMS", "The per-image MS (<FSID>_split.ms): an absolute path, or s3://bucket/key of its "
                                 ".tar.", pattern=LOCATION,
                         examples=["/data/J232327+502432_split.ms",
                                   "s3://archive-bucket/pims/J232327+502432_split.ms.tar"]),
        "reimaging_resources": required("reimaging_resources.tgz", "The SE-continuum run's reimaging_resources.tgz "
                                        "(flags, selfcal table, model, masks).", pattern=LOCATION),
        "seip_parameter_list": required("SEIP_parameter.list", "The SE-continuum run's imaging parameters.",
                                        pattern=LOCATION),
        "ccip_parameter_list": required("CCIP_parameter.list", "Cube parameters: spw groups (a list such as "
                                        "['2','3,4']) and any imaging heuristic to override.", pattern=LOCATION),
        "flag_template": optional("Flag template",
                                  "flagdata commands for the target data (<vis root>.flagtargetstemplate.txt), "
                                  "applied by flagtargetsdata: an absolute path or s3://bucket/key. Empty: no "
                                  "template (a warning in the task log).", pattern=LOCATION,
                                  examples=["/data/J232327+502432_split.flagtargetstemplate.txt"]),
        "plane_reject_ms": setting(True, "Pre-imaging plane rejection",
                                   "Skip spw groups with >= 12 fields more than 90% flagged.",
                                   type="boolean", section=IMAGING),
        "plane_reject_im": setting(True, "Post-imaging plane rejection",
                                   "Mark planes whose beam deviates > 20% from the nu^-1 scaling or that are >= 80% "
                                   "flagged (VLASSRJ=T); they are still exported.", type="boolean", section=IMAGING),
        "group_overrides": optional("Per-group tclean overrides",
                                    "JSON object: spw group -> tclean parameters for that group, e.g. "
                                    "{\"3,4\": {\"niter\": 500}}; any tclean parameter but those choosing the data or the "
                                    "outputs (vis, field, spw, imagename, stokes, ...). Empty: none.", type="object",
                                    propertyNames={"pattern": r"^[0-9]+(,[0-9]+)*$"},
                                    additionalProperties={"type": "object"}, section=IMAGING),
        **common_params(),
        **qa_review_params(),
    },
) as dag:

    @task
    def prepare_inputs(**context) -> dict:
        """Fetch (or link) the inputs into the run's workspace."""
        from casaflow.vlass import overrides

        params = context["params"]
        overrides.validate(params.get("group_overrides"))  # refused parameters fail before any work
        names = ["pims", "reimaging_resources", "seip_parameter_list", "ccip_parameter_list"]
        fetched = fetch_inputs(context, {k: params[k] for k in names + ["flag_template"] if params.get(k)})
        return {"flag_template": "", **fetched}

    inputs = prepare_inputs()
    XIN = "ti.xcom_pull(task_ids='prepare_inputs')"

    importdata = CasaStageOperator(task_id="importdata", stage="vlass-importdata",
                                   stage_params={"vis": "{{ %s['pims'] }}" % XIN})
    editimlist_seip = CasaStageOperator(task_id="editimlist_seip", stage="vlass-editimlist-seip",
                                        stage_params={"parameter_list": "{{ %s['seip_parameter_list'] }}" % XIN})
    transform = CasaStageOperator(task_id="transformimagedata", stage="vlass-transformimagedata",
                                  resource_class="medium")
    restorepims = CasaStageOperator(task_id="restorepims", stage="vlass-restorepims", resource_class="medium",
                                    stage_params={"reimaging_resources": "{{ %s['reimaging_resources'] }}" % XIN})
    flagtargets = CasaStageOperator(task_id="flagtargetsdata", stage="vlass-flagtargetsdata",
                                    stage_params={"filetemplate": "{{ %s['flag_template'] }}" % XIN})
    editimlist_cube = CasaStageOperator(
        task_id="editimlist_cube", stage="vlass-editimlist-cube",
        stage_params={"parameter_list": "{{ %s['ccip_parameter_list'] }}" % XIN,
                      "plane_reject": "{{ params.plane_reject_ms }}"})

    @task
    def plane_kwargs(cube: dict, params: dict | None = None) -> list[dict]:
        """One entry per imaging target, for the mapped task group."""
        overrides = params.get("group_overrides") or {}
        return [{"group_params": {"group": t["group"]},
                 "imaging_params": {"group": t["group"], "tclean_overrides": overrides.get(t["group"], {})},
                 "tag": t["tag"]} for t in cube["outputs"]["targets"]]

    @task_group(group_id="plane")
    def plane(group_params: dict, imaging_params: dict, tag: str):
        """The per-spw-group chain: one instance per group."""
        make = CasaStageOperator(task_id="makeimages", stage="vlass-makeimages", resource_class="heavy",
                                 stage_params=imaging_params, tag=tag)
        pb = CasaStageOperator(task_id="pbcor", stage="vlass-pbcor", resource_class="medium",
                               stage_params=group_params, tag=tag)
        rms = CasaStageOperator(task_id="makermsimages", stage="vlass-makermsimages", resource_class="medium",
                                stage_params=group_params, tag=tag)
        cut = CasaStageOperator(task_id="makecutoutimages", stage="vlass-makecutoutimages",
                                resource_class="medium", stage_params=group_params, tag=tag)
        make >> pb >> rms >> cut

    planes_group = plane.expand_kwargs(plane_kwargs(editimlist_cube.output))

    planes = CasaStageOperator(task_id="planes", stage="vlass-planes", trigger_rule="all_done",
                               stage_params={"plane_reject": "{{ params.plane_reject_im }}"})
    analyze = CasaStageOperator(task_id="analyzestokescubes", stage="vlass-analyzestokescubes")
    export = CasaStageOperator(task_id="exportvlassdata", stage="vlass-exportvlassdata",
                               stage_params={"ous": "{{ params.dataset_id or run_id }}"})
    weblog = CasaStageOperator(task_id="weblog", stage="vlass-weblog", trigger_rule="all_done",
                               stage_params={"title": "VLASS-SE-CUBE {{ run_id }}"})

    @task(**push_task_assets("vlass_se_cube"))
    def push(**context) -> dict:
        """Push products/ (FITS, pipeline manifest, parameter lists, weblog.tgz), manifest last."""
        pims = context["ti"].xcom_pull(task_ids="prepare_inputs")["pims"]
        dataset_id = context["params"].get("dataset_id") or pims.rsplit("/", 1)[-1].removesuffix(".ms")
        delivered = push_products(context, dataset_id, ["products"])
        emit_delivery(context, delivered)
        return delivered

    delivered = push()
    inputs >> importdata >> editimlist_seip >> transform >> restorepims >> flagtargets >> editimlist_cube
    planes_group >> planes >> analyze >> export >> weblog
    [export, weblog] >> QAReviewOperator() >> delivered
