"""Per-connection mutual exclusion across threads, processes and instances: a Blob lease.

Whoever refreshes a connection's tokens holds its lease, re-reads the stored cache, refreshes and
writes back, so two refreshers can never store an older cache over a newer one.

The work inside can outlast the lease's own 30 s (Key Vault back-off alone sleeps 1+2+4+8+16 s per call), so
a renewal thread renews it every ``LEASE_SECONDS / 3`` while the block runs. If a renewal finds the lease
taken by someone else, :meth:`Held.check` raises, and the holder must not write what it read under it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError

from shared.base.errors import TemporarilyUnavailable
from shared.base.storage import StorageClients

logger = logging.getLogger(__name__)

LOCK_CONTAINER = "mailbridge-locks"
LEASE_SECONDS = 30  # Blob leases are 15-60 s; renewed while held (a refresh usually takes well under a second)
MAX_HOLD_SECONDS = 600.0  # the host's functionTimeout: a hold that hangs longer stops being renewed


class Held:
    """A held lease, renewed in the background until the ``with`` block ends."""

    def __init__(self, lease, connection_id: str, duration: float) -> None:
        self._lease = lease
        self._connection_id = connection_id
        self._every = duration / 3
        self._stop = threading.Event()
        self._started = time.monotonic()
        self.lost = False
        self._thread = threading.Thread(target=self._renew, name=f"lease-{connection_id[:8]}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self._every):
            if time.monotonic() - self._started > MAX_HOLD_SECONDS:
                logger.warning("Lease of %s held over %.0f s: no longer renewed", self._connection_id, MAX_HOLD_SECONDS)
                return
            try:
                self._lease.renew()
            except HttpResponseError as exc:
                if self._stop.is_set():
                    return  # the block ended (and released the lease) while we renewed
                if exc.status_code in (409, 412):  # another holder has it now (ours expired): we lost it
                    self.lost = True
                    logger.warning("Lease of %s was lost while held (%s)", self._connection_id, exc.status_code)
                    return
                logger.warning("Could not renew the lease of %s (%s); retrying", self._connection_id, exc.status_code)
            except AzureError:
                logger.warning("Could not renew the lease of %s; trying again", self._connection_id, exc_info=True)

    def check(self) -> None:
        """Raise TemporarilyUnavailable when the lease was lost: another refresher may be writing."""
        if self.lost:
            raise TemporarilyUnavailable(detail="the connection's lock was lost while held")

    def stop(self) -> None:
        self._stop.set()
        # A renewal stuck in Storage's own retries must not hold up the caller: the thread is a daemon and
        # gives up by itself once it sees the stop.
        self._thread.join(timeout=1.0)


class ConnectionLocks:
    """``with locks.hold(connection_id) as held: ...`` — waits (bounded) for the lease, renews it while the
    block runs, releases it on exit."""

    def __init__(self, clients: StorageClients, wait_seconds: float = 45.0) -> None:
        self.clients = clients
        self.wait_seconds = wait_seconds
        self._local: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _local_lock(self, key: str) -> threading.Lock:
        # Threads of one process queue on a local lock first, so the lease is contended only across processes.
        with self._guard:
            return self._local.setdefault(key, threading.Lock())

    @contextmanager
    def hold(self, connection_id: str) -> Iterator[Held]:
        local = self._local_lock(connection_id)
        if not local.acquire(timeout=self.wait_seconds):
            raise TemporarilyUnavailable(detail="connection busy (local lock)")
        try:
            blob = self.clients.container(LOCK_CONTAINER).get_blob_client(f"{connection_id}.lock")
            duration = LEASE_SECONDS
            lease = self._acquire(blob, duration)
            held = Held(lease, connection_id, duration)
            try:
                yield held
            finally:
                held.stop()
                try:
                    lease.release()
                except HttpResponseError:
                    pass  # expired already: nothing to release
        finally:
            local.release()

    def _acquire(self, blob, duration: int):
        deadline = time.monotonic() + self.wait_seconds
        delay = 0.05
        while True:
            try:
                return blob.acquire_lease(lease_duration=duration)
            except ResourceNotFoundError:
                try:
                    blob.upload_blob(b"", overwrite=False)
                except ResourceExistsError:
                    pass
                continue
            except HttpResponseError as exc:
                if exc.status_code != 409:  # 409 LeaseAlreadyPresent: someone else holds it
                    raise
            if time.monotonic() > deadline:
                raise TemporarilyUnavailable(detail="connection busy (lease held)")
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)
