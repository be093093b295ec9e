"""A delivery: products pushed to a store, then the XML manifest that marks them complete.

The delivery model is the **exact set**: a dataset's prefix ``<destination>/<dataset_id>/`` holds,
whenever its manifest ``delivery_manifest.xml`` is there, exactly the objects that manifest lists,
each verified. Objects a re-delivery no longer produces are removed after the new manifest is
committed, never before. One writer at a time, fenced by a lease (:mod:`hooks.lease`).

Order of a push, which is what makes it safe to retry, clear, backfill or race:

1. take the dataset's lease (wait for, or fail naming, another writer);
2. read the previous manifest at the prefix, if any, then delete it: from here on the delivery
   is marked incomplete (a reader must treat a prefix without a manifest as "being delivered");
3. put each product, skipping one whose object is already there with the SHA-256, size and server
   checksum the previous manifest recorded; the lease is checked (and renewed when due) before
   every object and every multipart part, so a writer that lost its lease stops within one part;
4. verify every object against the store (size, and on S3 the server-side checksum);
5. commit the manifest, conditionally: create it only if absent; if another writer's manifest
   appeared meanwhile, replace it only if its lease generation is lower than ours, otherwise
   this writer is superseded and fails (its objects are the newer writer's business now);
6. remove every object under the prefix the new manifest does not list (stale products);
7. release the lease.

A push that fails half-way leaves no manifest, so nothing ever lists a missing or different object.
Every single object appears whole or not at all (local: temporary name + rename; S3: a PUT or a
multipart upload becomes visible only on completion).
"""

from __future__ import annotations

import json
import logging
import mimetypes
import time
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from casaflow import xmlsafe

from .lease import Lease, LeaseLost
from .stores import PreconditionFailed, StoredObject, StoreError
from .tarstream import file_sha256, tree_sha256

log = logging.getLogger("casaflow.delivery")

MANIFEST_NAME = "delivery_manifest.xml"
MANIFEST_VERSION = "1"

_MEDIA_TYPES = {".fits": "application/fits", ".xml": "application/xml", ".tgz": "application/gzip",
                ".gz": "application/gzip", ".tar": "application/x-tar", ".png": "image/png",
                ".html": "text/html", ".log": "text/plain", ".txt": "text/plain", ".list": "text/plain",
                ".json": "application/json", ".py": "text/x-python", ".zip": "application/zip"}


def media_type_for(key: str) -> str:
    suffix = Path(key).suffix.lower()
    return _MEDIA_TYPES.get(suffix) or mimetypes.guess_type(key)[0] or "application/octet-stream"


@dataclass
class Item:
    """One product to deliver. A directory travels as a tar stream (its key should end .tar)."""

    source: Path
    key: str
    stage: str = ""
    role: str = ""

    @property
    def is_tree(self) -> bool:
        return Path(self.source).is_dir()


@dataclass
class DeliveryInfo:
    dataset_id: str
    dag_id: str = ""
    run_id: str = ""
    try_number: int = 0
    parameters: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    image: dict = field(default_factory=dict)   # kubernetes mode: {"reference": ..., "digest": ...}
    lease_generation: int = 0


@dataclass
class Entry:
    key: str
    size: int
    sha256: str
    media_type: str
    stage: str
    role: str = ""
    server_checksum: str = ""
    packaging: str = ""   # "tar" for a directory


@dataclass
class PushReport:
    manifest_url: str
    entries: list[Entry]
    uploaded: list[str]
    skipped: list[str]
    seconds: float
    removed: list[str] = field(default_factory=list)


# -- manifest XML ----------------------------------------------------------------------------
def manifest_xml(info: DeliveryInfo, entries: list[Entry]) -> bytes:
    root = etree.Element("delivery", version=MANIFEST_VERSION, dataset=info.dataset_id,
                         created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    etree.SubElement(root, "run", dag_id=info.dag_id, run_id=info.run_id, try_number=str(info.try_number),
                     lease_generation=str(info.lease_generation))
    sw = etree.SubElement(root, "software")
    for name, version in sorted(info.versions.items()):
        etree.SubElement(sw, "package", name=name, version=str(version))
    if info.image:
        etree.SubElement(sw, "image", {k: str(v) for k, v in sorted(info.image.items()) if v})
    params = etree.SubElement(root, "parameters")
    for name, value in sorted(info.parameters.items()):
        # every Param: strings as they are, anything else (numbers, booleans, lists, dicts) as JSON
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        attrs = {"name": name, "value": text}
        if not isinstance(value, str):
            attrs["type"] = "json"
        etree.SubElement(params, "parameter", attrs)
    objs = etree.SubElement(root, "objects", count=str(len(entries)),
                            total_bytes=str(sum(e.size for e in entries)))
    for e in sorted(entries, key=lambda e: e.key):
        attrs = {"key": e.key, "size": str(e.size), "sha256": e.sha256, "media_type": e.media_type,
                 "stage": e.stage}
        if e.role:
            attrs["role"] = e.role
        if e.packaging:
            attrs["packaging"] = e.packaging
        if e.server_checksum:
            attrs["server_checksum"] = e.server_checksum
        etree.SubElement(objs, "object", attrs)
    return xmlsafe.to_bytes(root)


def parse_manifest(data: bytes, what: str = MANIFEST_NAME) -> tuple[dict, list[Entry]]:
    root = xmlsafe.parse_bytes(data, what)
    if root.tag != "delivery":
        raise ValueError(f"{what}: root element is {root.tag!r}, expected 'delivery'")
    run = root.find("run")
    head = {"dataset": root.get("dataset"), "created": root.get("created"), "version": root.get("version"),
            "run": dict(run.attrib) if run is not None else {},
            "software": {p.get("name"): p.get("version") for p in root.iterfind("software/package")},
            "image": dict(root.find("software/image").attrib) if root.find("software/image") is not None else {},
            "parameters": {p.get("name"): json.loads(p.get("value")) if p.get("type") == "json" else p.get("value")
                           for p in root.iterfind("parameters/parameter")}}
    entries = [Entry(o.get("key"), int(o.get("size")), o.get("sha256"), o.get("media_type"),
                     o.get("stage"), o.get("role", ""), o.get("server_checksum", ""), o.get("packaging", ""))
               for o in root.iterfind("objects/object")]
    return head, entries


# -- the push ----------------------------------------------------------------------------------
def _join(prefix: str, key: str) -> str:
    return f"{prefix.strip('/')}/{key}" if prefix.strip("/") else key


def _local_digest(item: Item) -> tuple[str, int]:
    return tree_sha256(Path(item.source)) if item.is_tree else file_sha256(Path(item.source))


def push(store, prefix: str, items: list[Item], info: DeliveryInfo, lease: Lease | None = None) -> PushReport:
    """Deliver ``items`` under ``prefix`` (see the module docstring for the order). With ``lease``
    (what every DAG's push uses) the push is fenced and stale objects are removed; without it,
    the single-writer push of before (kept for benchmarks and tools that own the prefix)."""
    t0 = time.monotonic()
    keys = [i.key for i in items]
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        raise ValueError(f"two products map to the same key(s): {sorted(dupes)}")
    if MANIFEST_NAME in keys:
        raise ValueError(f"{MANIFEST_NAME} is reserved for the delivery manifest")
    if lease is not None and not prefix.strip("/"):
        raise ValueError("a fenced delivery needs a dataset prefix (it removes what it does not list below it)")
    if lease is None:
        return _push(store, prefix, items, info, None, t0)
    lease.acquire()
    info.lease_generation = lease.generation
    try:
        return _push(store, prefix, items, info, lease, t0)
    finally:
        if hasattr(store, "guard"):
            store.guard = None
        try:
            lease.release()
        except Exception as exc:  # e.g. the store is down: the push's own error matters more
            log.warning("delivery lease %s not released (%s); it expires in at most %.0f s",
                        store.url(lease.key), exc, lease.ttl)


def _push(store, prefix: str, items: list[Item], info: DeliveryInfo, lease: Lease | None, t0: float) -> PushReport:
    guard = lease.check if lease is not None else (lambda force=False: None)
    if hasattr(store, "guard"):
        store.guard = guard
    manifest_key = _join(prefix, MANIFEST_NAME)

    previous: dict[str, Entry] = {}
    old = store.head(manifest_key)
    if old is not None:
        try:
            _, old_entries = parse_manifest(store.read(manifest_key), store.url(manifest_key))
            previous = {e.key: e for e in old_entries}
        except Exception as exc:  # an unreadable old manifest only costs re-uploads
            log.warning("previous manifest at %s unreadable (%s): pushing everything", store.url(manifest_key), exc)
        guard(force=True)
        store.delete(manifest_key)
        log.info("previous delivery manifest removed: delivery at %s is incomplete until re-pushed",
                 store.url(manifest_key))

    entries: list[Entry] = []
    uploaded, skipped = [], []
    for item in items:
        full_key = _join(prefix, item.key)
        packaging = "tar" if item.is_tree else ""
        media = "application/x-tar" if item.is_tree else media_type_for(item.key)
        prev = previous.get(item.key)
        if prev is not None:
            there = store.head(full_key)
            # S3 vouches for the stored bytes with its checksum; a plain directory has none, so
            # the stored file is hashed instead.
            intact = there is not None and there.size == prev.size and (
                there.server_checksum == prev.server_checksum if there.server_checksum
                else store.sha256_of(full_key) == prev.sha256)
            if intact:
                sha, size = _local_digest(item)
                if sha == prev.sha256 and size == prev.size:
                    log.info("unchanged, not re-uploaded: %s", store.url(full_key))
                    entries.append(Entry(item.key, size, sha, media, item.stage, item.role,
                                         there.server_checksum or prev.server_checksum, packaging))
                    skipped.append(item.key)
                    continue
        guard(force=True)
        t1 = time.monotonic()
        if item.is_tree:
            obj: StoredObject = store.put_tree(full_key, Path(item.source))
        else:
            obj = store.put_file(full_key, Path(item.source), media)
        log.info("pushed %s (%d bytes, sha256 %s) in %.1f s", store.url(full_key), obj.size, obj.sha256,
                 time.monotonic() - t1)
        entries.append(Entry(item.key, obj.size, obj.sha256, media, item.stage, item.role,
                             obj.server_checksum, packaging))
        uploaded.append(item.key)

    # Verify every object before the manifest vouches for it.
    for e in entries:
        there = store.head(_join(prefix, e.key))
        if there is None:
            raise StoreError(f"{store.url(_join(prefix, e.key))} missing after upload")
        if there.size != e.size:
            raise StoreError(f"{store.url(_join(prefix, e.key))}: size {there.size} != pushed {e.size}")
        if e.server_checksum and there.server_checksum and there.server_checksum != e.server_checksum:
            raise StoreError(f"{store.url(_join(prefix, e.key))}: server checksum changed since upload")

    body = manifest_xml(info, entries)
    if lease is None:
        store.put_bytes(manifest_key, body, "application/xml")
        removed: list[str] = []
    else:
        lease.renew()   # always asks the store: this writer still holds the lease, now
        _commit(store, manifest_key, body, info)
        removed = _remove_stale(store, prefix, {_join(prefix, e.key) for e in entries} | {manifest_key}, guard)
    log.info("delivery complete: %d objects (%d uploaded, %d unchanged, %d stale removed); manifest %s",
             len(entries), len(uploaded), len(skipped), len(removed), store.url(manifest_key))
    return PushReport(store.url(manifest_key), entries, uploaded, skipped, round(time.monotonic() - t0, 3), removed)


def _commit(store, manifest_key: str, body: bytes, info: DeliveryInfo) -> None:
    """Write the manifest: create it, or replace a manifest of a lower lease generation (a
    superseded writer that committed while this one pushed); never one of a higher generation."""
    for _ in range(5):
        try:
            store.put_if(manifest_key, body, if_none_match=True, media_type="application/xml")
            return
        except PreconditionFailed:
            pass
        got = store.read_tagged(manifest_key)
        if got is None:
            continue
        data, etag = got
        try:
            run = parse_manifest(data, store.url(manifest_key))[0]["run"]
            theirs = int(run.get("lease_generation") or 0)
        except Exception:
            run, theirs = {}, 0
        if theirs >= info.lease_generation:
            raise LeaseLost(f"{store.url(manifest_key)}: a newer delivery (dag {run.get('dag_id')!r}, run "
                            f"{run.get('run_id')!r}, try {run.get('try_number')}, lease generation {theirs}) was "
                            f"committed while this one (generation {info.lease_generation}) pushed; it stands")
        log.warning("%s: replacing the manifest of the superseded lease generation %d (dag %r, run %r, try %s)",
                    store.url(manifest_key), theirs, run.get("dag_id"), run.get("run_id"), run.get("try_number"))
        try:
            store.put_if(manifest_key, body, if_match=etag, media_type="application/xml")
            return
        except PreconditionFailed:
            continue
    raise LeaseLost(f"{store.url(manifest_key)}: the manifest kept changing under this writer")


def _remove_stale(store, prefix: str, current: set[str], guard) -> list[str]:
    """After the commit: remove every object under ``prefix`` the manifest does not list."""
    removed = []
    for key in store.keys(prefix):
        if key not in current:
            guard(force=True)
            store.delete(key)
            removed.append(key)
            log.info("stale product removed (not in the new manifest): %s", store.url(key))
    return removed
