"""Per-mailbox sending budgets shared by every instance: ``budget.admit(mailbox, recipients) -> Admission``.

Exchange Online counts a mailbox's sends however many Functions instances make them: 30 messages a minute,
4 concurrent requests (per app + mailbox) and 10,000 recipients per rolling 24 hours, over which it
*accepts* the send and NDRs it (REFERENCE.md). So the budget lives in one Table row per mailbox
(``mailboxbudgets``, key = tenant id + object id), changed only with ETag-conditional writes, and each
instance works from a **share** of it, held under a lease, so that a message costs no Storage call at all
while its instance's share lasts:

- **message window and concurrency**: the live participants of a mailbox split the per-minute limit and
  the concurrency slots max-min fairly by what each asks for (its demand in the last window); a newcomer
  gets what the others' current shares leave, and they shrink at their next look. A share others wait for
  (a newcomer's even split would cut it, or another has less than its fair part) looks again within a
  quarter window (its ``x`` in the row says when), the others at half their lease
  (``MAILBOX_BUDGET_LEASE_SECONDS``); a participant sends only while its lease has at least half its length
  left, so a send it admits reaches Graph before the lease ends. A share that shrinks below what it already
  sent publishes those sends (its *tail*), which the others see leave one by one. An instance with no
  message for a mailbox for a moment gives its share back (its tail stays), and so does a graceful stop
  (``close``); a lapsed share (its instance died) still counts until a full window after the lease end.
  Locally, the sends of the share are stamped when Graph answered.
- **recipients per rolling window**: a participant reserves a block of recipients in the row before sending
  (what its share can send until its next renewal, a window's worth at least), reports what it used at its
  next write (in buckets, 1/96 of the window, rounded up), and gives the rest back. A reservation of an
  instance that died counts as sent at its lease end. So the count is never lower than Exchange's: at worst
  a crash wastes one block.

A message whose recipients do not fit is not sent: :class:`Admission` says ``daily_limit`` and when the
budget frees; over the per-message limit it is refused. Cost: one read + one conditional write when an
instance joins a mailbox, one write per renewal or look, per recipient block and per give-back, a re-read on
an ETag conflict; nothing per message in between.
The row: shared/budget_row.py; one instance's view of it: shared/budget_view.py; docs/sending.md
("Sending limits across instances").
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from shared import budget_row as row
from shared import errors
from shared.budget_row import BUDGETS_TABLE, Limits
from shared.budget_view import MailboxView, Send
from shared.storage import StorageClients
from shared.store import mailbox_key

__all__ = ["BUDGETS_TABLE", "CONSUMER_TENANT_ID", "Admission", "Limits", "Mailbox", "MailboxBudget"]

logger = logging.getLogger(__name__)

CONSUMER_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"  # personal Microsoft accounts (Outlook.com)
WRITE_ATTEMPTS = 6


@dataclass(frozen=True)
class Mailbox:
    """What a budget belongs to: the mailbox Graph is called for (never a connection: several can share one)."""

    tenant_id: str
    object_id: str  # or the lower-cased address of a `from` mailbox sent to via /users/{from}

    @property
    def key(self) -> str:
        return mailbox_key(self.tenant_id, self.object_id)

    @property
    def consumer(self) -> bool:
        return self.tenant_id.lower() == CONSUMER_TENANT_ID


@dataclass
class Admission:
    """A held slot (``admitted``; release it with ``budget.slot``), a delay with its reason, or a refusal."""

    mailbox: str
    delay: float = 0.0
    reason: str = ""  # concurrency | message_rate | share_pending | daily_limit | contended
    error: errors.MailbridgeError | None = None  # refused for good (per-message or daily limit exceeded)
    send: Send | None = field(default=None, repr=False)
    released: bool = field(default=False, repr=False)

    @property
    def admitted(self) -> bool:
        return self.error is None and self.delay <= 0


class MailboxBudget:
    """Thread-safe; one per process (``Services.budget``). With ``give_back_idle`` a background thread gives
    back the share of a mailbox this instance has had no message for in a moment (``idle_s``)."""

    def __init__(
        self,
        storage: StorageClients,
        work: Limits,
        consumer: Limits,
        *,
        lease_s: float = 60.0,
        max_wait_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        instance_id: str | None = None,
        give_back_idle: bool = False,
    ) -> None:
        self.storage = storage
        self.work = work
        self.consumer = consumer
        self.lease_s = lease_s
        self.grace_s = lease_s / 2  # a send admitted now reaches Graph within this (see the module docstring)
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self.give_back_idle = give_back_idle
        self._guard = threading.Lock()
        self._boxes: dict[str, MailboxView] = {}
        self._sweeper: threading.Thread | None = None
        self._closed = threading.Event()
        self._options: dict[str, Any] = {}  # per-request options of the row's reads and writes
        self.peak_in_flight: dict[str, int] = {}
        self.storage_calls = 0  # reads + writes of budget rows by this instance (bench/b6_scaleout.py)
        self.calls_by: dict[str, int] = {}  # the same, by why they were made

    def limits(self, mailbox: Mailbox) -> Limits:
        return self.consumer if mailbox.consumer else self.work

    def _box(self, key: str) -> MailboxView:
        with self._guard:
            if key not in self._boxes:
                self._boxes[key] = MailboxView(self.instance_id, self.grace_s)
            return self._boxes[key]

    # --- the question -------------------------------------------------------------------------------------
    def admit(self, mailbox: Mailbox, recipients: int) -> Admission:
        """May this mailbox send one message to ``recipients`` people now? Waits in process up to
        ``max_wait_s`` for a free place rather than reschedule; otherwise says how long to wait and why."""
        lim = self.limits(mailbox)
        key = mailbox.key
        if recipients > lim.recipients_per_message:
            kind = "a personal Outlook.com" if mailbox.consumer else "a"
            err = errors.TooManyRecipients(
                f"{kind} mailbox may send to at most {lim.recipients_per_message} recipients per message; "
                f"this one has {recipients}. Split it into several messages.",
                field="to",
            )
            return Admission(key, error=err)
        if recipients > lim.recipients_per_window:
            detail = f"{recipients} recipients; the mailbox's budget is {lim.recipients_per_window}"
            return Admission(key, error=errors.DailyLimitReached(detail=detail))
        box = self._box(key)
        self._start_sweeper()
        deadline = self.clock() + self.max_wait_s
        arrived = deadline - self.max_wait_s
        with self._guard:  # counted before the box's lock: the demand a share asks for includes the queue at it
            box.arrivals = [t for t in box.arrivals if t > arrived - lim.message_window_s]
            box.arrivals.append(arrived)
        with box.cond:
            box.lim = lim
            box.last_arrival = arrived
            box.waiting += 1
            try:
                return self._admit(box, key, lim, recipients, deadline)
            finally:
                box.waiting -= 1
                box.last_arrival = max(box.last_arrival, self.clock())

    def _admit(self, box: MailboxView, key: str, lim: Limits, recipients: int, deadline: float) -> Admission:
        while True:
            now = self.clock()
            me = box.me
            if me is None or self._due(me, now) or box.unreserved(me) < recipients:
                full = box.full_until(lim, now) - now if box.state is not None else 0.0
                if full > 0 and full > deadline - now:  # the window is full whatever the row says: nothing to write
                    share = max(int(me["k"]) if me else 0, box.fair(lim, now))
                    return Admission(key, box.promise(lim, share, now, full), "message_rate")
                if not self._sync(box, key, lim, recipients, _why(box, me, now, self.grace_s, recipients)):
                    return Admission(key, random.uniform(0.5, 1.5), "contended")
                me = box.me
                assert me is not None
            due = now >= box.resync_at
            wait, reason = box.wait(me, lim, recipients, now)
            if wait <= 0:
                send = box.take(recipients, now)
                self.peak_in_flight[key] = max(self.peak_in_flight.get(key, 0), box.in_flight)
                return Admission(key, send=send)
            wants_more = me["k"] < min(box.fair(lim, now), box.wanted(lim))
            # Held back by the others rather than by its own share: the cached row may be stale (they may have
            # given their shares back since), so look at it again.
            held_back = reason == "share_pending" or (reason == "message_rate" and len(box.sends) < int(me["k"]))
            if reason in ("message_rate", "share_pending") and (wants_more or held_back) and due:
                if self._grow(box, key, lim, recipients, now):  # the share grew: look again at once
                    continue
            # A slot in flight frees within a Graph call: worth a moment past the deadline, not a trip round the queue.
            limit = deadline + (min(1.0, self.max_wait_s) if reason == "concurrency" else 0.0)
            if reason == "daily_limit" or now + wait > limit:
                if reason == "daily_limit":
                    return Admission(key, wait + random.uniform(0, 1), reason)
                share = max(int(me["k"]), box.fair(lim, now))
                return Admission(key, box.promise(lim, share, now, wait), reason)
            look = me.get("x", 0) - now  # this share's look at the row is due then (it may leave others room)
            box.cond.wait(max(0.0, min(wait, limit - now, look if look > 0 else wait)))

    @contextmanager
    def slot(self, admission: Admission) -> Iterator[None]:
        try:
            yield
        finally:
            self.release(admission)

    def release(self, admission: Admission) -> None:
        """Give the slot back (once: the sender releases it when Graph answers, ``slot`` again at the end)."""
        if not admission.admitted or admission.send is None or admission.released:
            return
        box = self._box(admission.mailbox)
        with box.cond:
            if admission.released:
                return
            admission.released = True
            box.in_flight = max(0, box.in_flight - 1)
            if not admission.send.done:
                admission.send.at = self.clock()  # stays in the window a full window after Graph answered
                admission.send.done = True
            box.last_arrival = max(box.last_arrival, self.clock())
            box.cond.notify_all()

    def _due(self, me: dict[str, Any], now: float) -> bool:
        """Renew at half the lease; a share others wait for looks again at its ``x``."""
        return me["u"] - now < self.grace_s or 0 < me.get("x", 0) <= now

    # --- giving shares back -------------------------------------------------------------------------------
    def sweep(self) -> int:
        """Give back the shares of the mailboxes this instance has had nothing for in a quarter window (0.5
        to 5 s): nothing waiting, nothing in flight, no message asked about. Returns how many it gave back."""
        given = 0
        with self._guard:
            boxes = list(self._boxes.items())
        for key, box in boxes:
            if not box.cond.acquire(blocking=False):
                continue  # busy: not idle
            try:
                now = self.clock()
                me = box.me
                if box.lim is None or me is None or box.waiting or box.in_flight:
                    continue
                if now - box.last_arrival < _idle_s(box.lim) or not (me["k"] or me["c"] or me["r"]):
                    continue
                given += self._commit(box, key, lambda at, b=box: b.given_back(b.lim, at), "give back idle")
            finally:
                box.cond.release()
        return given

    def close(self) -> None:
        """Give back every share this instance holds (a graceful stop), so a restart need not wait for them."""
        self._closed.set()
        self._options = {"retry_total": 0, "connection_timeout": 3, "read_timeout": 3}  # never hold up an exit
        with self._guard:
            boxes = list(self._boxes.items())
        for key, box in boxes:
            with box.cond:
                me = box.me
                if box.lim is not None and me is not None and (me["k"] or me["c"] or me["r"]):
                    try:
                        self._commit(box, key, lambda at, b=box: b.given_back(b.lim, at), "give back at close")
                    except Exception as exc:  # best effort: the share lapses with its lease anyway
                        logger.info("Budget share not given back at close: %s", type(exc).__name__)

    def _start_sweeper(self) -> None:
        if not self.give_back_idle or self._sweeper is not None:
            return
        with self._guard:
            if self._sweeper is None:
                self._sweeper = threading.Thread(target=self._sweep_loop, name="budget-give-back", daemon=True)
                self._sweeper.start()

    def _sweep_loop(self) -> None:
        while not self._closed.wait(0.25):
            try:
                self.sweep()
            except Exception:  # Storage trouble: the share lapses with its lease; try again next round
                logger.warning("Budget give-back sweep failed", exc_info=True)

    # --- the shared row -----------------------------------------------------------------------------------
    @property
    def table(self):
        return self.storage.table(BUDGETS_TABLE)

    def _count_call(self, why: str) -> None:
        with self._guard:
            self.storage_calls += 1
            self.calls_by[why] = self.calls_by.get(why, 0) + 1

    def _read(self, box: MailboxView, key: str, why: str) -> None:
        self._count_call(why)
        box.state, box.etag = row.read(self.table, key, **self._options)

    def _commit(
        self, box: MailboxView, key: str, build: Callable[[float], dict[str, Any] | None], why: str = "renew"
    ) -> bool:
        """Write ``build(now)`` of the cached row, re-reading on an ETag conflict; False if it stayed contended."""
        if box.state is None:
            self._read(box, key, "read first")
        for _ in range(WRITE_ATTEMPTS):
            state = build(self.clock())
            if state is None:
                return False
            self._count_call(why)
            etag = row.write(self.table, key, state, box.etag, **self._options)
            if etag is not None:
                box.state, box.etag = state, etag
                box.used = []
                return True
            self._read(box, key, "read after a conflict")
        logger.warning("Budget row of a mailbox stayed contended after %d attempts", WRITE_ATTEMPTS)
        return False

    def _sync(self, box: MailboxView, key: str, lim: Limits, recipients: int, why: str) -> bool:
        """Renew this instance's share and recipient block (reporting what it used) in one conditional write."""
        if not self._commit(box, key, lambda at: box.renewed(lim, self.lease_s, recipients, at), why):
            return False
        mine = box.me
        assert mine is not None and box.state is not None
        logger.debug(
            "Budget %s: share %d msgs / %d slots, %d recipients reserved, %d participants",
            row.partition(key)[:12],
            mine["k"],
            mine["c"],
            mine["r"],
            len(box.state["p"]),
        )
        return True

    def _grow(self, box: MailboxView, key: str, lim: Limits, recipients: int, now: float) -> bool:
        """Read the row; write only if it leaves this share more (the others shrank, or nobody else wants it).
        True when the share grew; otherwise look again only after a quarter window."""
        self._read(box, key, "read to grow")
        me = box.me
        if me is not None:
            new = box.renewed(lim, self.lease_s, recipients, now)["p"][self.instance_id]
            if new["k"] <= me["k"] and new["c"] <= me["c"]:
                box.resync_at = now + max(lim.message_window_s / 4, 0.2)
                return False
        before = int(me["k"]) if me else 0
        if not self._sync(box, key, lim, recipients, "grow"):
            return False
        grown = box.me
        return grown is not None and int(grown["k"]) > before


def _why(box: MailboxView, me: dict[str, Any] | None, now: float, grace_s: float, recipients: int) -> str:
    if me is None:
        return "join"
    if me["u"] - now < grace_s:
        return "join again" if me["u"] <= now or not me["w"] else "renew"
    return "look" if 0 < me.get("x", 0) <= now else "recipients"


def _idle_s(lim: Limits) -> float:
    """How long without a message for a mailbox before its share is given back."""
    return min(5.0, max(0.5, lim.message_window_s / 4))
