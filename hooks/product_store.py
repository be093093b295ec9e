"""``ProductStoreHook``: push a run's products to a destination and write the delivery manifest.

Destinations:

* ``s3://bucket/prefix`` -- any S3-compatible service, through the Airflow AWS connection
  ``aws_conn_id`` (default ``casaflow_s3``). Endpoint, region, path-style addressing and the
  checksum behaviour are connection options, e.g. for MinIO or Ceph::

      {"endpoint_url": "https://minio.example:9000", "region_name": "us-east-1",
       "config_kwargs": {"s3": {"addressing_style": "path"},
                         "request_checksum_calculation": "when_required",
                         "response_checksum_validation": "when_required"}}

  Credentials come only from the connection (or the environment/instance role behind it).
* ``file:///path`` or ``/path`` -- a local directory (the embedded default).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from airflow.sdk import BaseHook

from . import delivery
from .stores import LocalStore, S3Store

DEFAULT_CONN_ID = "casaflow_s3"


def split_destination(destination: str) -> tuple[str, str, str]:
    """('s3', bucket, prefix) or ('local', root, '')."""
    parsed = urlparse(destination)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"destination {destination!r}: expected s3://bucket/prefix")
        return "s3", parsed.netloc, parsed.path.strip("/")
    if parsed.scheme == "file":
        return "local", parsed.path, ""
    if parsed.scheme == "" and destination.startswith("/"):
        return "local", destination, ""
    raise ValueError(f"destination {destination!r}: expected s3://bucket/prefix, file:///path or an absolute path")


class ProductStoreHook(BaseHook):
    conn_name_attr = "aws_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    hook_name = "casaflow product store"

    def __init__(self, destination: str, aws_conn_id: str = DEFAULT_CONN_ID, part_size_mib: int = 16,
                 concurrency: int = 4):
        super().__init__()
        self.destination = destination
        self.aws_conn_id = aws_conn_id
        self.part_size_mib = part_size_mib
        self.concurrency = concurrency

    def get_store(self) -> tuple[object, str]:
        """(store, prefix) for the destination."""
        kind, where, prefix = split_destination(self.destination)
        if kind == "local":
            Path(where).mkdir(parents=True, exist_ok=True)
            return LocalStore(Path(where)), ""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        client = S3Hook(aws_conn_id=self.aws_conn_id).get_conn()
        return S3Store(client, where, self.part_size_mib << 20, self.concurrency), prefix

    def push(self, items: list[delivery.Item], info: delivery.DeliveryInfo, subprefix: str = "") -> delivery.PushReport:
        store, prefix = self.get_store()
        full_prefix = "/".join(p for p in (prefix, subprefix.strip("/")) if p)
        return delivery.push(store, full_prefix, items, info)

    # -- reading deliveries back (reprocessing decisions, status reports) ------------------------
    def _key(self, prefix: str, key: str) -> str:
        return "/".join(p for p in (prefix, key.strip("/")) if p)

    def delivered(self, dataset_id: str) -> dict | None:
        """The delivery manifest's header of ``dataset_id`` (plus its ``url``), or None."""
        store, prefix = self.get_store()
        key = self._key(prefix, f"{dataset_id}/{delivery.MANIFEST_NAME}")
        if store.head(key) is None:
            return None
        head, _ = delivery.parse_manifest(store.read(key), store.url(key))
        return {**head, "url": store.url(key)}

    def put_bytes(self, key: str, data: bytes) -> str:
        store, prefix = self.get_store()
        full = self._key(prefix, key)
        store.put_bytes(full, data, "application/json")
        return store.url(full)

    def read_all(self, key_prefix: str) -> list[tuple[str, bytes]]:
        """(url, bytes) of every object below ``key_prefix``."""
        store, prefix = self.get_store()
        return [(store.url(k), store.read(k)) for k in store.keys(self._key(prefix, key_prefix))]

