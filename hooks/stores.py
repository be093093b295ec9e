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


class PreconditionFailed(StoreError):
    """A conditional write found the object not in the state it was conditioned on."""


# S3's limits on one object: https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html
MAX_PARTS = 10_000
MIN_PART = 5 * MiB
MAX_PART = 5 << 30
MAX_OBJECT = 5 << 40
# Parts held in memory at once (being uploaded plus the one being filled) stay under this.
PART_MEMORY_BUDGET = 1 << 30


def plan_parts(size: int, part_size: int = 16 * MiB, concurrency: int = 4) -> tuple[int, int]:
    """(part size, upload threads) for an object of ``size`` bytes: the configured part size
    while it fits in S3's 10,000 parts, otherwise the smallest whole-MiB size that does (never
    above S3's 5 GiB part, never below its 5 MiB). Fewer threads for big parts, so that the
    parts in memory (threads + 1) stay within ``PART_MEMORY_BUDGET`` where they can."""
    if size < 0:
        raise ValueError(f"object size {size} is negative")
    if size > MAX_OBJECT:
        raise StoreError(f"an object of {size} bytes exceeds S3's limit of {MAX_OBJECT} bytes (5 TiB)")
    part = max(MIN_PART, part_size)
    if -(-size // part) > MAX_PARTS:
        part = -(-size // MAX_PARTS)
        part = -(-part // MiB) * MiB
    part = min(part, MAX_PART)
    threads = max(1, min(concurrency, PART_MEMORY_BUDGET // part - 1))
    return part, threads


# ------------------------------------------------------------------------------------------
class LocalStore:
    """Objects are files below ``root``; keys are relative paths."""

    kind = "local"

    def __init__(self, root: Path):
        self.root = Path(root)
        self.guard = None   # the delivery's lease check, called before an object becomes visible

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

    def _write(self, key: str, produce, guarded: bool = True) -> StoredObject:
        with atomic.atomic_path(self._target(key), durable=True) as tmp:
            with open(tmp, "wb") as fh:
                sink = HashingSink(fh.write)
                produce(sink)
                sink.close()
            if guarded and self.guard is not None:
                self.guard(force=True)   # the lease still ours before the object becomes visible
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

    # -- conditional operations (leases and the manifest commit; small objects only) --------
    # The "ETag" of a local object is the SHA-256 of its bytes; compare-and-swap runs under an
    # exclusive flock on a lock file of its own, so it is atomic between processes. The lock files
    # live under the store's root (.cas-locks/, hidden), not beside the object: a delivered prefix
    # holds exactly its objects. (Not a flock of the directory: on NFS flock is a write lock, which
    # a directory, opened read-only, cannot take.)
    def read_tagged(self, key: str) -> tuple[bytes, str] | None:
        path = self._target(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def _cas(self, key: str, if_match: str | None, if_none_match: bool, change) -> str:
        import fcntl

        target = self._target(key)
        locks = self.root / ".cas-locks"
        locks.mkdir(exist_ok=True)
        name = hashlib.sha256(str(target).encode()).hexdigest()[:40]     # one lock per object
        with open(locks / f".{name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.read_tagged(key)
            if if_none_match and current is not None:
                raise PreconditionFailed(f"{self.url(key)} exists")
            if if_match is not None and (current is None or current[1] != if_match):
                raise PreconditionFailed(f"{self.url(key)} changed (or vanished) since it was read")
            return change()

    def put_if(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False,
               media_type: str = "") -> str:
        """Write ``data`` only if the object is absent (``if_none_match``) or still has the ETag
        ``if_match``; returns the new ETag, raises :class:`PreconditionFailed` otherwise."""
        def change():
            self._write(key, lambda sink: sink.write(data), guarded=False)   # no lease check: this is one
            return hashlib.sha256(data).hexdigest()

        return self._cas(key, if_match, if_none_match, change)

    def delete_if(self, key: str, etag: str) -> None:
        self._cas(key, etag, False, lambda: self._target(key).unlink())

    def keys(self, prefix: str) -> list[str]:
        """Keys below ``prefix`` (a directory-like prefix), sorted; hidden partial files excluded."""
        base = self._path(prefix or ".", allow_root=True)
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith("."))


def tar_size_bound(root: Path) -> int:
    """An upper bound of the size of ``root``'s tar stream (content rounded to 512-byte blocks,
    a header block plus room for a PAX header per entry, the end-of-archive blocks), to plan
    its parts before streaming it."""
    total = 2 * 512 + 20 * 512
    for dirpath, dirnames, filenames in os.walk(root):
        total += 3 * 512 * (1 + len(dirnames) + len(filenames))
        for name in filenames:
            try:
                total += -(-os.lstat(os.path.join(dirpath, name)).st_size // 512) * 512
            except OSError:
                pass
    return total


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
        if part_size < MIN_PART:
            raise ValueError("S3 multipart parts must be at least 5 MiB")
        self.client = client
        self.bucket = bucket
        self.part_size = part_size
        self.concurrency = concurrency
        # Called before every part and before a multipart upload is completed (the delivery
        # sets it to its lease check, so a writer that lost its lease stops within one part).
        self.guard = None

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
                while block := src.read(8 * MiB):
                    sink.write(block)

        return self._multipart(key, produce, media_type, size)

    def put_tree(self, key: str, root: Path) -> StoredObject:
        return self._multipart(key, lambda sink: write_tar(root, sink), "application/x-tar", tar_size_bound(root))

    def _multipart(self, key: str, produce, media_type: str, expected_size: int) -> StoredObject:
        part_size, concurrency = plan_parts(expected_size, self.part_size, self.concurrency)
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=media_type,
                                                     ChecksumAlgorithm="SHA256")
        upload_id = upload["UploadId"]
        parts: list[dict] = []
        part_digests: dict[int, bytes] = {}
        futures: list[Future] = []
        slots = threading.BoundedSemaphore(concurrency)
        counter = [0]
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3part")

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
            for fut in futures:
                if fut.done() and fut.exception() is not None:
                    raise fut.exception()   # stop producing once a part has failed
            if counter[0] >= MAX_PARTS:
                raise StoreError(f"{self.url(key)}: more than {MAX_PARTS} parts of {part_size} bytes; the "
                                 f"stream outgrew its planned size of {expected_size} bytes")
            if self.guard is not None:
                self.guard()
            counter[0] += 1
            futures.append(pool.submit(upload_part, counter[0], data))

        try:
            sink = HashingSink(emit, part_size)
            produce(sink)
            sink.close()
            if counter[0] == 0:  # empty stream: S3 needs at least one part
                emit(b"")
            for fut in futures:
                fut.result()
            parts.sort(key=lambda p: p["PartNumber"])
            if self.guard is not None:
                self.guard(force=True)   # the completion is what makes the object visible
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

    # -- conditional operations (leases and the manifest commit) ------------------------------
    # S3 conditional writes: If-None-Match: * creates only if absent, If-Match: <ETag> replaces
    # only the version read. AWS S3, MinIO, Ceph RGW and moto (>= 5.0.x) answer 412 (or 409 for
    # a concurrent conditional write) when the condition fails.
    @staticmethod
    def _precondition(exc) -> bool:
        err = exc.response.get("Error", {})
        return err.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict") or \
            exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412)

    def read_tagged(self, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return resp["Body"].read(), resp["ETag"]

    def put_if(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False,
               media_type: str = "application/octet-stream") -> str:
        from botocore.exceptions import ClientError

        cond = {"IfNoneMatch": "*"} if if_none_match else {}
        if if_match is not None:
            cond["IfMatch"] = if_match
        digest = hashlib.sha256(data).digest()
        try:
            resp = self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=media_type,
                                          ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64(digest), **cond)
        except ClientError as exc:
            if self._precondition(exc) or (if_match and exc.response.get("Error", {}).get("Code") == "NoSuchKey"):
                raise PreconditionFailed(f"{self.url(key)}: conditional write refused "
                                         f"({exc.response.get('Error', {}).get('Code')})") from exc
            raise
        return resp["ETag"]

    def delete_if(self, key: str, etag: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)
        except ClientError as exc:
            if self._precondition(exc) or exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                raise PreconditionFailed(f"{self.url(key)}: conditional delete refused") from exc
            raise

    def keys(self, prefix: str) -> list[str]:
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                           Prefix=prefix.rstrip("/") + "/"):
            out += [o["Key"] for o in page.get("Contents", [])]
        return sorted(out)
