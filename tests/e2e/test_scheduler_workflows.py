"""The VLASS and ALMA workflows through the embedded runtime's real scheduler (LocalExecutor,
api-server, dag-processor, triggerer), not dag.test(): both runs are triggered through REST into
one runtime and run side by side on its two slots, on the shared tiny simulated datasets (real
CASA, local mode, delivered to the runtime's local products directory).

* ``alma_exportdata`` with ``qa_review=required``: it parks in Airflow's HITL review with nothing
  delivered, is approved through the REST endpoint, then delivers; every delivered object is
  checked against the delivery manifest (the exact set: the prefix holds what the manifest lists,
  with its sizes and SHA-256).
* ``vlass_se_cube`` on the tiny preset with the deployment's review setting (never): one mapped
  instance of the per-group chain per imaged spw group, as the scheduler expanded them, and the
  delivery against its manifest.

The science of each product is asserted by the dag.test() suites (test_vlass_se_cube.py,
test_alma_exportdata.py); this file shows the same workflows run as a deployment runs them.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from hooks.delivery import MANIFEST_NAME, parse_manifest

from .runtime_helpers import runtime_with_test_dags, task_states, trigger, wait_for, wait_for_review, wait_run_done

pytestmark = [pytest.mark.casa, pytest.mark.e2e, pytest.mark.runtime]

ALMA, VLASS = "alma_exportdata", "vlass_se_cube"
ALMA_RUN, VLASS_RUN = "sched-alma", "sched-vlass"
OUS = "uid___A001_X3d5e_X12"                # the tiny ALMA simulation's OUS: the derived dataset id
VLASS_ID = "sched-tiny"
HITL = f"/api/v2/dags/{ALMA}/dagRuns/{ALMA_RUN}/taskInstances/qa_review/-1/hitlDetails"


@pytest.fixture(scope="module")
def rt(tmp_path_factory, vlass_tiny, alma_tiny):
    """One runtime for both workflows; both runs triggered at once."""
    home = tmp_path_factory.mktemp("sched") / "runtime"
    with runtime_with_test_dags(home, [ALMA, VLASS]) as (r, api):
        trigger(api, ALMA, ALMA_RUN, {"working_dir": str(alma_tiny["working"]), "execution_mode": "local",
                                      "qa_review": "required"})
        trigger(api, VLASS, VLASS_RUN, {"pims": str(vlass_tiny["pims"]),
                                        "reimaging_resources": str(vlass_tiny["resources"]),
                                        "seip_parameter_list": str(vlass_tiny["seip"]),
                                        "ccip_parameter_list": str(vlass_tiny["ccip"]),
                                        "execution_mode": "local", "dataset_id": VLASS_ID})
        yield r, api


def workspace(r, dag_id: str, run_id: str) -> Path:
    return Path(r.home) / "workspaces" / dag_id / run_id


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_against_manifest(prefix: Path, dag_id: str, run_id: str, dataset: str) -> list:
    """The delivered prefix holds exactly what its manifest lists, each object whole (size and
    SHA-256 recomputed here from the delivered bytes). Returns the manifest's entries."""
    head, entries = parse_manifest((prefix / MANIFEST_NAME).read_bytes())
    assert head["dataset"] == dataset
    assert head["run"]["dag_id"] == dag_id and head["run"]["run_id"] == run_id
    # Hidden files are the local store's own (the manifest's compare-and-swap lock, partial
    # writes): its listing leaves them out, as S3 has none.
    on_disk = {str(p.relative_to(prefix)) for p in prefix.rglob("*")
               if p.is_file() and not p.name.startswith(".")} - {MANIFEST_NAME}
    assert on_disk == {e.key for e in entries}
    for e in entries:
        assert (prefix / e.key).stat().st_size == e.size, e.key
        assert sha256(prefix / e.key) == e.sha256, e.key
    return entries


def all_task_instances(api, dag_id: str, run_id: str) -> list[dict]:
    status, body = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=500")
    assert status == 200, body
    assert body["total_entries"] == len(body["task_instances"]), "more task instances than one page"
    return body["task_instances"]


def test_alma_export_waits_for_the_review_approved_by_rest_then_delivers(rt):
    r, api = rt
    detail = wait_for_review(api, ALMA, ALMA_RUN, timeout=900)
    ws = workspace(r, ALMA, ALMA_RUN)
    assert detail["options"] == ["Approve", "Reject"]
    assert f"### {ALMA} `{ALMA_RUN}`" in detail["body"]
    assert str(ws / "weblog" / "index.html") in detail["body"]
    # Parked, not holding a slot, and nothing delivered before the decision.
    states = task_states(api, ALMA, ALMA_RUN)
    assert states["exportdata"] == "success" and states["weblog"] == "success" and states["push"] is None, states
    assert not (Path(r.products) / OUS).exists()

    status, body = api.patch(HITL, {"chosen_options": ["Approve"], "params_input": {"reason": "flux scale ok"}})
    assert status == 200, body
    assert wait_run_done(api, ALMA, ALMA_RUN, timeout=600) == "success"
    assert task_states(api, ALMA, ALMA_RUN)["push"] == "success"

    rec = json.loads((ws / "results" / "qa-review.json").read_text())
    assert rec["outputs"]["decision"] == "approved" and rec["outputs"]["reviewer"] == r.user
    assert rec["outputs"]["mode"] == "required" and rec["outputs"]["reason"] == "flux scale ok"
    score = rec["outputs"]["score"]
    assert (f"Run QA score: **{score:.2f}**" if score is not None else "Run QA score: none recorded") in detail["body"]

    prefix = Path(r.products) / OUS
    entries = check_against_manifest(prefix, ALMA, ALMA_RUN, OUS)
    keys = {e.key for e in entries}
    products = {p.name for p in (ws / "products").iterdir()}
    assert products | {"casaflow_weblog.tgz"} == keys       # every product, and casaflow's weblog
    assert f"{OUS}.hifa_calimage.pipeline_manifest.xml" in keys
    # The delivered weblog was re-packed with the reviewer's decision.
    with tarfile.open(prefix / "casaflow_weblog.tgz") as tf:
        page = tf.extractfile("weblog/index.html").read().decode()
    assert "QA review: approved" in page and "flux scale ok" in page


def test_vlass_cube_maps_one_chain_per_group_and_delivers(rt, vlass_tiny):
    r, api = rt
    truth = vlass_tiny["truth"]
    assert wait_run_done(api, VLASS, VLASS_RUN, timeout=1800) == "success"
    tis = all_task_instances(api, VLASS, VLASS_RUN)
    assert all(t["state"] == "success" for t in tis), [(t["task_id"], t["map_index"], t["state"]) for t in tis]

    ws = workspace(r, VLASS, VLASS_RUN)
    cube = json.loads((ws / "results" / "vlass-editimlist-cube.json").read_text())
    imaged = [g for g in truth["groups"] if g not in truth["flagged_groups"]]
    assert sorted(t["group"] for t in cube["outputs"]["targets"]) == sorted(imaged)
    for task in ("makeimages", "pbcor", "makermsimages", "makecutoutimages"):
        mapped = sorted(t["map_index"] for t in tis if t["task_id"] == f"plane.{task}")
        assert mapped == list(range(len(imaged))), (task, mapped)
    # Each mapped instance imaged its own group: one result per group tag.
    tags = {p.name.removeprefix("vlass-makeimages.").removesuffix(".json")
            for p in (ws / "results").glob("vlass-makeimages.*.json")}
    assert tags == {"spw" + g.replace(",", "_") for g in imaged}

    rec = json.loads((ws / "results" / "qa-review.json").read_text())
    assert rec["outputs"]["decision"] == "delivered without review" and rec["outputs"]["mode"] == "never"

    prefix = Path(r.products) / VLASS_ID
    entries = check_against_manifest(prefix, VLASS, VLASS_RUN, VLASS_ID)
    keys = {e.key for e in entries}
    assert keys == {p.name for p in (ws / "products").iterdir() if p.is_file()}
    assert "weblog.tgz" in keys and "pipeline_manifest.xml" in keys
    for g in truth["groups"]:
        fits = [k for k in keys if f".spw{g.replace(',', '_')}." in k and k.endswith(".fits") and ".com." not in k]
        assert len(fits) == (0 if g in truth["flagged_groups"] else 4), (g, fits)  # IQU, V, and their rms
