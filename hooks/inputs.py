"""Bringing a run's inputs into its workspace: a local path or an object in S3-compatible storage.

* A local directory (a MeasurementSet) is linked, not copied: the workflows only read it, and a
  PIMS is tens of GB. A local file is copied.
* ``s3://bucket/key`` is downloaded through the Airflow AWS connection; a ``.tar`` object (how
  casaflow pushes directories) is extracted with the same checks as every archive from outside.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from casaflow import safetar
from casaflow.errors import InputError


def fetch(location: str, dest_dir: Path, aws_conn_id: str = "casaflow_s3") -> Path:
    """Put ``location`` into ``dest_dir``; returns the path of what arrived there."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        return _fetch_s3(parsed.netloc, parsed.path.lstrip("/"), dest_dir, aws_conn_id)
    if parsed.scheme not in ("", "file"):
        raise InputError(f"input {location!r}: expected a local path or s3://bucket/key")
    src = Path(parsed.path if parsed.scheme == "file" else location).expanduser()
    if not src.is_absolute():
        raise InputError(f"input {location!r}: a local path must be absolute")
    if not src.exists():
        raise InputError(f"input {location!r}: no such file or directory")
    target = dest_dir / src.name
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    if src.is_dir():
        os.symlink(src.resolve(), target)
    else:
        shutil.copyfile(src, target)
    return target


def _fetch_s3(bucket: str, key: str, dest_dir: Path, aws_conn_id: str) -> Path:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    if not bucket or not key:
        raise InputError(f"input s3://{bucket}/{key}: expected s3://bucket/key")
    client = S3Hook(aws_conn_id=aws_conn_id).get_conn()
    name = Path(key).name
    with tempfile.NamedTemporaryFile(dir=dest_dir, prefix=".download-", delete=False) as tmp:
        client.download_fileobj(bucket, key, tmp)
        tmp_path = Path(tmp.name)
    try:
        if name.endswith(".tar"):
            safetar.extract(tmp_path, dest_dir)
            return dest_dir / name[: -len(".tar")]
        target = dest_dir / name
        os.replace(tmp_path, target)
        return target
    finally:
        tmp_path.unlink(missing_ok=True)


def read_bytes(location: str, aws_conn_id: str = "casaflow_s3") -> bytes:
    """The content of a small file (a catalog, a list) at a local path or s3://bucket/key."""
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        client = S3Hook(aws_conn_id=aws_conn_id).get_conn()
        try:
            return client.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()
        except client.exceptions.NoSuchKey:
            raise InputError(f"{location}: no such object") from None
    path = Path(parsed.path if parsed.scheme == "file" else location)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{location}: no such file") from None
