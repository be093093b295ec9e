"""VLASS-SE-CUBE failure isolation through dag.test(): one spw group's imaging fails for real.

A file of its own (not in test_vlass_se_cube.py) because it is a second whole DAG run: the test
workers can then run the two side by side.
"""

from __future__ import annotations

import json

import pytest

from .conftest import load_dag, vlass_conf, workspace_of

pytestmark = [pytest.mark.casa, pytest.mark.e2e]


def test_failed_group_isolated(airflow_db, vlass_tiny, base_dir, tmp_path):
    """One group's imaging fails for real (tclean refuses the cell): the others are delivered, the
    failure shows in the weblog and in QA."""
    dag = load_dag("vlass_se_cube")
    dest = tmp_path / "out"
    dr = dag.test(run_conf=vlass_conf(vlass_tiny, dataset_id="tiny-fail", products_destination=str(dest),
                                group_overrides={"3,4": {"cell": "not-a-cell"}}))
    states = {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}
    failed = [k for k, s in states.items() if s == "failed"]
    assert [k[0] for k in failed] == ["plane.makeimages"], states
    assert states[("push", -1)] == "success"
    ws = workspace_of(base_dir, "vlass_se_cube", dr)
    names = [p.name for p in (dest / "tiny-fail").glob("*.fits") if ".com." not in p.name]
    assert any(".spw2." in n for n in names) and any(".spw6." in n for n in names)
    assert not any(".spw3_4." in n for n in names)
    planes = json.loads((ws / "results" / "vlass-planes.json").read_text())
    assert planes["qa_score"] == pytest.approx(0.34)
    assert any("Cleaning failure" in m and "3,4" in m for m in planes["qa_messages"])
    html = (ws / "weblog" / "index.html").read_text()
    assert "vlass-makeimages.spw3_4" in html and "spw group 3,4 failed" in html
