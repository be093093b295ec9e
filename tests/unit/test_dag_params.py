"""Every Param of every DAG is self-explanatory in the UI form and validated before any task runs."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def dags(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()
    assert not bag.import_errors, bag.import_errors
    return {d: bag.get_dag(d) for d in bag.dag_ids if not d.startswith("casaflow_test")}


def test_all_workflow_dags_are_there(dags):
    assert {"vlass_se_cube", "alma_exportdata", "alma_qa2_package", "reprocess_catalog", "casaflow_noop"} <= set(dags)


def test_every_param_has_title_description_type_default_and_validation(dags):
    problems = []
    for dag_id, dag in sorted(dags.items()):
        for name, param in dag.params.items():
            schema = param.schema
            where = f"{dag_id}.{name}"
            for key in ("title", "type"):
                if not schema.get(key):
                    problems.append(f"{where}: no {key}")
            if not param.description:             # kept beside the schema; the form shows it
                problems.append(f"{where}: no description")
            if param.value is None and not (isinstance(schema.get("type"), list) and "null" in schema["type"]):
                problems.append(f"{where}: no default")       # (a nullable Param's None default is "empty")
            kind = schema.get("type")
            if kind == "string" and not ({"enum", "pattern", "format"} & set(schema)):
                problems.append(f"{where}: string without enum/pattern/format")
            if kind in ("number", "integer") and not {"minimum", "maximum"} <= set(schema):
                problems.append(f"{where}: number without range")
            if kind == "array" and not isinstance(schema.get("items"), dict):
                problems.append(f"{where}: array without items schema")
            if kind == "object" and not ({"additionalProperties", "properties", "propertyNames"} & set(schema)):
                problems.append(f"{where}: object without a schema for its content")
            param.resolve(suppress_exception=False)          # the default itself validates
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("dag_id, conf", [
    ("vlass_se_cube", {"pims": "relative.ms"}),
    ("vlass_se_cube", {"group_overrides": {"2:0~3": {"niter": 5}}}),
    ("alma_exportdata", {"calintents": "PHASE;rm -rf /"}),
    ("alma_exportdata", {"vis": ["../escape.ms"]}),
    ("alma_qa2_package", {"mode": "soft"}),
    ("alma_qa2_package", {"project_code": "not-a-code"}),
    ("alma_qa2_package", {"chunk_size": "-1G"}),
    ("reprocess_catalog", {"workflows": ["unknown_dag"]}),
    ("casaflow_noop", {"sleep": -1}),
])
def test_invalid_conf_is_rejected(dags, dag_id, conf):
    import copy

    from airflow.sdk.definitions.param import ParamValidationError

    params = copy.deepcopy(dags[dag_id].params)
    params.validate()                                   # the defaults pass
    with pytest.raises(ParamValidationError):
        params.update(conf)                             # as a trigger's conf is applied
        params.validate()
