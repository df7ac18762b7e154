"""Per-mailbox pacing of Graph sends, in process: concurrency, messages per window, recipients per window.

Outlook allows 4 concurrent requests per app + mailbox; Exchange Online allows 30 messages a minute
and 10,000 recipients a day per mailbox. Going over earns 429s, and a backlog that keeps hitting 429s
burns queue dequeue counts. So each instance paces itself *before* calling Graph:

- concurrency: a slot per mailbox is held for the whole send of one message (its Graph calls run
  one after another), so at most ``max_concurrency`` calls per mailbox are in flight;
- rates: sliding windows of sends. When a window is full, :meth:`MailboxPacer.admit` answers with a
  delay instead of a slot. A send enters the window when it is admitted and is re-stamped when its
  slot is released, i.e. after Graph answered: Graph counted it at some moment in between, so our
  window never ends before Graph's does, however long the token lookup, the record write or the
  request itself took (stamping at admission alone let that jitter put 31 sends in Graph's window).
  Delays are handed out as *reservations* spaced by ``window / limit``, so a backlog of N messages
  comes back spread over time, not all at once.

The state is per process (no Table round trip per message). Across instances Graph's own 429 +
Retry-After is the backstop; docs/sending.md explains the choice.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class _Send:
    at: float  # admission time while in flight, release time after
    done: bool = False


@dataclass
class _Mailbox:
    in_flight: int = 0
    sends: list[_Send] = field(default_factory=list)  # sends in the message window (in flight or recent)
    recipients: deque[tuple[float, int]] = field(default_factory=deque)
    reserved_until: float = 0.0  # last time slot promised to a rescheduled message


@dataclass
class Admission:
    """Either a held slot (``delay`` 0; release it with ``pacer.release``) or a delay in seconds."""

    mailbox: str
    delay: float = 0.0
    reason: str = ""
    send: _Send | None = field(default=None, repr=False)

    @property
    def admitted(self) -> bool:
        return self.delay <= 0


class MailboxPacer:
    """Thread-safe pacing state for every mailbox this instance sends from."""

    def __init__(
        self,
        max_concurrency: int = 4,
        messages_per_window: int = 30,
        message_window_s: float = 60.0,
        recipients_per_window: int = 10_000,
        recipient_window_s: float = 86_400.0,
        concurrency_wait_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_concurrency = max_concurrency
        self.messages_per_window = messages_per_window
        self.message_window_s = message_window_s
        self.recipients_per_window = recipients_per_window
        self.recipient_window_s = recipient_window_s
        self.concurrency_wait_s = concurrency_wait_s
        self.clock = clock
        self._cond = threading.Condition()
        self._boxes: dict[str, _Mailbox] = {}
        self.peak_in_flight: dict[str, int] = {}

    def _box(self, mailbox: str) -> _Mailbox:
        box = self._boxes.get(mailbox)
        if box is None:
            box = self._boxes[mailbox] = _Mailbox()
        return box

    def admit(self, mailbox: str, recipients: int) -> Admission:
        """Take a slot for one message to ``recipients`` people, or say how long to wait."""
        key = mailbox.lower()
        deadline = self.clock() + self.concurrency_wait_s
        with self._cond:
            box = self._box(key)
            # Short waits for a concurrency slot are cheaper than a queue round trip.
            while box.in_flight >= self.max_concurrency:
                left = deadline - self.clock()
                if left <= 0:
                    return Admission(key, 1.0 + random.random(), "concurrency")
                self._cond.wait(left)
            now = self.clock()
            self._prune(box, now)
            wait, reason = self._rate_wait(box, now, recipients)
            if wait > 0:
                return Admission(key, self._reserve(box, now, wait), reason)
            send = _Send(now)
            box.sends.append(send)
            box.recipients.append((now, recipients))
            box.in_flight += 1
            self.peak_in_flight[key] = max(self.peak_in_flight.get(key, 0), box.in_flight)
            return Admission(key, send=send)

    def release(self, admission: Admission) -> None:
        if not admission.admitted:
            return
        with self._cond:
            box = self._box(admission.mailbox)
            box.in_flight = max(0, box.in_flight - 1)
            if admission.send is not None and not admission.send.done:
                admission.send.at = self.clock()
                admission.send.done = True
            self._cond.notify_all()

    @contextmanager
    def slot(self, admission: Admission) -> Iterator[None]:
        try:
            yield
        finally:
            self.release(admission)

    def _prune(self, box: _Mailbox, now: float) -> None:
        horizon = now - self.message_window_s
        if any(s.done and s.at <= horizon for s in box.sends):
            box.sends = [s for s in box.sends if not (s.done and s.at <= horizon)]
        while box.recipients and box.recipients[0][0] <= now - self.recipient_window_s:
            box.recipients.popleft()

    def _rate_wait(self, box: _Mailbox, now: float, recipients: int) -> tuple[float, str]:
        if len(box.sends) >= self.messages_per_window:
            # The first to leave the window is the oldest finished send; while all are in flight, the
            # earliest one to finish frees a place: look again after one spacing.
            finished = [s.at for s in box.sends if s.done]
            spacing = self.message_window_s / max(1, self.messages_per_window)
            wait = min(finished) + self.message_window_s - now if finished else spacing
            return max(wait, 0.01), "messages_per_window"
        used = sum(n for _, n in box.recipients)
        if used + recipients > self.recipients_per_window:
            # Wait until enough old recipients leave the window to make room for this message.
            need = used + recipients - self.recipients_per_window
            freed = 0
            for ts, n in box.recipients:
                freed += n
                if freed >= need:
                    return ts + self.recipient_window_s - now, "recipients_per_window"
            return self.recipient_window_s, "recipients_per_window"
        return 0.0, ""

    def _reserve(self, box: _Mailbox, now: float, wait: float) -> float:
        """Promise the next free time slot: at least ``wait`` away, spaced from earlier promises."""
        spacing = self.message_window_s / max(1, self.messages_per_window)
        at = max(now + wait, box.reserved_until + spacing)
        box.reserved_until = at
        return at - now + random.uniform(0, spacing / 4)  # jitter: instances do not line up
