"""Product push: moto's S3 server over HTTP (through the Airflow connection) and a local directory."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from hooks import delivery
from hooks.product_store import ProductStoreHook, split_destination

INFO = delivery.DeliveryInfo("ds-1", "dag", "run-1", 1, {"preset": "tiny"}, {"casaflow": "0.1.0"})


@pytest.fixture
def products(tmp_path):
    ms = tmp_path / "x.ms"
    (ms / "ANTENNA").mkdir(parents=True)
    (ms / "table.f1").write_bytes(os.urandom(11 << 20))   # forces a multipart upload (5 MiB parts)
    (ms / "ANTENNA" / "table.dat").write_bytes(b"antennas")
    fits = tmp_path / "img.fits"
    fits.write_bytes(os.urandom(1000))
    return [delivery.Item(ms, "x.ms.tar", "export", "ms"), delivery.Item(fits, "img.fits", "export", "fits")]


def read_manifest(read):
    return delivery.parse_manifest(read(delivery.MANIFEST_NAME))


def test_destinations():
    assert split_destination("s3://bkt/a/b") == ("s3", "bkt", "a/b")
    assert split_destination("/data/out") == ("local", "/data/out", "")
    assert split_destination("file:///data/out") == ("local", "/data/out", "")
    with pytest.raises(ValueError, match="expected s3://bucket/prefix"):
        split_destination("relative/path")


def test_s3_push_multipart_verified_and_idempotent(s3_bucket, products):
    client, bucket = s3_bucket
    hook = ProductStoreHook(f"s3://{bucket}/deliveries", part_size_mib=5, concurrency=2)
    report = hook.push(products, INFO, "ds-1")
    assert sorted(report.uploaded) == ["img.fits", "x.ms.tar"]
    assert report.manifest_url == f"s3://{bucket}/deliveries/ds-1/delivery_manifest.xml"

    head, entries = delivery.parse_manifest(
        client.get_object(Bucket=bucket, Key="deliveries/ds-1/delivery_manifest.xml")["Body"].read())
    assert head["dataset"] == "ds-1" and head["run"]["run_id"] == "run-1"
    assert head["parameters"] == {"preset": "tiny"}
    by_key = {e.key: e for e in entries}
    assert set(by_key) == {"img.fits", "x.ms.tar"}
    for e in entries:   # read every object back: its bytes hash to what the manifest says
        body = client.get_object(Bucket=bucket, Key=f"deliveries/ds-1/{e.key}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == e.sha256 and len(body) == e.size
    tar = client.get_object(Bucket=bucket, Key="deliveries/ds-1/x.ms.tar")["Body"].read()
    names = tarfile.open(fileobj=io.BytesIO(tar)).getnames()
    assert names == ["x.ms", "x.ms/ANTENNA", "x.ms/table.f1", "x.ms/ANTENNA/table.dat"]
    assert by_key["x.ms.tar"].packaging == "tar" and by_key["img.fits"].media_type == "application/fits"
    # multipart: the server recorded a composite checksum for the tar
    assert by_key["x.ms.tar"].server_checksum

    again = hook.push(products, INFO, "ds-1")
    assert again.uploaded == [] and sorted(again.skipped) == ["img.fits", "x.ms.tar"]

    Path(products[1].source).write_bytes(os.urandom(1000))   # a changed product is re-uploaded
    third = hook.push(products, INFO, "ds-1")
    assert third.uploaded == ["img.fits"] and third.skipped == ["x.ms.tar"]


def test_failed_push_leaves_no_manifest(s3_bucket, products, tmp_path):
    client, bucket = s3_bucket
    hook = ProductStoreHook(f"s3://{bucket}/d", part_size_mib=5)
    hook.push(products, INFO, "ds-1")
    broken = products + [delivery.Item(tmp_path / "vanished.fits", "vanished.fits", "export")]
    with pytest.raises(FileNotFoundError):
        hook.push(broken, INFO, "ds-1")
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="d/").get("Contents", [])]
    assert "d/ds-1/delivery_manifest.xml" not in listed and "d/ds-1/img.fits" in listed
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_local_push(tmp_path, products):
    dest = tmp_path / "out"
    hook = ProductStoreHook(str(dest))
    report = hook.push(products, INFO, "ds-1")
    manifest = dest / "ds-1" / "delivery_manifest.xml"
    assert report.manifest_url == str(manifest)
    _, entries = delivery.parse_manifest(manifest.read_bytes())
    for e in entries:
        assert hashlib.sha256((dest / "ds-1" / e.key).read_bytes()).hexdigest() == e.sha256
    assert not [p for p in dest.rglob(".*partial*")]
    assert hook.push(products, INFO, "ds-1").uploaded == []
    (dest / "ds-1" / "img.fits").write_bytes(b"tampered")   # a damaged object is replaced
    assert hook.push(products, INFO, "ds-1").uploaded == ["img.fits"]


def test_manifest_refuses_entities():
    evil = b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x "boom">]><delivery>&x;</delivery>'
    with pytest.raises(Exception, match="DOCTYPE"):
        delivery.parse_manifest(evil)


def test_duplicate_keys_rejected(tmp_path, products):
    with pytest.raises(ValueError, match="same key"):
        delivery.push(None, "", products + products[:1], INFO)


def test_tar_stream_bytes_unchanged_and_hashed(tmp_path):
    """The tar writer must keep writing the bytes tarfile's stream mode wrote (earlier deliveries
    were recognised by their SHA-256), and the threaded hash must be the hash of those bytes."""
    from casaflow.archive import iter_tree, normalise
    from hooks.tarstream import HashingSink, tree_sha256, write_tar

    root = tmp_path / "t.ms"
    (root / "SUB" / "DEEP").mkdir(parents=True)
    (root / "empty").write_bytes(b"")
    (root / "block").write_bytes(os.urandom(512))
    (root / "big").write_bytes(os.urandom((9 << 20) + 17))   # more than one copy buffer
    (root / "SUB" / "DEEP" / "table.dat").write_bytes(b"x" * 1000)
    (root / "SUB" / ("long-name-" * 12)).write_bytes(b"pax header")   # > 100 chars with its path

    reference = io.BytesIO()
    with tarfile.open(fileobj=reference, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path, arcname in iter_tree(root):
            tar.add(str(path), arcname=arcname, recursive=False, filter=normalise)

    parts: list[bytes] = []
    sink = HashingSink(parts.append, part_size=5 << 20)
    write_tar(root, sink)
    sink.close()
    written = b"".join(parts)
    assert written == reference.getvalue()
    assert [len(p) for p in parts[:-1]] == [5 << 20] * (len(parts) - 1)
    assert sink.hexdigest() == hashlib.sha256(written).hexdigest()
    assert tree_sha256(root) == (hashlib.sha256(written).hexdigest(), len(written))
