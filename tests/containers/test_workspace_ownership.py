"""One workspace written from both sides: an Airflow task pod's container (the Airflow image, uid
50000, gid 0) and a worker pod's container (the casa-worker image, uid 10001), sharing the workspace
group 10001 (the worker pods' fsGroup and supplemental group; the Airflow chart values give Airflow's
pods the same supplemental group). The claim's root is group-owned and setgid, as fsGroup leaves it;
both images' entrypoints set umask 0002. The Airflow side runs casaflow's own code: the operator's
workspace mkdir and its OOM counters under results/."""

from __future__ import annotations

import os

import pytest

from . import engine

pytestmark = [pytest.mark.containers]

GROUP = 10001   # helm/casaflow/values.yaml workspace.group; helm/airflow-values.yaml workers' securityContexts

AIRFLOW_STEP = """
import os, sys
from pathlib import Path
from operators import resources as res
ws = Path(sys.argv[1])
ws.mkdir(parents=True, exist_ok=True)             # as CasaStageOperator does before a stage
res.record_oom_attempt(str(ws), "noop", None)      # the OOM counter under results/
if len(sys.argv) > 2:                              # after the worker: write into what it made
    made = [p for p in ws.rglob("*") if p.is_file() and p.stat().st_uid != os.getuid()]
    assert made, "the worker wrote nothing"
    for p in made:
        with p.open("a") as fh:
            fh.write("\\n")
    (ws / "results" / "noop.json").unlink()         # replace the worker's result (a re-run)
print(res.count_oom_attempts(str(ws), "noop", None))
"""


def airflow_side(image, claim, ws, *extra, umask="0002"):
    return engine.run("run", "--rm", "--network=none", "--read-only", "--cap-drop=ALL", "--security-opt",
                      "no-new-privileges", "--tmpfs", "/tmp", "--user", f"{engine.AIRFLOW_UID}:0",
                      "--group-add", str(GROUP), "-e", f"CASAFLOW_UMASK={umask}", "-v", f"{claim}:{claim}",
                      image, "python", "-c", AIRFLOW_STEP, str(ws), *extra)


def worker_side(image, claim, ws):
    return engine.run("run", *engine.pod_flags(engine.WORKER_UID, groups=[GROUP]), "-v", f"{claim}:{claim}",
                      image, "noop", "--workspace", str(ws))


def claim_root(tmp_path):
    claim = tmp_path / "claim"
    claim.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chown(claim, 0, GROUP)
    os.chmod(claim, 0o2775)        # what fsGroup makes of a volume's root
    return claim


def test_both_uids_write_one_workspace(images, tmp_path):
    claim = claim_root(tmp_path)
    ws = claim / "vlass_se_cube" / "run-1"
    first = airflow_side(images["airflow"], claim, ws)
    assert first.returncode == 0 and first.stdout.split()[-1] == "1", first.stderr[-3000:]
    worker = worker_side(images["worker"], claim, ws)
    assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-2000:]
    assert (ws / "results" / "noop.json").stat().st_uid == engine.WORKER_UID
    again = airflow_side(images["airflow"], claim, ws, "after-worker")
    assert again.returncode == 0 and again.stdout.split()[-1] == "2", again.stderr[-3000:]
    rerun = worker_side(images["worker"], claim, ws)          # and the worker over Airflow's files
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    for p in [ws, *ws.rglob("*")]:
        st = p.stat()
        assert st.st_gid == GROUP, p                           # the setgid root keeps the group
        assert st.st_mode & 0o020, p                           # group-writable
        if p.is_dir():
            assert st.st_mode & 0o2000, p                      # and passes it on


def test_without_the_umask_the_worker_is_refused(images, tmp_path):
    """The control: an Airflow side with the default umask 0022 leaves directories the worker cannot write."""
    claim = claim_root(tmp_path)
    ws = claim / "run-2"
    assert airflow_side(images["airflow"], claim, ws, umask="0022").returncode == 0
    worker = worker_side(images["worker"], claim, ws)
    assert worker.returncode != 0
    assert "Permission denied" in worker.stdout + worker.stderr
