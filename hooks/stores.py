"""Where products go: a local directory (the embedded default) or an S3-compatible bucket.

Both stores offer the same few operations. Every write computes the object's full SHA-256 in the
same pass as the write, and nothing is visible under its final key until it is complete (local:
write to a hidden temporary name, then rename; S3: a multipart upload only appears on completion).
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from casaflow import atomic, paths

from .tarstream import HashingSink, file_sha256, write_tar

MiB = 1 << 20


@dataclass
class StoredObject:
    key: str
    size: int
    sha256: str               # hex digest of the whole object
    server_checksum: str = ""  # what the server recorded (S3: SHA256 or composite SHA256)


class StoreError(Exception):
    pass


class KeyEscapeError(StoreError, paths.PathEscapeError):
    """A key that would lead outside the store's root (an input error: never retried)."""


# ------------------------------------------------------------------------------------------
class LocalStore:
    """Objects are files below ``root``; keys are relative paths."""

    kind = "local"

    def __init__(self, root: Path):
        self.root = Path(root)

    def url(self, key: str) -> str:
        return str(self.root / key)

    def _path(self, key: str, allow_root: bool = False) -> Path:
        """The file of ``key``, for every operation: refused unless it stays below the root, also
        after following symlinks (casaflow.paths, the one containment check)."""
        try:
            return paths.inside(self.root, key, f"key {key!r} of the destination {self.root}", resolve=True,
                                allow_root=allow_root)
        except paths.PathEscapeError as exc:
            raise KeyEscapeError(str(exc)) from None

    def _target(self, key: str) -> Path:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def _write(self, key: str, produce) -> StoredObject:
        with atomic.atomic_open(self._target(key), "wb", durable=True) as fh:
            sink = HashingSink(fh.write)
            produce(sink)
            sink.close()
        return StoredObject(key, sink.size, sink.hexdigest())

    def put_file(self, key: str, path: Path, media_type: str = "") -> StoredObject:
        def produce(sink):
            with open(path, "rb") as src:
                while block := src.read(8 * MiB):
                    sink.write(block)

        return self._write(key, produce)

    def put_tree(self, key: str, root: Path) -> StoredObject:
        return self._write(key, lambda sink: write_tar(root, sink))

    def put_bytes(self, key: str, data: bytes, media_type: str = "") -> StoredObject:
        return self._write(key, lambda sink: sink.write(data))

    def head(self, key: str) -> StoredObject | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return StoredObject(key, path.stat().st_size, "")

    def sha256_of(self, key: str) -> str:
        return file_sha256(self._path(key))[0]

    def read(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str) -> list[str]:
        """Keys below ``prefix`` (a directory-like prefix), sorted; hidden partial files excluded."""
        base = self._path(prefix or ".", allow_root=True)
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith("."))


# ------------------------------------------------------------------------------------------
def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class S3Store:
    """Objects in ``bucket`` under ``prefix``, through a boto3 S3 client.

    Small objects go in one PUT with a SHA-256 checksum the server verifies. Large files and
    directory tar streams go as multipart uploads: parts of ``part_size`` are uploaded by
    ``concurrency`` threads while the next part is produced, each with its own SHA-256 checksum,
    so memory stays near ``part_size * (concurrency + 1)`` and nothing touches the disk.
    """

    kind = "s3"

    def __init__(self, client, bucket: str, part_size: int = 16 * MiB, concurrency: int = 4):
        if part_size < 5 * MiB:
            raise ValueError("S3 multipart parts must be at least 5 MiB")
        self.client = client
        self.bucket = bucket
        self.part_size = part_size
        self.concurrency = concurrency

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # -- writes ----------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, media_type: str = "application/octet-stream") -> StoredObject:
        digest = hashlib.sha256(data).digest()
        resp = self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=media_type or
                                      "application/octet-stream", ChecksumAlgorithm="SHA256",
                                      ChecksumSHA256=_b64(digest))
        return StoredObject(key, len(data), digest.hex(), resp.get("ChecksumSHA256", ""))

    def put_file(self, key: str, path: Path, media_type: str = "application/octet-stream") -> StoredObject:
        size = Path(path).stat().st_size
        if size <= self.part_size:
            return self.put_bytes(key, Path(path).read_bytes(), media_type)

        def produce(sink):
            with open(path, "rb") as src:
                while block := src.read(self.part_size):
                    sink.write(block)

        return self._multipart(key, produce, media_type)

    def put_tree(self, key: str, root: Path) -> StoredObject:
        return self._multipart(key, lambda sink: write_tar(root, sink), "application/x-tar")

    def _multipart(self, key: str, produce, media_type: str) -> StoredObject:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=media_type,
                                                     ChecksumAlgorithm="SHA256")
        upload_id = upload["UploadId"]
        parts: list[dict] = []
        part_digests: dict[int, bytes] = {}
        futures: list[Future] = []
        slots = threading.BoundedSemaphore(self.concurrency)
        counter = [0]
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="s3part")

        def upload_part(number: int, data: bytes) -> None:
            try:
                digest = hashlib.sha256(data).digest()
                resp = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                               PartNumber=number, Body=data, ChecksumAlgorithm="SHA256",
                                               ChecksumSHA256=_b64(digest))
                parts.append({"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": _b64(digest)})
                part_digests[number] = digest
            finally:
                slots.release()

        def emit(data: bytes) -> None:
            slots.acquire()  # bounded: at most `concurrency` parts in memory and in flight
            counter[0] += 1
            futures.append(pool.submit(upload_part, counter[0], data))

        try:
            sink = HashingSink(emit, self.part_size)
            produce(sink)
            sink.close()
            if counter[0] == 0:  # empty stream: S3 needs at least one part
                emit(b"")
            for fut in futures:
                fut.result()
            parts.sort(key=lambda p: p["PartNumber"])
            resp = self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                         MultipartUpload={"Parts": parts})
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception:  # the original error matters more than a failed abort
                pass
            raise
        pool.shutdown(wait=True)
        composite = _b64(hashlib.sha256(b"".join(part_digests[n] for n in sorted(part_digests))).digest())
        server = resp.get("ChecksumSHA256", "")
        if server and server.split("-")[0] != composite:
            raise StoreError(f"s3://{self.bucket}/{key}: server checksum {server} != expected {composite}")
        return StoredObject(key, sink.size, sink.hexdigest(), server or composite)

    # -- reads -----------------------------------------------------------------------------
    def head(self, key: str) -> StoredObject | None:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return StoredObject(key, resp["ContentLength"], "", resp.get("ChecksumSHA256", ""))

    def sha256_of(self, key: str) -> str:
        h = hashlib.sha256()
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        for chunk in body.iter_chunks(8 * MiB):
            h.update(chunk)
        return h.hexdigest()

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def keys(self, prefix: str) -> list[str]:
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                           Prefix=prefix.rstrip("/") + "/"):
            out += [o["Key"] for o in page.get("Contents", [])]
        return sorted(out)
