"""Counting a process's HTTP requests, for the tests and benchmarks that pin or report them.

A transport class's ``send`` is patched: ``requests.Session`` sees every request (Storage and Key Vault through
azure-core, Entra through MSAL, Graph), azure-core's ``RequestsTransport`` only the Azure SDKs'. ``keys`` maps a
request (``.method``, ``.url``) to the counter keys it adds (none: not counted). Stdlib only: the B2 child
(bench/cold_mailbridge.py) imports it before the app.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

Keys = Callable[[Any], Iterable[str]]


def storage_hosts(connection_string: str) -> set[str]:
    """The ``host:port`` of every service endpoint of a Storage connection string."""
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    return {urlsplit(v).netloc for k, v in parts.items() if k.endswith("Endpoint")}


def start_counting(transport: type, keys: Keys) -> tuple[Counter[str], Callable[[], None]]:
    """Count from now on; returns the counter and the function that puts ``transport.send`` back."""
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    original = transport.send

    def send(self, request, **kwargs):
        counted = list(keys(request))
        if counted:
            with lock:
                seen.update(counted)
        return original(self, request, **kwargs)

    transport.send = send

    def stop() -> None:
        transport.send = original

    return seen, stop


@contextmanager
def counting(transport: type, keys: Keys) -> Iterator[Counter[str]]:
    """``start_counting`` for the duration of a ``with`` block."""
    seen, stop = start_counting(transport, keys)
    try:
        yield seen
    finally:
        stop()
