"""The spellings every package shares: which strings are safe Table keys, a mailbox's key, which strings are
Storage queue names, and how a timestamp is written in records and events. Pure functions, no I/O."""

from __future__ import annotations

import re
import time

_SAFE_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

QUEUE_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"  # Storage: 3-63 chars, single hyphens (checked below)


def is_safe_key(value: object) -> bool:
    """Whether ``value`` can be a Table key as given: Azure Tables reject '/', '\\', '#', '?' and control
    characters in keys, and user-supplied ids reach us from URLs, so anything else is simply not found.
    ``fullmatch``: with ``match``, ``$`` also matched before a trailing newline, and ``c1\n`` reached Storage."""
    return isinstance(value, str) and bool(_SAFE_KEY.fullmatch(value))


def mailbox_key(tenant_id: str, object_id: str) -> str:
    """The key of a mailbox (shared by every connection of it): what pacing and sending limits belong to."""
    return f"{tenant_id.lower()}:{object_id.lower()}"


def is_queue_name(value: object) -> bool:
    """True for a name Azure Storage accepts for a queue."""
    return isinstance(value, str) and bool(re.fullmatch(QUEUE_NAME_PATTERN, value)) and "--" not in value


def iso(ts: float) -> str | None:
    """An epoch time as RFC 3339 UTC (``None`` for 0: never)."""
    if not ts:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
