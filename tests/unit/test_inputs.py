"""Fetching a run's inputs: local paths linked or copied, s3:// objects downloaded, tars extracted safely."""

from __future__ import annotations

import io
import tarfile

import pytest

from casaflow.errors import InputError
from hooks.inputs import fetch


def test_local_directory_linked_file_copied(tmp_path):
    ms = tmp_path / "src" / "x.ms"
    ms.mkdir(parents=True)
    (ms / "table.dat").write_bytes(b"t")
    lst = tmp_path / "src" / "CCIP_parameter.list"
    lst.write_text("imagename='a'\n")
    dest = tmp_path / "ws" / "input"
    got = fetch(str(ms), dest)
    assert got.is_symlink() and got.resolve() == ms.resolve()
    copied = fetch(f"file://{lst}", dest)
    assert not copied.is_symlink() and copied.read_text() == "imagename='a'\n"
    assert fetch(str(ms), dest) == got   # idempotent


@pytest.mark.parametrize("location,message", [
    ("relative/x.ms", "must be absolute"), ("{tmp}/no/such/thing", "no such file"),
    ("/no/such/thing", "not below an allowed local root"),
    ("http://example.org/x", "expected a local path or s3://"),
])
def test_bad_locations(tmp_path, location, message):
    with pytest.raises(InputError, match=message):
        fetch(location.format(tmp=tmp_path), tmp_path)


def test_s3_tar_downloaded_and_extracted(s3_bucket, tmp_path):
    client, bucket = s3_bucket
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("x.ms/table.dat", b"t"), ("x.ms/ANTENNA/table.f0", b"a")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    client.put_object(Bucket=bucket, Key="in/x.ms.tar", Body=buf.getvalue())
    client.put_object(Bucket=bucket, Key="in/SEIP_parameter.list", Body=b"imagename='a'\n")
    got = fetch(f"s3://{bucket}/in/x.ms.tar", tmp_path)
    assert got == tmp_path / "x.ms" and (got / "ANTENNA" / "table.f0").read_bytes() == b"a"
    assert fetch(f"s3://{bucket}/in/SEIP_parameter.list", tmp_path).read_text() == "imagename='a'\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary file left
