"""Per-connection mutual exclusion across threads, processes and instances: a Blob lease.

Whoever refreshes a connection's tokens holds its lease, re-reads the stored cache, refreshes and
writes back, so two refreshers can never store an older cache over a newer one.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from shared.errors import TemporarilyUnavailable
from shared.storage import StorageClients

LOCK_CONTAINER = "mailbridge-locks"
LEASE_SECONDS = 30  # Blob leases are 15-60 s; a refresh takes well under a second


class ConnectionLocks:
    """``with locks.hold(connection_id): ...`` — waits (bounded) for the lease, releases it on exit."""

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
    def hold(self, connection_id: str) -> Iterator[None]:
        local = self._local_lock(connection_id)
        if not local.acquire(timeout=self.wait_seconds):
            raise TemporarilyUnavailable(detail="connection busy (local lock)")
        try:
            blob = self.clients.container(LOCK_CONTAINER).get_blob_client(f"{connection_id}.lock")
            lease = self._acquire(blob)
            try:
                yield
            finally:
                try:
                    lease.release()
                except HttpResponseError:
                    pass  # expired already: nothing to release
        finally:
            local.release()

    def _acquire(self, blob):
        deadline = time.monotonic() + self.wait_seconds
        delay = 0.05
        while True:
            try:
                return blob.acquire_lease(lease_duration=LEASE_SECONDS)
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
