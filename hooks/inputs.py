"""Bringing a run's inputs into its workspace: a local path or an object in S3-compatible storage.

* Only from where the deployment allows: ``CASAFLOW_ALLOWED_INPUTS`` (operators/settings.py) names
  the local roots and ``s3://bucket[/prefix]`` locations inputs may come from. Anything else, and
  a local path whose real location (symlinks resolved, also every link inside a directory input)
  is outside every allowed root, is an :class:`InputNotAllowed` input error before anything is
  read. An empty setting allows nothing.
* A local directory (a MeasurementSet) is linked, not copied: the workflows only read it, and a
  PIMS is tens of GB. A local file is copied.
* ``s3://bucket/key`` is downloaded through the Airflow AWS connection; a ``.tar`` object (how
  casaflow pushes directories) is extracted with the same checks as every archive from outside.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from casaflow import atomic, paths, safetar
from casaflow.errors import InputError

SETTING = "CASAFLOW_ALLOWED_INPUTS"


class InputNotAllowed(InputError):
    """An input from a location the deployment does not allow."""


@dataclass(frozen=True)
class InputPolicy:
    """The allowed input locations. ``unrestricted`` is for the operator's own command line
    (``casaflow status``), never for a DAG run."""

    allowed: tuple = ()
    unrestricted: bool = False

    @classmethod
    def from_settings(cls) -> "InputPolicy":
        from operators.settings import settings

        return cls(tuple(settings().allowed_inputs))

    def _refuse(self, location: str, why: str):
        allowed = ", ".join(self.allowed) or "nothing"
        raise InputNotAllowed(f"input {location!r}: {why}; {SETTING} allows {allowed}")

    def check_local(self, location: str, src: Path) -> None:
        if self.unrestricted:
            return
        roots = [e for e in self.allowed if not e.startswith("s3://")]
        real = os.path.realpath(src)
        if not any(paths.within(real, root) for root in roots):
            self._refuse(location, f"{real} is not below an allowed local root")
        if os.path.isdir(real):
            # A directory is linked whole: a link inside it must not lead out either.
            for dirpath, dirnames, filenames in os.walk(real):
                for name in dirnames + filenames:
                    p = os.path.join(dirpath, name)
                    if os.path.islink(p) and not any(paths.within(p, root) for root in roots):
                        self._refuse(location, f"it holds the link {p} -> {os.readlink(p)}, leading "
                                               f"outside the allowed roots")

    def check_s3(self, location: str, bucket: str, key: str) -> None:
        if not bucket or not key:
            raise InputError(f"input {location!r}: expected s3://bucket/key")
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts) or "\x00" in key:
            raise InputNotAllowed(f"input {location!r}: key {key!r} has an empty, '.' or '..' segment")
        if self.unrestricted:
            return
        for entry in self.allowed:
            if not entry.startswith("s3://"):
                continue
            ebucket, _, prefix = entry[5:].partition("/")
            prefix = prefix.strip("/")
            if ebucket == bucket and (not prefix or key == prefix or key.startswith(prefix + "/")):
                return
        self._refuse(location, f"s3://{bucket}/{key} is not in an allowed bucket or prefix")


def _policy(policy: InputPolicy | None) -> InputPolicy:
    return policy if policy is not None else InputPolicy.from_settings()


def fetch(location: str, dest_dir: Path, aws_conn_id: str = "casaflow_s3",
          policy: InputPolicy | None = None) -> Path:
    """Put ``location`` into ``dest_dir``; returns the path of what arrived there.
    ``policy`` defaults to the deployment's allowed inputs."""
    policy = _policy(policy)
    dest_dir = Path(dest_dir)
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        bucket, key = parsed.netloc, parsed.path[1:]
        policy.check_s3(location, bucket, key)
        dest_dir.mkdir(parents=True, exist_ok=True)
        return _fetch_s3(bucket, key, dest_dir, aws_conn_id)
    if parsed.scheme not in ("", "file"):
        raise InputError(f"input {location!r}: expected a local path or s3://bucket/key")
    src = Path(parsed.path if parsed.scheme == "file" else location).expanduser()
    if not src.is_absolute():
        raise InputError(f"input {location!r}: a local path must be absolute")
    policy.check_local(location, src)
    if not src.exists():
        raise InputError(f"input {location!r}: no such file or directory")
    if not (src.is_dir() or src.is_file()):
        raise InputError(f"input {location!r}: neither a regular file nor a directory")
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = paths.inside(dest_dir, src.name, f"input {location!r}", single=True)
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

    location = f"s3://{bucket}/{key}"
    name = paths.relative_name(key.rsplit("/", 1)[-1], f"input {location!r}", single=True)
    client = S3Hook(aws_conn_id=aws_conn_id).get_conn()
    if not name.endswith(".tar"):
        target = dest_dir / name
        with atomic.atomic_open(target, "wb") as fh:
            client.download_fileobj(bucket, key, fh)
        return target
    tmp_path = atomic.temp_name(dest_dir / name)
    try:
        with open(tmp_path, "wb") as fh:
            client.download_fileobj(bucket, key, fh)
        safetar.extract(tmp_path, dest_dir)
        return dest_dir / name[: -len(".tar")]
    finally:
        tmp_path.unlink(missing_ok=True)


def read_bytes(location: str, aws_conn_id: str = "casaflow_s3", policy: InputPolicy | None = None) -> bytes:
    """The content of a small file (a catalog, a list) at a local path or s3://bucket/key.
    ``policy`` defaults to the deployment's allowed inputs."""
    policy = _policy(policy)
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        bucket, key = parsed.netloc, parsed.path[1:]
        policy.check_s3(location, bucket, key)
        client = S3Hook(aws_conn_id=aws_conn_id).get_conn()
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            raise InputError(f"{location}: no such object") from None
    if parsed.scheme not in ("", "file"):
        raise InputError(f"{location!r}: expected a local path or s3://bucket/key")
    path = Path(parsed.path if parsed.scheme == "file" else location)
    if not path.is_absolute() and not policy.unrestricted:
        raise InputError(f"{location!r}: a local path must be absolute")
    policy.check_local(location, path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{location}: no such file") from None
