"""``casaflow janitor``: delete casa-worker pods whose Airflow task instance is no longer running.

Pods are found by label (``app.kubernetes.io/component=casa-worker``); the exact task instance is
read from the pod's ``casaflow.org/*`` annotations and its state asked of Airflow's REST API. A pod
is deleted when it is older than the grace period and its task instance is gone, finished, or on
another try. Pods of running tries are never touched.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request

log = logging.getLogger("casaflow.janitor")

SELECTOR = "app.kubernetes.io/component=casa-worker"
LIVE_STATES = {"running", "queued", "scheduled", "up_for_reschedule", "deferred", "restarting"}


def airflow_state_lookup(api_url: str, username: str, password: str):
    """A function (dag_id, run_id, task_id, map_index) -> (state, try_number) or None if unknown."""
    token_req = urllib.request.Request(f"{api_url}/auth/token", method="POST",
                                       data=json.dumps({"username": username, "password": password}).encode(),
                                       headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(token_req, timeout=30) as r:
        token = json.loads(r.read())["access_token"]

    def lookup(dag_id, run_id, task_id, map_index):
        parts = [urllib.parse.quote(str(x), safe="") for x in (dag_id, run_id, task_id)]
        url = f"{api_url}/api/v2/dags/{parts[0]}/dagRuns/{parts[1]}/taskInstances/{parts[2]}"
        if int(map_index) >= 0:
            url += f"/{int(map_index)}"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                ti = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return ti.get("state"), ti.get("try_number")

    return lookup


def orphans(pods, lookup, older_than: dt.timedelta, now: dt.datetime | None = None) -> list[tuple[str, str]]:
    """(pod name, reason) of the pods to delete."""
    now = now or dt.datetime.now(dt.timezone.utc)
    out = []
    for pod in pods:
        meta = pod.metadata
        if meta.creation_timestamp and now - meta.creation_timestamp < older_than:
            continue
        ann = meta.annotations or {}
        ids = [ann.get(f"casaflow.org/{k}") for k in ("dag-id", "run-id", "task-id", "map-index", "try-number")]
        if not all(ids[:3]):
            out.append((meta.name, "no casaflow task annotations"))
            continue
        found = lookup(*ids[:4])
        if found is None:
            out.append((meta.name, "task instance not found"))
            continue
        state, try_number = found
        if state not in LIVE_STATES:
            out.append((meta.name, f"task instance is {state}"))
        elif str(try_number) != str(ids[4]):
            out.append((meta.name, f"pod of try {ids[4]}, task instance is on try {try_number}"))
    return out


def run(namespace: str, older_than_minutes: int, dry_run: bool = False, core_v1=None, lookup=None) -> list:
    if core_v1 is None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        core_v1 = client.CoreV1Api()
    if lookup is None:
        lookup = airflow_state_lookup(os.environ["CASAFLOW_AIRFLOW_API_URL"], os.environ["CASAFLOW_AIRFLOW_USERNAME"],
                                      os.environ["CASAFLOW_AIRFLOW_PASSWORD"])
    pods = core_v1.list_namespaced_pod(namespace, label_selector=SELECTOR).items
    doomed = orphans(pods, lookup, dt.timedelta(minutes=older_than_minutes))
    for name, reason in doomed:
        log.info("%s pod %s: %s", "would delete" if dry_run else "deleting", name, reason)
        if not dry_run:
            core_v1.delete_namespaced_pod(name, namespace)
    return doomed
