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

from casaflow.errors import TransientError

from . import delivery
from .lease import DEFAULT_TTL, DEFAULT_WAIT, Holder, Lease, lease_key
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


def store_outage(exc: BaseException) -> bool:
    """True when ``exc`` says the object store was unreachable or failing, not that the request
    was wrong: connection errors and timeouts, 5xx answers, SlowDown."""
    from botocore.exceptions import ClientError, HTTPClientError

    for e in (exc, exc.__cause__, exc.__context__):
        if isinstance(e, HTTPClientError | ConnectionError | TimeoutError):
            return True
        if isinstance(e, ClientError):
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if status >= 500 or e.response.get("Error", {}).get("Code") in ("SlowDown", "RequestTimeout"):
                return True
    return False


class ProductStoreHook(BaseHook):
    conn_name_attr = "aws_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    hook_name = "casaflow product store"

    def __init__(self, destination: str, aws_conn_id: str = DEFAULT_CONN_ID, part_size_mib: int = 16,
                 concurrency: int = 4, lease_ttl: float = DEFAULT_TTL, lease_wait: float = DEFAULT_WAIT):
        super().__init__()
        self.destination = destination
        self.aws_conn_id = aws_conn_id
        self.part_size_mib = part_size_mib
        self.concurrency = concurrency
        self.lease_ttl = lease_ttl
        self.lease_wait = lease_wait

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
        """Deliver ``items`` under ``<destination>/<subprefix>`` (the dataset id), fenced by the
        dataset's lease. Store outages (no connection, timeouts, 5xx) raise TransientError."""
        dataset = subprefix.strip("/")
        if not dataset or "/" in dataset or dataset in (".", ".."):
            raise ValueError(f"dataset id {subprefix!r}: one non-empty path segment expected")
        store, prefix = self.get_store()
        full_prefix = "/".join(p for p in (prefix, dataset) if p)
        lease = Lease(store, lease_key(prefix, dataset), Holder(info.dag_id, info.run_id, int(info.try_number or 0)),
                      ttl=self.lease_ttl, wait_seconds=self.lease_wait)
        try:
            return delivery.push(store, full_prefix, items, info, lease)
        except Exception as exc:
            if store_outage(exc):
                raise TransientError(f"products destination {self.destination} unreachable or failing during "
                                     f"the push of {dataset} ({type(exc).__name__}: {exc}); no manifest was "
                                     f"written, a retry redoes the delivery") from exc
            raise

    # -- the lease, by hand --------------------------------------------------------------------
    def lease_status(self, dataset_id: str) -> str:
        from .lease import describe

        store, prefix = self.get_store()
        key = lease_key(prefix, dataset_id)
        got = store.read_tagged(key)
        if got is None:
            return f"{store.url(key)}: no lease (never delivered through a lease)"
        import json

        return f"{store.url(key)}: {describe(json.loads(got[0]))}"

    def release_lease(self, dataset_id: str) -> str:
        """Release the dataset's lease whoever holds it: for a writer that died holding it.
        A writer still running loses it at its next check and fails (LeaseLost)."""
        from .lease import release_by_hand

        store, prefix = self.get_store()
        key = lease_key(prefix, dataset_id)
        return f"{store.url(key)}: released; it was held by {release_by_hand(store, key)}"

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

