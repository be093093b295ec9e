"""A delivery: products pushed to a store, then the XML manifest that marks them complete.

Order of a push, which is what makes it safe to retry, clear or backfill:

1. read the previous manifest at the prefix, if any, then delete it: from here on the delivery
   is marked incomplete;
2. put each product, skipping one whose object is already there with the SHA-256, size and server
   checksum the previous manifest recorded;
3. verify every object against the store (size, and on S3 the server-side checksum);
4. write the manifest. Its presence means every object it lists is there and verified.

A push that fails half-way leaves no manifest, so nothing ever lists a missing or different object.
"""

from __future__ import annotations

import logging
import mimetypes
import time
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from casaflow import xmlsafe

from .stores import StoredObject, StoreError
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


# -- manifest XML ----------------------------------------------------------------------------
def manifest_xml(info: DeliveryInfo, entries: list[Entry]) -> bytes:
    root = etree.Element("delivery", version=MANIFEST_VERSION, dataset=info.dataset_id,
                         created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    etree.SubElement(root, "run", dag_id=info.dag_id, run_id=info.run_id, try_number=str(info.try_number))
    sw = etree.SubElement(root, "software")
    for name, version in sorted(info.versions.items()):
        etree.SubElement(sw, "package", name=name, version=str(version))
    params = etree.SubElement(root, "parameters")
    for name, value in sorted(info.parameters.items()):
        etree.SubElement(params, "parameter", name=name, value=str(value))
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
            "parameters": {p.get("name"): p.get("value") for p in root.iterfind("parameters/parameter")}}
    entries = [Entry(o.get("key"), int(o.get("size")), o.get("sha256"), o.get("media_type"),
                     o.get("stage"), o.get("role", ""), o.get("server_checksum", ""), o.get("packaging", ""))
               for o in root.iterfind("objects/object")]
    return head, entries


# -- the push ----------------------------------------------------------------------------------
def _join(prefix: str, key: str) -> str:
    return f"{prefix.strip('/')}/{key}" if prefix.strip("/") else key


def _local_digest(item: Item) -> tuple[str, int]:
    return tree_sha256(Path(item.source)) if item.is_tree else file_sha256(Path(item.source))


def push(store, prefix: str, items: list[Item], info: DeliveryInfo) -> PushReport:
    t0 = time.monotonic()
    keys = [i.key for i in items]
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        raise ValueError(f"two products map to the same key(s): {sorted(dupes)}")
    if MANIFEST_NAME in keys:
        raise ValueError(f"{MANIFEST_NAME} is reserved for the delivery manifest")
    manifest_key = _join(prefix, MANIFEST_NAME)

    previous: dict[str, Entry] = {}
    old = store.head(manifest_key)
    if old is not None:
        try:
            _, old_entries = parse_manifest(store.read(manifest_key), store.url(manifest_key))
            previous = {e.key: e for e in old_entries}
        except Exception as exc:  # an unreadable old manifest only costs re-uploads
            log.warning("previous manifest at %s unreadable (%s): pushing everything", store.url(manifest_key), exc)
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

    store.put_bytes(manifest_key, manifest_xml(info, entries), "application/xml")
    log.info("delivery complete: %d objects (%d uploaded, %d unchanged); manifest %s",
             len(entries), len(uploaded), len(skipped), store.url(manifest_key))
    return PushReport(store.url(manifest_key), entries, uploaded, skipped, round(time.monotonic() - t0, 3))
