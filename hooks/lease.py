"""One writer per delivery: a lease per dataset, taken before the first object and released after
the manifest.

The lease is a small JSON object at ``<destination prefix>/_leases/<dataset_id>.lease`` (outside
the dataset's own prefix, so a reader listing the products never sees it). Every change is a
compare-and-swap on the store:

* S3: conditional writes, ``If-None-Match: *`` to create it, ``If-Match: <ETag>`` to renew it,
  take it over or release it;
* a local directory: the same operations under an exclusive ``flock`` (see ``LocalStore.put_if``).

The lease records who holds it (dag, run, try, host, pid), until when (``expires``, renewed while
the push runs) and a *generation* that grows by one with every acquisition. The generation is the
fencing token: the delivery manifest records it, and a manifest is only ever replaced by one of a
higher generation, so a superseded try can never put its manifest over a newer delivery.

A second writer waits (up to ``wait_seconds``) and then fails with :class:`LeaseHeld`, naming the
holder. An expired lease is taken over. A lease held by an *earlier try of the same run* is taken
over at once: Airflow only starts a retry when it has given the earlier try up (a zombie), so the
earlier try is superseded by definition; its next lease check fails with :class:`LeaseLost`.

Released by hand (a writer killed with its lease held, before it expires):
``casaflow lease release --destination DEST --dataset ID``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass

from casaflow.errors import TransientError

from .stores import PreconditionFailed

log = logging.getLogger("casaflow.lease")

LEASE_DIR = "_leases"
DEFAULT_TTL = 600.0     # seconds; renewed every ttl/3 while the push runs
DEFAULT_WAIT = 300.0    # how long a second writer waits for the holder before failing
CHECK_INTERVAL = 5.0    # while streaming parts, the store is asked at most this often
FORCED_INTERVAL = 1.0   # before a write that makes something visible: at most this often


class LeaseHeld(TransientError):
    """Another writer holds the dataset's lease (still after waiting)."""


class LeaseLost(TransientError):
    """This writer's lease was taken over: it is superseded and must not write further."""


@dataclass(frozen=True)
class Holder:
    dag_id: str
    run_id: str
    try_number: int

    def describe(self) -> str:
        return f"dag {self.dag_id!r}, run {self.run_id!r}, try {self.try_number}"


def lease_key(prefix: str, dataset_id: str) -> str:
    base = prefix.strip("/")
    return f"{base}/{LEASE_DIR}/{dataset_id}.lease" if base else f"{LEASE_DIR}/{dataset_id}.lease"


def describe(doc: dict) -> str:
    h = doc.get("holder", {})
    who = (f"dag {h.get('dag_id')!r}, run {h.get('run_id')!r}, try {h.get('try_number')} "
           f"(host {h.get('host')}, pid {h.get('pid')}; generation {doc.get('generation')}")
    if doc.get("state") != "held":
        return f"{who}; {doc.get('state', 'unknown state')})"
    left = doc.get("expires", 0) - time.time()
    return who + (f"; expires in {left:.0f} s)" if left > 0 else f"; expired {-left:.0f} s ago)")


class Lease:
    def __init__(self, store, key: str, holder: Holder, ttl: float = DEFAULT_TTL,
                 wait_seconds: float = DEFAULT_WAIT, poll: float = 1.0):
        self.store = store
        self.key = key
        self.holder = holder
        self.ttl = float(ttl)
        self.wait_seconds = float(wait_seconds)
        self.poll = poll
        self.token = uuid.uuid4().hex
        self.generation = 0
        self.etag: str | None = None
        self._renewed = 0.0      # time.monotonic() of the last successful write

    # -- the document ---------------------------------------------------------------------
    def _doc(self, state: str = "held") -> bytes:
        now = time.time()
        return json.dumps({
            "state": state, "token": self.token, "generation": self.generation,
            "holder": {"dag_id": self.holder.dag_id, "run_id": self.holder.run_id,
                       "try_number": self.holder.try_number, "host": socket.gethostname(), "pid": os.getpid()},
            "renewed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "expires": now + self.ttl if state == "held" else 0,
        }, sort_keys=True).encode()

    def _read(self) -> tuple[dict, str] | None:
        got = self.store.read_tagged(self.key)
        if got is None:
            return None
        data, etag = got
        try:
            return json.loads(data), etag
        except ValueError:
            return {"state": "unreadable", "generation": 0, "expires": 0}, etag

    def _takeable(self, doc: dict) -> str:
        """Why the lease in ``doc`` may be taken ('' if it may not)."""
        if doc.get("state") != "held":
            return doc.get("state", "released")
        if doc.get("expires", 0) < time.time():
            return "expired"
        h = doc.get("holder", {})
        if (h.get("dag_id"), h.get("run_id")) == (self.holder.dag_id, self.holder.run_id) \
                and int(h.get("try_number") or 0) < self.holder.try_number:
            return f"held by the earlier try {h.get('try_number')} of this run (superseded)"
        return ""

    # -- operations ---------------------------------------------------------------------------
    def acquire(self) -> "Lease":
        deadline = time.monotonic() + self.wait_seconds
        waited = False
        while True:
            current = self._read()
            try:
                if current is None:
                    self.generation = 1
                    self.etag = self.store.put_if(self.key, self._doc(), if_none_match=True,
                                                  media_type="application/json")
                    why = "new"
                else:
                    doc, etag = current
                    why = self._takeable(doc)
                    if why:
                        self.generation = int(doc.get("generation") or 0) + 1
                        self.etag = self.store.put_if(self.key, self._doc(), if_match=etag,
                                                      media_type="application/json")
                        if why not in ("released", "new"):
                            log.warning("lease %s taken over (%s): was %s", self.store.url(self.key), why,
                                        describe(doc))
                    elif time.monotonic() >= deadline:
                        raise LeaseHeld(f"delivery lease {self.store.url(self.key)} is held by {describe(doc)}; "
                                        f"waited {self.wait_seconds:.0f} s. If that writer is gone, release it: "
                                        f"casaflow lease release --destination ... --dataset ...")
                    else:
                        if not waited:
                            log.info("waiting up to %.0f s for the delivery lease %s, held by %s",
                                     self.wait_seconds, self.store.url(self.key), describe(doc))
                            waited = True
                        time.sleep(self.poll)
                        continue
            except PreconditionFailed:
                continue          # someone else changed it between our read and write: look again
            self._renewed = time.monotonic()
            # Read it back: guards against a store whose conditional writes are not atomic
            # (two creators both told "created"); the one whose token is not there looks again.
            current = self._read()
            if current is None or current[0].get("token") != self.token:
                continue
            log.info("delivery lease %s taken (generation %d, %s)", self.store.url(self.key), self.generation, why)
            return self

    def renew(self) -> None:
        try:
            self.etag = self.store.put_if(self.key, self._doc(), if_match=self.etag, media_type="application/json")
        except PreconditionFailed as exc:
            current = self._read()
            raise LeaseLost(f"delivery lease {self.store.url(self.key)} was taken over: this writer "
                            f"({self.holder.describe()}, generation {self.generation}) is superseded by "
                            + (describe(current[0]) if current else "nobody (the lease was removed)")) from exc
        self._renewed = time.monotonic()

    def check(self, force: bool = False) -> None:
        """Raises :class:`LeaseLost` once the lease is another writer's, renewing it when due.

        ``force`` (before every write that makes something visible: an object, a multipart
        completion, a delete) asks the store unless it was asked less than ``FORCED_INTERVAL``
        ago, so a delivery of many small objects pays at most one lease request a second;
        otherwise (between parts) at most every ``CHECK_INTERVAL`` seconds. The manifest commit
        calls :meth:`renew` itself, always. What this leaves open: a superseded writer's write
        already under way when it was superseded (or begun within that second) can still land;
        the newer writer's verification of every object before its commit catches it (the
        newer push then fails and is retried), unless it lands after that commit too.
        """
        elapsed = time.monotonic() - self._renewed
        if elapsed > (FORCED_INTERVAL if force else min(self.ttl / 3, CHECK_INTERVAL)):
            self.renew()

    def release(self) -> None:
        try:
            self.etag = self.store.put_if(self.key, self._doc("released"), if_match=self.etag,
                                          media_type="application/json")
            log.info("delivery lease %s released (generation %d)", self.store.url(self.key), self.generation)
        except PreconditionFailed:
            log.warning("delivery lease %s was no longer ours at release", self.store.url(self.key))


def release_by_hand(store, key: str) -> str:
    """Mark the lease at ``key`` released whoever holds it (the operator's ``casaflow lease
    release``); returns a description of the holder it had."""
    got = store.read_tagged(key)
    if got is None:
        return "no lease"
    data, etag = got
    try:
        doc = json.loads(data)
    except ValueError:
        doc = {"generation": 0}
    was = describe(doc) if "holder" in doc else "unreadable lease"
    doc.update(state="released", expires=0, released_by=f"hand ({socket.gethostname()}, pid {os.getpid()})")
    store.put_if(key, json.dumps(doc, sort_keys=True).encode(), if_match=etag, media_type="application/json")
    return was
