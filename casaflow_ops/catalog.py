"""The input catalog: what the archive holds, one record per dataset.

A JSON document, on local disk (the embedded default) or in object storage::

    {"catalog_version": 1,
     "datasets": [
       {"id": "VLASS2.2.T23t09.J232327+502432", "workflow": "vlass_se_cube",
        "observed": "2026-03-02T04:10:00Z",
        "inputs": {"pims": "s3://archive/...", "reimaging_resources": "...",
                   "seip_parameter_list": "...", "ccip_parameter_list": "..."},
        "software_version": "0.1.0",          # casaflow version wanted ("" = any)
        "params": {"plane_reject_ms": true}}  # optional extra workflow Params
     ]}

Validated on read: every error names the record (index and id) and the field. Pure Python: the
reprocessing DAG, the status command and the benchmarks all use it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
LOCATION_RE = re.compile(r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+|/.+|file:///.+)$")
VERSION_RE = re.compile(r"^$|^[0-9A-Za-z.+-]{1,40}$")

# The workflows a record can name, and the input locations each one needs.
WORKFLOWS = {
    "vlass_se_cube": ("pims", "reimaging_resources", "seip_parameter_list", "ccip_parameter_list"),
    "alma_exportdata": ("working_dir",),
    "casaflow_noop": ("input",),
}
# Params a record may not set through ``params``: the catalog sets these itself.
RESERVED = {"dataset_id", "products_destination", "execution_mode", "request_fingerprint"}


class CatalogError(ValueError):
    """A catalog that cannot be used; the message names the record and field."""


@dataclass(frozen=True)
class Record:
    id: str
    workflow: str
    observed: dt.datetime
    inputs: dict
    software_version: str = ""
    params: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """Identifies what a delivery was made from: workflow, inputs, params, software wanted."""
        doc = {"workflow": self.workflow, "inputs": self.inputs, "params": self.params,
               "software_version": self.software_version}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    def conf(self, destination: str = "", execution_mode: str = "default") -> dict:
        """The workflow run's conf."""
        conf = {**self.params, **self.inputs, "dataset_id": self.id, "request_fingerprint": self.fingerprint,
                "execution_mode": execution_mode}
        if destination:
            conf["products_destination"] = destination
        return conf


def _parse_time(value, where: str) -> dt.datetime:
    if not isinstance(value, str):
        raise CatalogError(f"{where}: field 'observed': expected an ISO 8601 date-time string, got {value!r}")
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CatalogError(f"{where}: field 'observed': {value!r} is not an ISO 8601 date-time") from None
    if t.tzinfo is None:
        raise CatalogError(f"{where}: field 'observed': {value!r} has no time zone (add 'Z' for UTC)")
    return t.astimezone(dt.timezone.utc)


def parse(data: bytes | str, what: str = "catalog") -> list[Record]:
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{what}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("datasets"), list):
        raise CatalogError(f"{what}: expected an object with a 'datasets' list")
    if doc.get("catalog_version", 1) != 1:
        raise CatalogError(f"{what}: catalog_version {doc.get('catalog_version')!r} is not supported (expected 1)")
    records, seen = [], {}
    for i, raw in enumerate(doc["datasets"]):
        rid = raw.get("id") if isinstance(raw, dict) else None
        where = f"{what}: record {i}" + (f" ({rid!r})" if isinstance(rid, str) else "")
        if not isinstance(raw, dict):
            raise CatalogError(f"{where}: expected an object")
        unknown = sorted(set(raw) - {"id", "workflow", "observed", "inputs", "software_version", "params"})
        if unknown:
            raise CatalogError(f"{where}: unknown field(s) {unknown}")
        if not isinstance(rid, str) or not ID_RE.match(rid):
            raise CatalogError(f"{where}: field 'id': expected 1-128 characters [A-Za-z0-9._+-], got {rid!r}")
        if rid in seen:
            raise CatalogError(f"{where}: field 'id': {rid!r} already used by record {seen[rid]}")
        seen[rid] = i
        wf = raw.get("workflow")
        if wf not in WORKFLOWS:
            raise CatalogError(f"{where}: field 'workflow': expected one of {sorted(WORKFLOWS)}, got {wf!r}")
        observed = _parse_time(raw.get("observed"), where)
        inputs = raw.get("inputs")
        if not isinstance(inputs, dict):
            raise CatalogError(f"{where}: field 'inputs': expected an object of input locations")
        for key in WORKFLOWS[wf]:
            if key not in inputs:
                raise CatalogError(f"{where}: field 'inputs.{key}': missing (workflow {wf} needs {list(WORKFLOWS[wf])})")
        for key, loc in inputs.items():
            if key not in WORKFLOWS[wf]:
                raise CatalogError(f"{where}: field 'inputs.{key}': not an input of workflow {wf}")
            if not isinstance(loc, str) or not LOCATION_RE.match(loc):
                raise CatalogError(f"{where}: field 'inputs.{key}': expected an absolute path or s3://bucket/key, "
                                   f"got {loc!r}")
        version = raw.get("software_version", "")
        if not isinstance(version, str) or not VERSION_RE.match(version):
            raise CatalogError(f"{where}: field 'software_version': expected a version string, got {version!r}")
        params = raw.get("params", {})
        if not isinstance(params, dict):
            raise CatalogError(f"{where}: field 'params': expected an object")
        clash = sorted(set(params) & (RESERVED | set(WORKFLOWS[wf])))
        if clash:
            raise CatalogError(f"{where}: field 'params': {clash} are set by the catalog itself")
        records.append(Record(rid, wf, observed, dict(inputs), version, dict(params)))
    return records


def select(records: list[Record], start: dt.datetime, end: dt.datetime, workflows=None) -> list[Record]:
    """Records observed in [start, end), optionally of the given workflows, by observation time."""
    chosen = [r for r in records if start <= r.observed < end and (not workflows or r.workflow in workflows)]
    return sorted(chosen, key=lambda r: (r.observed, r.id))

