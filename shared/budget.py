"""Per-mailbox sending budgets shared by every instance: ``budget.admit(mailbox, recipients) -> Admission``.

Exchange Online counts a mailbox's sends however many Functions instances make them: 30 messages a minute,
4 concurrent requests (per app + mailbox) and 10,000 recipients per rolling 24 hours, over which it
*accepts* the send and NDRs it (REFERENCE.md). So the budget lives in one Table row per mailbox
(``mailboxbudgets``, key = tenant id + object id), changed only with ETag-conditional writes, and each
instance works from a **share** of it, held under a lease, so that a message costs no Storage call at all
while its instance's share lasts:

- **message window and concurrency**: the live participants of a mailbox split the per-minute limit and
  the concurrency slots max-min fairly by what each asks for (twice its demand in the last window); a
  newcomer gets what the others' current shares leave, and they shrink at their next look. A share larger
  than a newcomer's even split looks again within a quarter window (its ``x`` in the row says when), the
  others at half their lease (``MAILBOX_BUDGET_LEASE_SECONDS``); a participant sends only while its lease
  has at least half its length left, so a send it admits reaches Graph before the lease ends. A share that
  shrinks below what it already sent publishes those sends (its *tail*), which the others see leave one by
  one. An instance with no message for a mailbox for a moment gives its share back (its tail stays), and
  so does a graceful stop (``close``); a lapsed share (its instance died) still counts until a full window
  after the lease end. Locally, the sends of the share are stamped when Graph answered.
- **recipients per rolling window**: a participant reserves a block of recipients in the row before sending
  (what its share can send until its next renewal), reports what it used at its next write (in buckets, 1/96
  of the window, rounded up), and gives the rest back. A reservation of an instance that died counts as sent
  at its lease end. So the count is never lower than Exchange's: at worst a crash wastes one block.

A message whose recipients do not fit is not sent: :class:`Admission` says ``daily_limit`` and when the
budget frees; over the per-message limit it is refused. Cost: one read + one conditional write when an
instance joins a mailbox, one write per renewal or look, per recipient block and per give-back, a re-read on
an ETag conflict; nothing per message in between.
The row itself: shared/budget_row.py; docs/sending.md ("Sending limits across instances").
"""

from __future__ import annotations

import logging
import math
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
from shared.budget_row import BUDGETS_TABLE
from shared.storage import StorageClients
from shared.store import mailbox_key

__all__ = ["BUDGETS_TABLE", "CONSUMER_TENANT_ID", "Admission", "Limits", "Mailbox", "MailboxBudget"]

logger = logging.getLogger(__name__)

CONSUMER_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"  # personal Microsoft accounts (Outlook.com)
WRITE_ATTEMPTS = 6
MIN_ASK = 4  # the smallest share asked for (messages per window, at most a quarter of the limit)


@dataclass(frozen=True)
class Limits:
    """Sending limits of one kind of mailbox (settings; docs/settings.md says where each figure comes from)."""

    messages_per_window: int = 30
    message_window_s: float = 60.0
    recipients_per_window: int = 10_000
    recipient_window_s: float = 86_400.0
    recipients_per_message: int = 500
    max_concurrency: int = 4


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
class _Send:
    at: float  # admission time while in flight, Graph's answer after
    done: bool = False


@dataclass
class Admission:
    """A held slot (``admitted``; release it with ``budget.slot``), a delay with its reason, or a refusal."""

    mailbox: str
    delay: float = 0.0
    reason: str = ""  # concurrency | message_rate | share_pending | daily_limit | contended
    error: errors.MailbridgeError | None = None  # refused for good (per-message or daily limit exceeded)
    send: _Send | None = field(default=None, repr=False)
    released: bool = field(default=False, repr=False)

    @property
    def admitted(self) -> bool:
        return self.error is None and self.delay <= 0


@dataclass
class _Box:
    """This instance's view of one mailbox: the cached row, its own share and its local sends."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    lim: Limits | None = None
    state: dict[str, Any] | None = None  # the row's state as last read or written
    etag: str | None = None
    sends: list[_Send] = field(default_factory=list)  # in flight, or answered within the message window
    in_flight: int = 0
    waiting: int = 0  # admit() calls in progress
    used: list[list[float]] = field(default_factory=list)  # [admitted at, recipients] not yet reported
    resync_at: float = 0.0  # earliest time to look at the row again for a larger share
    promises: list[float] = field(default_factory=list)  # times promised to rescheduled messages
    arrivals: list[float] = field(default_factory=list)  # admit() calls within the message window: demand
    last_arrival: float = 0.0
    avg_recipients: float = 1.0


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
        self._boxes: dict[str, _Box] = {}
        self._sweeper: threading.Thread | None = None
        self._closed = threading.Event()
        self._options: dict[str, Any] = {}  # per-request options of the row's reads and writes
        self.peak_in_flight: dict[str, int] = {}
        self.storage_calls = 0  # reads + writes of budget rows by this instance (bench/b6_scaleout.py)

    def limits(self, mailbox: Mailbox) -> Limits:
        return self.consumer if mailbox.consumer else self.work

    def _box(self, key: str) -> _Box:
        with self._guard:
            return self._boxes.setdefault(key, _Box())

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

    def _admit(self, box: _Box, key: str, lim: Limits, recipients: int, deadline: float) -> Admission:
        while True:
            now = self.clock()
            me = self._me(box)
            if me is None or self._due(me, now) or self._unreserved(box, me) < recipients:
                if not self._sync(box, key, lim, recipients, now):
                    return Admission(key, random.uniform(0.5, 1.5), "contended")
                me = self._me(box)
                assert me is not None
            due = now >= box.resync_at
            wait, reason = self._wait(box, me, lim, recipients, now)
            if wait <= 0:
                return self._take(box, key, recipients, now)
            wants_more = me["k"] < min(self._fair(box, lim, now), _wanted(box, lim))
            if reason in ("message_rate", "share_pending") and wants_more and due:
                if self._grow(box, key, lim, recipients, now):  # the share grew: look again at once
                    continue
            # A slot in flight frees within a Graph call: worth a moment past the deadline, not a trip round the queue.
            limit = deadline + (min(1.0, self.max_wait_s) if reason == "concurrency" else 0.0)
            if reason == "daily_limit" or now + wait > limit:
                if reason == "daily_limit":
                    return Admission(key, wait + random.uniform(0, 1), reason)
                share = max(int(me["k"]), self._fair(box, lim, now))
                return Admission(key, self._reserve(box, lim, share, now, wait), reason)
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

    # --- giving shares back -------------------------------------------------------------------------------
    def sweep(self) -> int:
        """Give back the shares of the mailboxes this instance has had nothing for since ``_idle_s``: nothing
        waiting, nothing in flight, no message asked about. Returns how many it gave back."""
        given = 0
        with self._guard:
            boxes = list(self._boxes.items())
        for key, box in boxes:
            if not box.cond.acquire(blocking=False):
                continue  # busy: not idle
            try:
                now = self.clock()
                me = self._me(box)
                if box.lim is None or me is None or box.waiting or box.in_flight:
                    continue
                if now - box.last_arrival < _idle_s(box.lim) or not (me["k"] or me["c"] or me["r"]):
                    continue
                given += self._give_back(box, key, box.lim)
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
                if box.lim is not None and self._me(box) is not None:
                    try:
                        self._give_back(box, key, box.lim)
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

    def _give_back(self, box: _Box, key: str, lim: Limits) -> int:
        """One conditional write: this share down to its tail, recipients reported, the reservation freed."""

        def build(now: float) -> dict[str, Any] | None:
            assert box.state is not None
            state = {"p": {h: dict(e) for h, e in box.state["p"].items()}, "b": [list(b) for b in box.state["b"]]}
            mine = state["p"].pop(self.instance_id, None)
            if mine is None:
                return None
            row.add_used(state, box.used, lim.recipient_window_s, self.grace_s)
            entry = {"k": 0, "c": 0, "w": 0, "u": now, "r": 0, "x": 0}
            leaving = self._leave_times(box, lim, now)
            if leaving:
                entry["t"] = row.tail(leaving, lim.message_window_s)
            if box.in_flight:
                entry.update(tc=box.in_flight, tcu=now + self.grace_s)
            if leaving or box.in_flight:
                state["p"][self.instance_id] = entry
            return state

        return 1 if self._commit(box, key, build) else 0

    # --- local decisions (no Storage) ---------------------------------------------------------------------
    def _me(self, box: _Box) -> dict[str, Any] | None:
        return box.state["p"].get(self.instance_id) if box.state else None

    def _due(self, me: dict[str, Any], now: float) -> bool:
        """Renew at half the lease; a share larger than a newcomer's part looks again at its ``x``."""
        return me["u"] - now < self.grace_s or 0 < me.get("x", 0) <= now

    def _unreserved(self, box: _Box, me: dict[str, Any]) -> int:
        return int(me["r"]) - sum(int(n) for _, n in box.used)

    def _live(self, box: _Box, now: float) -> dict[str, dict[str, Any]]:
        assert box.state is not None
        return {h: e for h, e in box.state["p"].items() if h != self.instance_id and row.live(e, now)}

    def _fair(self, box: _Box, lim: Limits, now: float) -> int:
        """This instance's max-min fair part of the window given what the live participants ask for."""
        wants = {h: int(e.get("w", e["k"])) for h, e in self._live(box, now).items()}
        wants[self.instance_id] = _wanted(box, lim)
        return row.fair(lim.messages_per_window, wants, self.instance_id)

    def _others(self, box: _Box, lim: Limits, now: float) -> tuple[int, int, float]:
        """Messages and concurrency the other participants may be using now, and when that next drops."""
        assert box.state is not None
        msgs = conc = 0
        changes = now + lim.message_window_s
        for holder, e in box.state["p"].items():
            if holder == self.instance_id:
                continue
            k, c = row.occupancy(e, now, lim.message_window_s)
            msgs, conc = msgs + k, conc + c
            changes = min([changes, *row.changes(e, now, lim.message_window_s)])
        return msgs, conc, changes

    def _wait(self, box: _Box, me: dict[str, Any], lim: Limits, recipients: int, now: float) -> tuple[float, str]:
        window = lim.message_window_s
        box.sends = [s for s in box.sends if not s.done or s.at > now - window]
        others_k, others_c, changes = self._others(box, lim, now)
        cap_k = min(int(me["k"]), lim.messages_per_window - others_k)
        cap_c = min(int(me["c"]), lim.max_concurrency - others_c)
        if self._unreserved(box, me) < recipients:
            return self._daily_wait(box, lim, recipients, now, self._unreserved(box, me)), "daily_limit"
        if cap_k <= 0 or cap_c <= 0:
            # No room yet (the others have not shrunk, or their tails have not left): look again then.
            box.resync_at = min(changes, now + max(window / 4, 0.2))
            return max(0.05, box.resync_at - now), "share_pending"
        if len(box.sends) >= cap_k:
            finished = [s.at + window for s in box.sends if s.done]
            if len(box.sends) < int(me["k"]):  # bound by the others' tails, not by its own sends
                finished.append(changes)
            wait = (min(finished) - now) if finished else window / max(1, cap_k)
            return max(wait, 0.01), "message_rate"
        if box.in_flight >= cap_c:
            return 0.5, "concurrency"  # a release notifies the waiters sooner
        return 0.0, ""

    def _daily_wait(self, box: _Box, lim: Limits, recipients: int, now: float, have: int) -> float:
        """Seconds until ``recipients`` fit in the rolling window (``have`` of them are reserved already)."""
        assert box.state is not None
        spare = lim.recipients_per_window - row.recipients_in_use(box.state, now) + have
        for leave_at, n in sorted(box.state["b"]):
            if leave_at <= now:
                continue
            spare += n
            if spare >= recipients:
                return leave_at - now
        # What is left is reserved by other instances: their next renewal gives back what they did not use.
        return max(self.grace_s, 1.0)

    def _take(self, box: _Box, key: str, recipients: int, now: float) -> Admission:
        send = _Send(now)
        box.sends.append(send)
        box.in_flight += 1
        box.used.append([now, recipients])
        box.avg_recipients = 0.8 * box.avg_recipients + 0.2 * recipients
        self.peak_in_flight[key] = max(self.peak_in_flight.get(key, 0), box.in_flight)
        return Admission(key, send=send)

    def _reserve(self, box: _Box, lim: Limits, share: int, now: float, wait: float) -> float:
        """The first time at least ``wait`` away when this instance's sends and earlier promises leave room in
        its share's sliding window (so the instances' rescheduled backlogs come back at the mailbox's rate)."""
        window = lim.message_window_s
        box.promises = [p for p in box.promises if p > now - window]
        counted = sorted([s.at for s in box.sends] + box.promises)
        at = max([now + wait, *box.promises[-1:]])
        while True:
            inside = [t for t in counted if at - window < t <= at]
            if len(inside) < max(1, share):
                break
            at = inside[0] + window + 0.01
        # Promises further than a window past the first free place only pile up: look again then.
        at = min(at, now + wait + window)
        box.promises.append(at)
        return at - now + random.uniform(0, min(0.25, window / max(1, share) / 4))

    def _leave_times(self, box: _Box, lim: Limits, now: float) -> list[float]:
        """When this instance's sends leave the message window: a window after Graph's answer, or for one in
        flight a window after the latest it reaches Graph."""
        window = lim.message_window_s
        return [s.at + window + (0 if s.done else self.grace_s) for s in box.sends if not s.done or s.at > now - window]

    # --- the shared row -----------------------------------------------------------------------------------
    @property
    def table(self):
        return self.storage.table(BUDGETS_TABLE)

    def _count_call(self) -> None:
        with self._guard:
            self.storage_calls += 1

    def _read(self, box: _Box, key: str) -> None:
        self._count_call()
        box.state, box.etag = row.read(self.table, key, **self._options)

    def _commit(self, box: _Box, key: str, build: Callable[[float], dict[str, Any] | None]) -> bool:
        """Write ``build(now)`` of the cached row, re-reading on an ETag conflict; False if it stayed contended."""
        if box.state is None:
            self._read(box, key)
        for _ in range(WRITE_ATTEMPTS):
            state = build(self.clock())
            if state is None:
                return True
            self._count_call()
            etag = row.write(self.table, key, state, box.etag, **self._options)
            if etag is not None:
                box.state, box.etag = state, etag
                box.used = []
                return True
            self._read(box, key)
        logger.warning("Budget row of a mailbox stayed contended after %d attempts", WRITE_ATTEMPTS)
        return False

    def _sync(self, box: _Box, key: str, lim: Limits, recipients: int, now: float) -> bool:
        """Renew this instance's share and recipient block (reporting what it used) in one conditional write."""
        if not self._commit(box, key, lambda at: self._renewed(box, lim, recipients, at)):
            return False
        mine = self._me(box)
        assert mine is not None
        logger.debug(
            "Budget %s: share %d msgs / %d slots, %d recipients reserved, %d participants",
            row.partition(key)[:12],
            mine["k"],
            mine["c"],
            mine["r"],
            len(box.state["p"]) if box.state else 0,
        )
        return True

    def _grow(self, box: _Box, key: str, lim: Limits, recipients: int, now: float) -> bool:
        """Read the row; write only if it leaves this share more (the others shrank, or nobody else wants it).
        True when the share grew; otherwise look again only after a quarter window."""
        self._read(box, key)
        me = self._me(box)
        if me is not None:
            new = self._renewed(box, lim, recipients, now)["p"][self.instance_id]
            if new["k"] <= me["k"] and new["c"] <= me["c"]:
                box.resync_at = now + max(lim.message_window_s / 4, 0.2)
                return False
        before = int(me["k"]) if me else 0
        if not self._sync(box, key, lim, recipients, now):
            return False
        grown = self._me(box)
        return grown is not None and int(grown["k"]) > before

    def _renewed(self, box: _Box, lim: Limits, recipients: int, now: float) -> dict[str, Any]:
        assert box.state is not None
        window, daily = lim.message_window_s, lim.recipient_window_s
        state = {"p": {h: dict(e) for h, e in box.state["p"].items()}, "b": [list(b) for b in box.state["b"]]}
        mine = state["p"].pop(self.instance_id, None)
        if mine is not None:  # what this instance used since its last write (else its entry lapsed: counted)
            row.add_used(state, box.used, daily, self.grace_s)
        for holder, e in list(state["p"].items()):  # leases that ended: their reservation counts as used
            if row.lapsed(e, now, window):
                row.add_used(state, [[e["u"] - self.grace_s, e["r"]]], daily, self.grace_s)
                del state["p"][holder]
        state["b"] = [b for b in state["b"] if b[0] > now]
        live = [h for h, e in state["p"].items() if row.live(e, now)]
        others_k = others_c = 0
        for e in state["p"].values():
            k, c = row.occupancy(e, now, window, tails=False)
            others_k, others_c = others_k + k, others_c + c
        # The max-min fair part of what the live participants ask for, of what the others leave now, and no
        # more than this instance asks for: twice its demand in the last window (one with a few messages
        # leaves the rest to the others at once, without a shrink).
        wanted = _wanted(box, lim)
        wants = {h: int(state["p"][h].get("w", state["p"][h]["k"])) for h in live}
        wants[self.instance_id] = wanted
        k = max(0, min(row.fair(lim.messages_per_window, wants, self.instance_id), lim.messages_per_window - others_k))
        c = max(0, min(row.split(lim.max_concurrency, live, self.instance_id), lim.max_concurrency - others_c))
        spare = lim.recipients_per_window - row.recipients_in_use(state, now)
        per_lease = math.ceil(max(1, k) * (self.lease_s - self.grace_s) / window * box.avg_recipients)
        block = max(recipients, min(per_lease, spare // max(1, len(live) + 1)))
        u = now + self.lease_s
        # Looks again within a quarter window, not half a lease: a share a newcomer's even split would cut (one
        # or two participants), or while another live participant has less than its fair part (it waits for
        # this one to shrink). Otherwise nobody waits for it, and a look would cost a write for nothing.
        look = now + min(self.lease_s - self.grace_s, max(window / 4, 0.2))
        cut = k > row.split(lim.messages_per_window, [*live, "~newcomer"], self.instance_id) and len(live) <= 1
        needy = any(int(state["p"][h]["k"]) < row.fair(lim.messages_per_window, wants, h) for h in live)
        x = look if cut or needy else 0
        entry: dict[str, Any] = {"k": k, "c": c, "w": wanted, "u": u, "r": max(0, min(block, spare)), "x": x}
        recent = self._leave_times(box, lim, now)
        if len(recent) > k:  # a share below what it already sent publishes its tail
            entry["t"] = row.tail(recent, window)
        if box.in_flight > c:
            entry.update(tc=box.in_flight, tcu=now + self.grace_s)
        state["p"][self.instance_id] = entry
        return state


def _wanted(box: _Box, lim: Limits) -> int:
    """The share this instance asks for: twice its demand in the last window, at least MIN_ASK."""
    return max(1, min(MIN_ASK, lim.messages_per_window // 4), 2 * len(box.arrivals))


def _idle_s(lim: Limits) -> float:
    """How long without a message for a mailbox before its share is given back."""
    return min(5.0, max(0.5, lim.message_window_s / 4))
