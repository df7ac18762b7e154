"""Per-mailbox sending budgets shared by every instance: ``budget.admit(mailbox, recipients) -> Admission``.

Exchange Online counts a mailbox's sends however many Functions instances make them: 30 messages a minute,
4 concurrent requests (per app + mailbox) and 10,000 recipients per rolling 24 hours, over which it
*accepts* the send and NDRs it (REFERENCE.md). So the budget lives in one Table row per mailbox
(``mailboxbudgets``, key = tenant id + object id), changed only with ETag-conditional writes, and each
instance works from a **share** of it, held under a lease, so that a message costs no Storage call at all
while its instance's share lasts:

- **message window and concurrency**: the instance that starts sending for a mailbox takes a share of twice
  its demand (up to what the others' shares leave of the window) and the free concurrency slots, grows it
  with its demand, holds it under a lease and renews it at half the lease (``MAILBOX_BUDGET_LEASE_SECONDS``);
  it sends only while its lease has at least half its length left, so a send it admits reaches Graph before
  the lease ends. One instance can always use a mailbox's whole window, so while it holds a live share the
  others *defer* to it instead of splitting the window (the queue hands any message to any instance, and a
  split strands parts of the window on instances that get no message for the mailbox): they read the row,
  write nothing, and reschedule their messages, spaced at the mailbox's rate. An instance with no message
  for a mailbox for a moment gives its share back, publishing its sends still in the window (its *tail*,
  which the next holder sees leave one by one), and so does a graceful stop (``close``); a lapsed share (its
  instance died) still counts until a full window after the lease end. Locally, the sends of the share are
  stamped when Graph answered.
- **recipients per rolling window**: a participant reserves a block of recipients in the row before sending
  (what its share can send until its next renewal, a window's worth at least), reports what it used at its
  next write (in buckets, 1/96 of the window, rounded up), and gives the rest back. A reservation of an
  instance that died counts as sent at its lease end. So the count is never lower than Exchange's: at worst
  a crash wastes one block.

A message whose recipients do not fit is not sent: :class:`Admission` says ``daily_limit`` and when the
budget frees; over the per-message limit it is refused. Cost: one read + one conditional write when an
instance joins a mailbox, one write per renewal, per recipient block and per give-back, a re-read on an ETag
conflict; a read per eighth of a window for an instance deferring to another; nothing per message in between.
The row: shared/pacing/budget_row.py; one instance's view of it: shared/pacing/budget_view.py; docs/sending.md
("Sending limits across instances").
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from shared.base import errors
from shared.base.storage import StorageClients
from shared.base.tenant_limits import TenantExternalLimit
from shared.pacing import budget_row as row
from shared.pacing.admission import CONSUMER_TENANT_ID, Admission, Mailbox
from shared.pacing.budget_row import BUDGETS_TABLE, Limits
from shared.pacing.budget_view import MailboxView, Send, look_again_s
from shared.pacing.tenant import TenantBudget
from shared.pacing.uploads import UploadBudget

__all__ = ["BUDGETS_TABLE", "CONSUMER_TENANT_ID", "Admission", "Limits", "Mailbox", "MailboxBudget"]

logger = logging.getLogger(__name__)


class MailboxBudget:
    """The pacer behind the door (shared/pacing/admission.py ``Pacer``). Thread-safe; one per process
    (``Services.budget``). With ``give_back_idle`` a background thread gives back the share of a mailbox this
    instance has had no message for in a moment (``idle_s``)."""

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
        tenant_limits: Iterable[TenantExternalLimit] = (),
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
        self.uploads = UploadBudget(lambda: self.table, self.clock, self._count_call)
        window = work.recipient_window_s
        self.tenants = TenantBudget(lambda: self.table, self.clock, self._count_call, tenant_limits, window)

    def limits(self, mailbox: Mailbox) -> Limits:
        return self.consumer if mailbox.consumer else self.work

    def _box(self, key: str) -> MailboxView:
        with self._guard:
            if key not in self._boxes:
                self._boxes[key] = MailboxView(self.instance_id, self.grace_s)
            return self._boxes[key]

    # --- the question -------------------------------------------------------------------------------------
    def admit(self, mailbox: Mailbox, recipients: int | Sequence[str], upload_bytes: int = 0) -> Admission:
        """May this mailbox send one message to ``recipients`` (a count, or the addresses) now, uploading
        ``upload_bytes``? Waits in process up to ``max_wait_s`` for a free place rather than reschedule; otherwise
        says how long to wait and why (``tenant_external_limit``: the tenant's external recipients,
        shared/pacing/tenant.py; ``upload_rate``: Graph's upload limit, shared/pacing/uploads.py)."""
        addresses = () if isinstance(recipients, int) else tuple(recipients)
        admission = self._admit_message(mailbox, recipients if isinstance(recipients, int) else len(addresses))
        if not admission.admitted:
            return admission
        try:
            held = self.tenants.reserve(mailbox, addresses, self.grace_s)
        except Exception:  # Storage trouble: the slot goes back unused before the error does
            _held_back(admission, 0.0, "")
            raise
        if held.wait > 0:
            return _held_back(admission, held.wait, held.reason)
        if upload_bytes <= 0:
            return admission
        lim = self.limits(mailbox)
        wait, tag = self.uploads.reserve(mailbox.key, lim, upload_bytes, self.grace_s)
        if tag is None:
            self.tenants.withdraw(held)
            return _held_back(admission, wait, "upload_rate")
        report = admission.give_back

        def give_back() -> None:
            if report is not None:
                report()
            self.uploads.finish(mailbox.key, lim, tag)

        admission.give_back = give_back
        return admission

    def _admit_message(self, mailbox: Mailbox, recipients: int) -> Admission:
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
            if not box.share_lasts(recipients, now):
                full = box.full_until(lim, now) - now if box.state is not None else 0.0
                if full > 0 and full > deadline - now:  # the window is full whatever the row says: nothing to write
                    return Admission(key, box.promise(lim, _share(box, lim), now, full), "message_rate")
                if not box.sharing:
                    defer = self._deferred(box, key, lim, now)
                    if defer is not None:  # another instance sends for this mailbox: defer to it, write nothing
                        if now + defer > deadline:
                            return Admission(key, box.promise(lim, _share(box, lim), now, defer), "share_pending")
                        box.cond.wait(defer)
                        continue
                if not self._sync(box, key, lim, recipients, _why(box, me, now, self.grace_s, recipients)):
                    if not box.sharing and box.deferred(lim, self.clock()) is not None:
                        continue  # another instance took the mailbox between the read and the write: defer to it
                    return Admission(key, random.uniform(0.5, 1.5), "contended")
                me = box.me
            assert me is not None  # the share lasts, or was just renewed
            due = now >= box.resync_at
            wait, reason = box.wait(me, lim, recipients, now)
            if wait <= 0:
                send = box.take(recipients, now)
                self.peak_in_flight[key] = max(self.peak_in_flight.get(key, 0), box.in_flight)
                return Admission(key, give_back=partial(self._give_back, box, send))
            # Held back by the others rather than by its own share, or a share smaller than the window (the
            # others' tails when it joined): the cached row may be stale (they may have given their shares back,
            # their tails left since), so look at it again.
            held_back = reason == "share_pending" or (reason == "message_rate" and len(box.sends) < int(me["k"]))
            wants_more = reason == "message_rate" and int(me["k"]) < lim.messages_per_window
            if (held_back or wants_more) and due:
                if self._grow(box, key, lim, recipients, now):  # the share grew: look again at once
                    continue
            # A slot in flight frees within a Graph call: worth a moment past the deadline, not a trip round the queue.
            limit = deadline + (min(1.0, self.max_wait_s) if reason == "concurrency" else 0.0)
            if reason == "daily_limit" or now + wait > limit:
                if reason == "daily_limit":
                    return Admission(key, wait + random.uniform(0, 1), reason)
                return Admission(key, box.promise(lim, _share(box, lim), now, wait), reason)
            box.cond.wait(max(0.0, min(wait, limit - now)))

    def _give_back(self, box: MailboxView, send: Send, withdrawn: bool = False) -> None:
        """The report of an admitted attempt (``Admission.report``): the slot is free, and the send counts in the
        message window until a window after now (Graph's answer). ``withdrawn``: nothing was sent (held back for
        Graph's upload limit): the send and its recipients are taken out again."""
        with box.cond:
            if send.done:
                return
            send.at, send.done = self.clock(), True
            if withdrawn:
                box.withdraw(send)
            box.in_flight = max(0, box.in_flight - 1)
            box.last_arrival = max(box.last_arrival, self.clock())
            box.cond.notify_all()

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
            except Exception as exc:  # Storage trouble: the share lapses with its lease; try again next round
                logger.warning("Budget give-back sweep failed (%s); trying again", type(exc).__name__)

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
        box.read_at = self.clock()

    def _deferred(self, box: MailboxView, key: str, lim: Limits, now: float) -> float | None:
        """For an instance without a share: how long until the mailbox may have room for it, when the others
        fill its window (None: join now). A cached row that leaves room needs no read (the join's conditional
        write fails if it changed, and the re-read decides again); one that says defer is read again if older
        than an eighth of a window (the sender may have given its share back since)."""
        if box.state is None:
            self._read(box, key, "read first")
        defer = box.deferred(lim, now)
        if defer is not None and now - box.read_at > max(0.2, lim.message_window_s / 8):
            self._read(box, key, "read to join")
            defer = box.deferred(lim, now)
        return defer

    def _commit(
        self, box: MailboxView, key: str, build: Callable[[float], dict[str, Any] | None], why: str = "renew"
    ) -> bool:
        """Write ``build(now)`` of the cached row, re-reading on an ETag conflict; False if it stayed contended."""
        if box.state is None:
            self._read(box, key, "read first")
        for _ in range(row.WRITE_ATTEMPTS):
            state = build(self.clock())
            if state is None:
                return False
            self._count_call(why)
            etag = row.write(self.table, key, state, box.etag, **self._options)
            if etag is not None:
                box.state, box.etag, box.read_at = state, etag, self.clock()
                box.used = []
                return True
            self._read(box, key, "read after a conflict")
        logger.warning("Budget row of a mailbox stayed contended after %d attempts", row.WRITE_ATTEMPTS)
        return False

    def _sync(self, box: MailboxView, key: str, lim: Limits, recipients: int, why: str) -> bool:
        """Renew this instance's share and recipient block (reporting what it used) in one conditional write."""
        joining = not box.sharing

        def build(at: float) -> dict[str, Any] | None:
            if joining and box.deferred(lim, at) is not None:
                return None  # the re-read after a conflict shows another instance took the mailbox: no write
            return box.renewed(lim, self.lease_s, recipients, at)

        if not self._commit(box, key, build, why):
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
                box.resync_at = now + look_again_s(lim)
                return False
        before = int(me["k"]) if me else 0
        if not self._sync(box, key, lim, recipients, "grow"):
            return False
        grown = box.me
        return grown is not None and int(grown["k"]) > before


def _held_back(admission: Admission, wait: float, reason: str) -> Admission:
    """Not admitted after all: the slot is handed back unused (the message neither counts in the window nor is in
    flight), and the message waits ``wait`` for ``reason``."""
    withdraw, admission.give_back = admission.give_back, None
    if withdraw is not None:
        withdraw(withdrawn=True)
    return Admission(admission.mailbox, wait, reason)


def _why(box: MailboxView, me: dict[str, Any] | None, now: float, grace_s: float, recipients: int) -> str:
    if me is None:
        return "join"
    if me["u"] - now < grace_s:
        return "join again" if me["u"] <= now or not me["w"] else "renew"
    return "recipients"


def _share(box: MailboxView, lim: Limits) -> int:
    """The rate a rescheduled message's return is spaced at: this instance's share while it holds one, else
    the mailbox's whole window (whichever instance then holds the mailbox may send it)."""
    return int(box.me["k"]) if box.sharing and box.me else lim.messages_per_window


def _idle_s(lim: Limits) -> float:
    """How long without a message for a mailbox before its share is given back."""
    return min(5.0, max(0.5, lim.message_window_s / 4))
