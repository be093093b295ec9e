"""Delivery leases, the exact-set model, the manifest's fencing and provenance, part planning.

Both stores: a local directory and moto's S3 server over HTTP (conditional writes, If-None-Match
and If-Match, are moto's own implementation: moto >= 5.0 answers 412 when they fail).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest

from hooks import delivery
from hooks.lease import Holder, Lease, LeaseHeld, LeaseLost, lease_key, release_by_hand
from hooks.stores import (MAX_PART, MAX_PARTS, MIN_PART, LocalStore, PreconditionFailed, S3Store, StoreError,
                          plan_parts, tar_size_bound)

TB = 10 ** 12
TiB = 1 << 40
MiB = 1 << 20


# -- part planning -------------------------------------------------------------------------
@pytest.mark.parametrize("size", [5 * TB, 5 * TiB, 200 * (1 << 30), 156 * (1 << 30) + 1])
def test_big_objects_fit_in_s3_parts(size):
    part, threads = plan_parts(size, 16 * MiB, 4)
    assert MIN_PART <= part <= MAX_PART and part % MiB == 0
    assert -(-size // part) <= MAX_PARTS          # the whole object fits in 10,000 parts
    assert part * (threads + 1) <= 1 << 30 or threads == 1   # parts in memory stay bounded


def test_five_terabytes_planned():
    part, threads = plan_parts(5 * TB, 16 * MiB, 4)
    # 5e12 / 10,000 = 500,000,000 bytes, rounded up to whole MiB: 477 MiB
    assert part == 477 * MiB and 5 * TB / part <= MAX_PARTS and threads == 1


def test_small_objects_keep_the_configured_part_size():
    assert plan_parts(2 << 30, 16 * MiB, 4) == (16 * MiB, 4)
    assert plan_parts(0, 16 * MiB, 4) == (16 * MiB, 4)


def test_over_five_tib_refused():
    with pytest.raises(StoreError, match="5 TiB"):
        plan_parts(5 * TiB + 1)


def test_tar_size_bound_covers_the_stream(tmp_path):
    from hooks.tarstream import tree_sha256

    root = tmp_path / "t.ms"
    (root / "SUB").mkdir(parents=True)
    for i in range(30):
        (root / "SUB" / f"f{i}").write_bytes(os.urandom(i * 37))
    (root / ("n" * 150)).write_bytes(b"x")
    assert tar_size_bound(root) >= tree_sha256(root)[1]


# -- stores under test -----------------------------------------------------------------------
@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "dest"), "deliveries"
    client, bucket = request.getfixturevalue("s3_bucket")
    return S3Store(client, bucket, 5 * MiB, 2), "deliveries"


def items_in(tmp_path, files: dict[str, bytes]) -> list[delivery.Item]:
    src = tmp_path / f"src-{time.monotonic_ns()}"
    src.mkdir()
    out = []
    for name, data in files.items():
        (src / name).write_bytes(data)
        out.append(delivery.Item(src / name, name, "stage"))
    return out


def lease_for(store, dataset, dag="dag", run="run-1", try_number=1, **kw):
    return Lease(store, lease_key("deliveries", dataset), Holder(dag, run, try_number), **kw)


def info_for(dataset, run="run-1", try_number=1, **kw):
    return delivery.DeliveryInfo(dataset, "dag", run, try_number, **kw)


def listed(store, prefix):
    return sorted(k.split(prefix + "/", 1)[1] for k in store.keys(prefix))


# -- conditional writes ------------------------------------------------------------------------
def test_conditional_writes(store):
    st, _ = store
    etag = st.put_if("x/obj", b"one", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        st.put_if("x/obj", b"two", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        st.put_if("x/obj", b"two", if_match='"not-the-etag"')
    etag2 = st.put_if("x/obj", b"two", if_match=etag)
    assert st.read_tagged("x/obj") == (b"two", etag2) and etag2 != etag
    with pytest.raises(PreconditionFailed):
        st.delete_if("x/obj", etag)
    st.delete_if("x/obj", etag2)
    assert st.read_tagged("x/obj") is None


# -- leases ------------------------------------------------------------------------------------
def test_second_writer_fails_naming_the_holder(store):
    st, _ = store
    first = lease_for(st, "ds", run="manual__1").acquire()
    other = lease_for(st, "ds", dag="reprocess", run="scheduled__2", try_number=3, wait_seconds=1.0, poll=0.2)
    t0 = time.monotonic()
    with pytest.raises(LeaseHeld) as err:
        other.acquire()
    assert time.monotonic() - t0 >= 1.0          # it waited (bounded) before failing
    msg = str(err.value)
    assert "dag 'dag'" in msg and "run 'manual__1'" in msg and "try 1" in msg and "casaflow lease release" in msg
    first.release()
    other.acquire()                               # free once released
    assert other.generation == first.generation + 1


def test_second_writer_waits_for_the_release(store):
    import threading

    st, _ = store
    first = lease_for(st, "ds", run="a").acquire()
    threading.Timer(1.0, first.release).start()
    second = lease_for(st, "ds", run="b", wait_seconds=30, poll=0.2).acquire()
    assert second.generation == 2


def test_expired_lease_taken_over_and_the_old_holder_stopped(store):
    st, _ = store
    old = lease_for(st, "ds", run="a", ttl=1.0).acquire()
    time.sleep(1.3)
    new = lease_for(st, "ds", run="b", wait_seconds=0).acquire()
    assert new.generation == old.generation + 1
    with pytest.raises(LeaseLost, match="run 'b'"):
        old.check(force=True)   # more than a second after its last renewal: asks the store


def test_earlier_try_of_the_same_run_superseded_at_once(store):
    st, _ = store
    zombie = lease_for(st, "ds", try_number=1, ttl=600).acquire()
    retry = lease_for(st, "ds", try_number=2, wait_seconds=0).acquire()   # no waiting for expiry
    assert retry.generation == zombie.generation + 1
    with pytest.raises(LeaseLost, match="try 2"):
        zombie.renew()
    # ...but a later try is never taken over by an earlier one
    with pytest.raises(LeaseHeld):
        lease_for(st, "ds", try_number=1, wait_seconds=0).acquire()


def test_release_by_hand(store):
    st, _ = store
    stuck = lease_for(st, "ds", run="crashed", ttl=3600).acquire()
    was = release_by_hand(st, stuck.key)
    assert "run 'crashed'" in was
    assert lease_for(st, "ds", run="next", wait_seconds=0).acquire().generation == stuck.generation + 1


def test_cli_releases_a_stuck_lease(tmp_path, capsys):
    from casaflow_ops.cli import main

    st = LocalStore(tmp_path / "dest")
    Lease(st, lease_key("", "ds"), Holder("vlass_se_cube", "manual__x", 1), ttl=3600).acquire()
    assert main(["lease", "show", "--dataset", "ds", "--destination", str(tmp_path / "dest")]) == 0
    assert "run 'manual__x'" in capsys.readouterr().out
    assert main(["lease", "release", "--dataset", "ds", "--destination", str(tmp_path / "dest")]) == 0
    assert "released; it was held by dag 'vlass_se_cube'" in capsys.readouterr().out
    assert Lease(st, lease_key("", "ds"), Holder("d", "other", 1), wait_seconds=0).acquire().generation == 2


# -- the exact set and the fenced commit ---------------------------------------------------------
def test_redelivery_with_one_product_fewer(store, tmp_path):
    st, base = store
    prefix = f"{base}/ds"
    first = items_in(tmp_path, {"a.fits": b"A" * 100, "b.fits": b"B" * 100, "c.fits": b"C" * 10})
    delivery.push(st, prefix, first, info_for("ds"), lease_for(st, "ds"))
    assert listed(st, prefix) == ["a.fits", "b.fits", "c.fits", "delivery_manifest.xml"]
    second = items_in(tmp_path, {"a.fits": b"A" * 100, "c.fits": b"C2" * 10})
    report = delivery.push(st, prefix, second, info_for("ds", run="run-2"), lease_for(st, "ds", run="run-2"))
    assert report.removed == [f"{prefix}/b.fits"] and report.skipped == ["a.fits"]
    # a prefix lister and a manifest reader see the same set, and b.fits in neither
    _, entries = delivery.parse_manifest(st.read(f"{prefix}/delivery_manifest.xml"))
    assert sorted(e.key for e in entries) == ["a.fits", "c.fits"]
    assert listed(st, prefix) == ["a.fits", "c.fits", "delivery_manifest.xml"]
    for e in entries:
        assert hashlib.sha256(st.read(f"{prefix}/{e.key}")).hexdigest() == e.sha256
    assert st.read_tagged(lease_key(base, "ds"))[0].startswith(b"{")   # the lease lives outside the prefix
    if isinstance(st, LocalStore):      # on disk too: no lock or partial file left in the delivery
        assert sorted(os.listdir(st.root / prefix)) == ["a.fits", "c.fits", "delivery_manifest.xml"]


def test_superseded_writer_cannot_commit_over_a_newer_delivery(store, tmp_path):
    st, base = store
    prefix, key = f"{base}/ds", f"{base}/ds/delivery_manifest.xml"
    older = lease_for(st, "ds", try_number=1).acquire()
    newer = lease_for(st, "ds", try_number=2).acquire()
    new_body = delivery.manifest_xml(info_for("ds", try_number=2, lease_generation=newer.generation), [])
    delivery._commit(st, key, new_body, info_for("ds", try_number=2, lease_generation=newer.generation))
    with pytest.raises(LeaseLost, match="newer delivery"):
        delivery._commit(st, key, b"<delivery/>", info_for("ds", try_number=1, lease_generation=older.generation))
    assert st.read(key) == new_body


def test_newer_writer_replaces_a_manifest_the_superseded_one_slipped_in(store):
    st, base = store
    key = f"{base}/ds/delivery_manifest.xml"
    old = info_for("ds", try_number=1, lease_generation=1)
    st.put_if(key, delivery.manifest_xml(old, []), if_none_match=True)
    new = info_for("ds", try_number=2, lease_generation=2)
    delivery._commit(st, key, delivery.manifest_xml(new, []), new)
    assert delivery.parse_manifest(st.read(key))[0]["run"]["try_number"] == "2"


def test_lost_lease_stops_the_push_before_anything_becomes_visible(store, tmp_path):
    st, base = store
    prefix = f"{base}/ds"
    zombie = lease_for(st, "ds", try_number=1).acquire()
    lease_for(st, "ds", try_number=2).acquire()
    zombie.acquire = lambda: zombie          # it believes it still holds the lease
    time.sleep(1.1)                          # longer than a forced check is cached
    with pytest.raises(LeaseLost):
        delivery.push(st, prefix, items_in(tmp_path, {"a.fits": b"A"}), info_for("ds"), zombie)
    assert listed(st, prefix) == []


def test_fenced_push_refuses_an_empty_prefix(store, tmp_path):
    st, _ = store
    with pytest.raises(ValueError, match="dataset prefix"):
        delivery.push(st, "", items_in(tmp_path, {"a": b"a"}), info_for("ds"), lease_for(st, "ds"))


# -- provenance ----------------------------------------------------------------------------------
def test_manifest_records_every_param_and_the_image():
    params = {"group_overrides": {"spw2": {"cell": "0.5arcsec"}}, "spws": [1, 2, 5], "niter": 100,
              "interactive": False, "dataset_id": "", "note": "a, b"}
    info = delivery.DeliveryInfo("ds", "dag", "run", 1, params, {}, {"reference": "reg/casa-worker:1",
                                                                     "digest": "sha256:" + "ab" * 32})
    head, _ = delivery.parse_manifest(delivery.manifest_xml(info, []))
    assert head["parameters"] == params
    assert head["image"] == {"reference": "reg/casa-worker:1", "digest": "sha256:" + "ab" * 32}


def test_image_digest_from_the_pod_status(tmp_path):
    from operators.workflow import image_provenance, record_image

    pod = SimpleNamespace(status=SimpleNamespace(container_statuses=[
        SimpleNamespace(name="base", image_id="docker-pullable://reg/casa-worker@sha256:" + "cd" * 32)]))
    record_image(tmp_path, "makeimages.0", "reg/casa-worker:1", pod)
    assert image_provenance(tmp_path, "kubernetes") == {"reference": "reg/casa-worker:1",
                                                        "digest": "sha256:" + "cd" * 32}
    assert image_provenance(tmp_path, "local") == {}


# -- dataset ids -----------------------------------------------------------------------------------
def test_dataset_ids_from_the_data():
    from operators.workflow import derived_dataset_id, qa2_dataset_id

    assert derived_dataset_id("uid___A001_X3d5e_X12", {"uid___A002_X1_X2.ms": "s"}) == "uid___A001_X3d5e_X12"
    assert derived_dataset_id("unknown", {"uid___A002_X1_X2.ms": "session_1"}) == "uid___A002_X1_X2"
    two = derived_dataset_id("unknown", ["uid___A002_X1_X3.ms", "uid___A002_X1_X2.ms"])
    assert two.startswith("uid___A002_X1_X2+1-") and two != derived_dataset_id("unknown", ["uid___A002_X1_X2.ms",
                                                                                          "uid___A002_X9_X9.ms"])
    assert derived_dataset_id("unknown", {}) == ""
    assert qa2_dataset_id("2011.0.00229.S", {"outputs": {"member": "science_goal.uid___A001_X1_X1/group."
                                                                    "uid___A001_X1_X2/member.uid___A001_X1_X3"}}) \
        == "2011.0.00229.S.uid___A001_X1_X3"
    assert qa2_dataset_id("2011.0.00229.S", {"outputs": {"member": "sg_ouss_id/group_ouss_id/member_ouss_id",
                                                         "executions": ["uid___A002_X5_X6"]}}) \
        == "2011.0.00229.S.uid___A002_X5_X6"


@pytest.mark.parametrize("dataset_id", ["unknown", "", "../x"])
def test_push_refuses_an_unknown_dataset(dataset_id):
    from airflow.sdk.exceptions import AirflowFailException

    from operators.workflow import push_products

    with pytest.raises(AirflowFailException, match="dataset id"):
        push_products({"dag": SimpleNamespace(dag_id="alma_exportdata"), "run_id": "r", "params": {}},
                      dataset_id, ["products"])
