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


# The real inputs of each DAG: required, no default (the form starts them empty).
REQUIRED = {
    "vlass_se_cube": {"pims", "reimaging_resources", "seip_parameter_list", "ccip_parameter_list"},
    "alma_exportdata": {"working_dir"},
    "alma_qa2_package": {"origpath", "project_code"},
    "reprocess_catalog": set(),                      # scheduled: every Param needs a valid default
    "casaflow_noop": {"input"},
    # asset-scheduled: started by events, not by a form; no Params
    "vlass_se_cube__on_inputs": set(),
    "casaflow_noop__on_inputs": set(),
}
# What a person types into those fields (valid values, not defaults).
FILLED = {
    "vlass_se_cube": {"pims": "/in/X_split.ms", "reimaging_resources": "/in/r.tgz",
                      "seip_parameter_list": "/in/SEIP_parameter.list", "ccip_parameter_list": "/in/CCIP.list"},
    "alma_exportdata": {"working_dir": "s3://bucket-a/mous.tar"},
    "alma_qa2_package": {"origpath": "/in/SB1", "project_code": "2019.1.01234.S"},
    "reprocess_catalog": {},
    "casaflow_noop": {"input": "/in/x.txt"},
    "vlass_se_cube__on_inputs": {},
    "casaflow_noop__on_inputs": {},
}


def nullable(schema: dict) -> bool:
    kind = schema.get("type")
    return isinstance(kind, list) and "null" in kind


def test_every_param_has_title_description_type_and_validation(dags):
    problems = []
    for dag_id, dag in sorted(dags.items()):
        assert set(FILLED[dag_id]) == REQUIRED[dag_id]
        for name, param in dag.params.items():
            schema = param.schema
            where = f"{dag_id}.{name}"
            for key in ("title", "type"):
                if not schema.get(key):
                    problems.append(f"{where}: no {key}")
            if not param.description:             # kept beside the schema; the form shows it
                problems.append(f"{where}: no description")
            kinds = set(schema["type"]) - {"null"} if isinstance(schema.get("type"), list) else {schema.get("type")}
            if len(kinds) != 1:
                problems.append(f"{where}: one type (plus null) expected, got {schema.get('type')}")
            kind = kinds.pop() if len(kinds) == 1 else None
            if kind == "string" and not ({"enum", "pattern", "format"} & set(schema)):
                problems.append(f"{where}: string without enum/pattern/format")
            if kind in ("number", "integer") and not {"minimum", "maximum"} <= set(schema):
                problems.append(f"{where}: number without range")
            if kind == "array" and not isinstance(schema.get("items"), dict):
                problems.append(f"{where}: array without items schema")
            if kind == "object" and not ({"additionalProperties", "properties", "propertyNames"} & set(schema)):
                problems.append(f"{where}: object without a schema for its content")
            if "enum" in schema and set(map(str, schema.get("values_display", {}))) != \
                    {"null" if v is None else str(v) for v in schema["enum"]}:
                problems.append(f"{where}: enum without a values_display label for each value")
            if name in REQUIRED[dag_id]:
                if param.has_value or nullable(schema):
                    problems.append(f"{where}: a required input has a default or accepts null")
                if schema.get("section"):
                    problems.append(f"{where}: a required input hidden in section {schema['section']!r}")
            else:
                if not param.has_value and not nullable(schema):
                    problems.append(f"{where}: optional but neither a default nor nullable")
                param.resolve(suppress_exception=False)          # the default itself validates
            # "Empty: ..." promises that the field may be left empty: the form sends null then.
            if ("Empty" in param.description or "Leave empty" in param.description) and not nullable(schema):
                problems.append(f"{where}: says it may be empty but the form would require it")
    assert not problems, "\n".join(problems)


def test_internal_params_are_in_a_collapsed_section(dags):
    from operators.params import INTERNAL

    for dag_id in ("vlass_se_cube", "alma_exportdata", "alma_qa2_package", "casaflow_noop"):
        assert dags[dag_id].params.get_param("request_fingerprint").schema.get("section") == INTERNAL


@pytest.mark.parametrize("dag_id", sorted(REQUIRED))
def test_form_with_only_required_inputs_validates(dags, dag_id):
    """What the trigger form sends when a person fills only the required fields: every other
    field as the form shows it (its default, or null for an empty one)."""
    import copy

    from airflow.sdk.definitions.param import ParamValidationError

    params = copy.deepcopy(dags[dag_id].params)
    if REQUIRED[dag_id]:
        with pytest.raises(ParamValidationError, match="No value passed"):
            copy.deepcopy(params).validate()               # a required input missing is refused
    conf = {name: params.get_param(name).value if params.get_param(name).has_value else None
            for name in params if name not in REQUIRED[dag_id]}
    params.update({**conf, **FILLED[dag_id]})
    resolved = params.validate()
    assert {k: resolved[k] for k in FILLED[dag_id]} == FILLED[dag_id]


@pytest.mark.parametrize("dag_id, conf", [
    ("casaflow_noop", {"input": "/in/x.txt", "fail_with": None}),
    ("casaflow_noop", {"input": "/in/x.txt", "fail_with": "science"}),
    ("alma_exportdata", {"working_dir": "/w", "vis": None, "pprfile": None, "calintents": "*PHASE*"}),
    ("alma_qa2_package", {"origpath": "/in/SB1", "project_code": "2019.1.01234.S", "append": "member",
                          "base_package": "/pkg/2019.1.01234.S"}),
    ("reprocess_catalog", {"catalog": None, "products_destination": "s3://bucket-a/x"}),
])
def test_valid_conf_is_accepted(dags, dag_id, conf):
    import copy

    params = copy.deepcopy(dags[dag_id].params)
    params.update(conf)
    assert {k: params.validate()[k] for k in conf} == conf


def test_reprocess_conf_validates_against_each_workflow(dags):
    """reprocess_catalog triggers each workflow with a catalog record's conf: it must validate."""
    import copy

    from casaflow_ops import catalog

    for workflow, inputs in catalog.WORKFLOWS.items():
        record = catalog.Record(id="ds-1", workflow=workflow, observed=__import__("datetime").datetime.now(),
                                inputs={k: f"/archive/{k}" for k in inputs})
        for destination in ("", "s3://bucket-a/out"):
            params = copy.deepcopy(dags[workflow].params)
            params.update(record.conf(destination, "local"))
            resolved = params.validate()
            assert resolved["request_fingerprint"] == record.fingerprint
            assert resolved["products_destination"] == (destination or None)


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
    ("casaflow_noop", {"input": None}),                 # a required input left empty
    ("casaflow_noop", {"fail_with": ""}),               # empty is null, not ""
    ("vlass_se_cube", {"dataset_id": "../up"}),
    ("vlass_se_cube", {"request_fingerprint": "not-hex"}),
    ("alma_qa2_package", {"transfer_date": "1 March"}),
    ("reprocess_catalog", {"workflows": None}),
])
def test_invalid_conf_is_rejected(dags, dag_id, conf):
    import copy

    from airflow.sdk.definitions.param import ParamValidationError

    params = copy.deepcopy(dags[dag_id].params)
    params.update(FILLED[dag_id])
    params.validate()                                   # the defaults and the required inputs pass
    with pytest.raises(ParamValidationError):
        params.update(conf)                             # as a trigger's conf is applied
        params.validate()


def test_an_optional_param_left_empty_is_not_passed_to_the_stage():
    """None (an empty form field) means 'not given': the worker's own default for that stage
    parameter applies, rather than a JSON null it would have to reject."""
    from operators.command import worker_argv

    argv = worker_argv("casa-worker", "alma-exportdata", "/ws", {"pprfile": None, "calintents": "*PHASE*",
                                                                   "vis": None, "tarms": False})
    assert argv == ["casa-worker", "alma-exportdata", "--workspace", "/ws",
                    "--param", 'calintents="*PHASE*"', "--param", "tarms=false"]
