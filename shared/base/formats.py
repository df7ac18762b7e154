"""The spellings every package shares: which strings are safe Table keys, a mailbox's key, which strings are
Storage queue names, how a timestamp is written in records and events, and how a Retry-After is read. Pure
functions, no I/O."""

from __future__ import annotations

import re
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

_SAFE_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_DELAY_SECONDS = re.compile(r"[0-9]+")  # Retry-After delay-seconds: 1*DIGIT

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


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delay-seconds or an HTTP-date (RFC 9110 10.2.3); None when
    absent or not understood (the caller's own delay applies then)."""
    if not value:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):  # ASCII digits only: str.isdigit() also takes "²", which float() refuses
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT (IMF-fixdate); a zone-less one is read so
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
