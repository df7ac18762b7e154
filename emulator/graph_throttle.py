"""Outlook-service throttling as Graph applies it, per application id + mailbox.

Limits modelled (Graph "throttling limits", Outlook service; Exchange Online sending limits):
- 4 concurrent requests per app + mailbox,
- 10,000 requests per 10 minutes per app + mailbox,
- 30 messages sent per minute per app + mailbox (Exchange's message rate; 429 here),
- 10,000 recipients per rolling 24 h per *mailbox*, whatever app sends (Exchange's recipient rate limit,
  300 for personal Outlook.com mailboxes): over it the send is accepted (202) but not delivered, an NDR
  (5.1.90) lands in the sender's Inbox, and the mailbox sends again once its rolling count drops
  (emulator/graph_ndr.py; sources in docs/emulator.md),
- 150 MB uploaded per 5 minutes per app + mailbox: "150 megabytes (MB) upload (PATCH, POST, PUT) in a 5-minute
  period" (throttling-limits, Outlook service limits), so the request bytes of every Graph POST/PUT/PATCH on a
  mailbox (graph_common.GraphContext.enter) and of every upload-session PUT count. "MB" is read as 10^6 bytes,
  the stricter reading.

Windows are *sliding* windows measured on the emulator clock (so `clock.advance` lets a test
skip to the end of a window); concurrency is measured in real time. Every limit is scalable
at run time (`GraphLimits.update`, exposed as `POST /_emulator/graph/limits`).

Real 429 bodies look like `{"error":{"code":"ApplicationThrottled","message":"Application is
over its MailboxConcurrency limit."}}` (seen in public issue reports); the other limit names
in the messages follow that pattern but are not confirmed wire strings.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from emulator.graph_message import MAX_RECIPIENTS, GraphError

THROTTLE_CODE = "ApplicationThrottled"


@dataclass
class GraphLimits:
    """Tunable Graph limits and store settings (all scalable for fast tests)."""

    max_concurrency: int = 4
    requests_per_window: int = 10_000
    request_window_s: float = 600.0
    messages_per_window: int = 30
    message_window_s: float = 60.0
    recipients_per_window: int = 10_000
    recipient_window_s: float = 86_400.0
    # Personal (Outlook.com) mailboxes: Microsoft publishes 5,000 a day for Microsoft 365 subscribers and
    # "lower for non-subscribers"; ~300 is a community figure for free accounts (stricter, so the default).
    consumer_recipients_per_window: int = 300
    upload_bytes_per_window: int = 150_000_000
    upload_window_s: float = 300.0
    max_recipients_per_message: int = MAX_RECIPIENTS
    # Exchange Online's default maximum message size (raw body + attachment bytes here;
    # Exchange counts the MIME-encoded size, about a third more). Admins can raise it to 150 MB.
    max_message_bytes: int = 35 * 1024 * 1024
    # Real time (ms) every Graph API request keeps its concurrency slot: lets tests make
    # requests overlap deterministically. 0 in normal runs.
    concurrency_hold_ms: int = 0
    # Memory bound for benchmarks: attachment bytes kept per attachment (sha256 + size always).
    attachment_bytes_cap: int = 1024 * 1024
    # Oldest Sent Items are dropped past this many per mailbox (the delivery log keeps all).
    max_items_per_folder: int = 20_000
    # Lifetime of an upload session's pre-authenticated URL.
    upload_session_lifetime_s: float = 6 * 3600.0
    # Transport (graph_store.Transport): seconds (emulator clock) a sent item stays in Drafts before it moves
    # to Sent Items with a new id and is delivered; 0 = at once. In transit it looks like an unsent draft
    # (isDraft true, no sentDateTime) unless transit_shows_submitted is 1.
    transport_delay_s: float = 0.0
    transit_shows_submitted: int = 0
    # A Message-ID the client chose (MIME header, JSON internetMessageId, String 0x1035) is kept on the delivered
    # message only when 1: "Servers MAY overwrite the PidTagInternetMessageId property from a client before
    # submitting the message" (MS-OXCMAIL 2.1.3.2.11), so by default (0) transport assigns its own id.
    keep_client_message_id: int = 0
    # 1: singleValueExtendedProperties String 0x1042 / 0x1039 / 0x1045 become the delivered In-Reply-To /
    # References / List-Unsubscribe headers (what MAPI's MIME writer does, MS-OXPROPS). 0 (default, stricter):
    # ignored on send, as reported for sendMail in msgraph-sdk-dotnet#2210 and #2320. MIME headers always count.
    render_threading_properties: int = 0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply `changes` (a subset of fields); unknown names or bad values raise ValueError."""
        types = {f.name: f.type for f in fields(self)}
        for name, value in changes.items():
            if name not in types:
                raise ValueError(f"unknown limit {name!r}; known: {sorted(types)}")
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"limit {name!r} must be a non-negative number")
            if types[name] in ("int", int):
                if int(value) != value:
                    raise ValueError(f"limit {name!r} must be an integer")
                value = int(value)
            setattr(self, name, value if types[name] in ("int", int) else float(value))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy."""
        return asdict(self)


def throttled(limit_name: str, retry_after: int) -> GraphError:
    """The 429 Graph answers when an Outlook limit is hit (with Retry-After in seconds)."""
    return GraphError(
        429,
        THROTTLE_CODE,
        f"Application is over its {limit_name} limit.",
        headers={"Retry-After": str(retry_after)},
    )


class _Window:
    """A sliding window of (time, amount) events with a running total."""

    __slots__ = ("events", "total")

    def __init__(self) -> None:
        self.events: deque[tuple[float, int]] = deque()
        self.total = 0

    def prune(self, now: float, span: float) -> None:
        while self.events and self.events[0][0] <= now - span:
            self.total -= self.events.popleft()[1]

    def retry_after(self, now: float, span: float, amount: int, limit: int) -> int | None:
        """Seconds until `amount` more fits under `limit`, or None when it fits now."""
        self.prune(now, span)
        if self.total + amount <= limit:
            return None
        # Walk the oldest events until enough would have expired.
        excess = self.total + amount - limit
        freed = 0
        for ts, amt in self.events:
            freed += amt
            if freed >= excess:
                return max(1, math.ceil(ts + span - now))
        return max(1, math.ceil(span))  # amount alone exceeds the limit: wait a whole window

    def add(self, now: float, amount: int) -> None:
        self.events.append((now, amount))
        self.total += amount


Key = tuple[str, str]  # (app id, mailbox id)


class Throttle:
    """Thread-safe limiter keyed by (app id, mailbox id)."""

    def __init__(self, limits: GraphLimits, now: Callable[[], float]) -> None:
        self.limits = limits
        self._now = now
        self._lock = threading.Lock()
        self._inflight: dict[Key, int] = {}
        self._max_seen: dict[Key, int] = {}
        self._windows: dict[tuple[str, Key], _Window] = {}
        self._throttled: dict[str, int] = {}
        self._over_limit: dict[str, int] = {}  # mailbox oid -> recipients NDR'd for the recipient rate limit

    def _window(self, kind: str, key: Key) -> _Window:
        win = self._windows.get((kind, key))
        if win is None:
            win = self._windows[(kind, key)] = _Window()
        return win

    def _reject(self, limit_name: str, retry_after: int) -> GraphError:
        self._throttled[limit_name] = self._throttled.get(limit_name, 0) + 1
        return throttled(limit_name, retry_after)

    def acquire(self, app_id: str, mailbox: str) -> None:
        """Admit one request (concurrency slot + request-rate window) or raise a 429."""
        key = (app_id, mailbox)
        lim = self.limits
        with self._lock:
            attempted = self._inflight.get(key, 0) + 1
            # Record attempted concurrency (including requests we then refuse), so tests can
            # prove a client never had more than N requests open against one mailbox.
            if attempted > self._max_seen.get(key, 0):
                self._max_seen[key] = attempted
            if attempted > lim.max_concurrency:
                raise self._reject("MailboxConcurrency", 1)
            win = self._window("requests", key)
            wait = win.retry_after(self._now(), lim.request_window_s, 1, lim.requests_per_window)
            if wait is not None:
                raise self._reject("RequestRate", wait)
            win.add(self._now(), 1)
            self._inflight[key] = attempted

    def release(self, app_id: str, mailbox: str) -> None:
        """Give back the concurrency slot taken by `acquire`."""
        key = (app_id, mailbox)
        with self._lock:
            left = self._inflight.get(key, 0) - 1
            if left > 0:
                self._inflight[key] = left
            else:
                self._inflight.pop(key, None)

    def admit_send(self, app_id: str, mailbox: str, recipients: int, *, personal: bool = False) -> bool:
        """Count one message with `recipients` against the send limits: False when it is over the mailbox's
        rolling recipient limit (Exchange accepts it and NDRs it: not counted, not delivered); a 429 when
        over the message rate. Checked as the last step before a send takes effect."""
        key = (app_id, mailbox)
        lim = self.limits
        with self._lock:
            now = self._now()
            msgs = self._window("messages", key)
            wait = msgs.retry_after(now, lim.message_window_s, 1, lim.messages_per_window)
            if wait is not None:
                raise self._reject("MessageRate", wait)
            msgs.add(now, 1)
            limit = lim.consumer_recipients_per_window if personal else lim.recipients_per_window
            rcpts = self._window("recipients", ("*", mailbox))  # per mailbox, every app together
            if rcpts.retry_after(now, lim.recipient_window_s, recipients, limit) is not None:
                self._over_limit[mailbox] = self._over_limit.get(mailbox, 0) + recipients
                return False
            rcpts.add(now, recipients)
            return True

    def recipients_in_window(self, mailbox: str) -> int:
        """Recipients the mailbox sent to in the rolling window (what its NDR decision looks at)."""
        with self._lock:
            win = self._window("recipients", ("*", mailbox))
            win.prune(self._now(), self.limits.recipient_window_s)
            return win.total

    def admit_upload(self, app_id: str, mailbox: str, nbytes: int) -> None:
        """Count uploaded request bytes (POST/PUT/PATCH, upload-session PUTs: 150 MB / 5 min), or raise a 429."""
        key = (app_id, mailbox)
        lim = self.limits
        with self._lock:
            now = self._now()
            win = self._window("upload", key)
            wait = win.retry_after(now, lim.upload_window_s, nbytes, lim.upload_bytes_per_window)
            if wait is not None:
                raise self._reject("IncomingBytes", wait)
            win.add(now, nbytes)

    def max_seen(self, app_id: str, mailbox: str) -> int:
        """Peak attempted concurrency seen for (app, mailbox)."""
        with self._lock:
            return self._max_seen.get((app_id, mailbox), 0)

    def stats(self) -> dict[str, Any]:
        """Max attempted concurrency per mailbox and per app+mailbox, and 429s by limit."""
        with self._lock:
            per_mailbox: dict[str, int] = {}
            per_key = []
            for (app, mailbox), seen in sorted(self._max_seen.items()):
                per_mailbox[mailbox] = max(per_mailbox.get(mailbox, 0), seen)
                per_key.append(
                    {
                        "app_id": app,
                        "mailbox": mailbox,
                        "max_concurrency": seen,
                        "in_flight": self._inflight.get((app, mailbox), 0),
                    }
                )
            return {
                "max_concurrency": per_mailbox,
                "per_app_mailbox": per_key,
                "throttled": dict(self._throttled),
                "throttled_total": sum(self._throttled.values()),
                "recipients_over_limit": dict(self._over_limit),
            }

    def reset(self) -> None:
        """Forget windows and statistics (limits themselves are kept)."""
        with self._lock:
            self._max_seen.clear()
            self._windows.clear()
            self._throttled.clear()
            self._over_limit.clear()
