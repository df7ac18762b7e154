"""Per-mailbox sending budgets shared by every instance: ``budget.admit(mailbox, recipients) -> Admission``.

Exchange Online counts a mailbox's sends however many Functions instances make them: 30 messages a minute,
4 concurrent requests (per app + mailbox) and 10,000 recipients per rolling 24 hours, over which it
*accepts* the send and NDRs it (REFERENCE.md). So the budget lives in one Table row per mailbox
(``mailboxbudgets``, key = tenant id + object id), changed only with ETag-conditional writes, and each
instance works from a **share** of it, held under a lease, so that a message costs no Storage call at all
while its instance's share lasts:

- **message window and concurrency**: the live participants of a mailbox split the per-minute limit and
  the concurrency slots evenly (a newcomer gets what the others' current shares leave; they shrink to the
  even split at their next renewal). A participant sends only while its lease has at least half its length
  left (``MAILBOX_BUDGET_LEASE_SECONDS``), so a send it admits reaches Graph before the lease ends; a lapsed
  share (its instance died or went idle) still counts until a full window after the lease end. A share that
  shrinks leaves a *tail* (what the instance already sent in the window) that the others wait out.
  Locally, the sends of the share are stamped when Graph answered, as the old per-process pacer did.
- **recipients per rolling window**: a participant reserves a block of recipients in the row before sending
  (what its share can send until its next renewal), reports what it used at its next write (in buckets, 1/96
  of the window, rounded up), and gives the rest back. A reservation of an instance that died counts as sent
  at its lease end. So the count is never lower than Exchange's: at worst a crash wastes one block.

A message whose recipients do not fit is not sent: :class:`Admission` says ``daily_limit`` and when the
budget frees; over the per-message limit it is refused. Cost: one read + one conditional write when an
instance joins a mailbox, one write per renewal (every half lease) or per recipient block, a re-read on an
ETag conflict; nothing per message in between. docs/sending.md ("Sending limits across instances").
"""

from __future__ import annotations

import hashlib
import json
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

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared import errors
from shared.storage import StorageClients
from shared.store import mailbox_key

logger = logging.getLogger(__name__)

BUDGETS_TABLE = "mailboxbudgets"
BUDGET_ROW = "budget"
CONSUMER_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"  # personal Microsoft accounts (Outlook.com)
BUCKETS_PER_WINDOW = 96  # recipient buckets: 15 minutes of a 24-hour window
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
    state: dict[str, Any] | None = None  # the row's state as last read or written
    etag: str | None = None
    sends: list[_Send] = field(default_factory=list)  # in flight, or answered within the message window
    in_flight: int = 0
    used: list[list[float]] = field(default_factory=list)  # [admitted at, recipients] not yet reported
    resync_at: float = 0.0  # earliest time to look at the row again for a larger share
    reserved_until: float = 0.0  # last time slot promised to a rescheduled message
    arrivals: list[float] = field(default_factory=list)  # admit() calls within the message window: demand
    avg_recipients: float = 1.0


def _split(total: int, ids: list[str], me: str) -> int:
    """``me``'s part of an even split of ``total`` between ``ids`` (the remainder to the first ids)."""
    ids = sorted(ids)
    base, extra = divmod(total, len(ids))
    return base + (1 if ids.index(me) < extra else 0)


class MailboxBudget:
    """Thread-safe; one per process (``Services.budget``)."""

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
    ) -> None:
        self.storage = storage
        self.work = work
        self.consumer = consumer
        self.lease_s = lease_s
        self.grace_s = lease_s / 2  # a send admitted now reaches Graph within this (see the module docstring)
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self._guard = threading.Lock()
        self._boxes: dict[str, _Box] = {}
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
        deadline = self.clock() + self.max_wait_s
        with box.cond:
            box.arrivals = [t for t in box.arrivals if t > deadline - self.max_wait_s - lim.message_window_s]
            box.arrivals.append(deadline - self.max_wait_s)
            while True:
                now = self.clock()
                me = self._me(box)
                if me is None or me["u"] - now < self.grace_s or self._unreserved(box, me) < recipients:
                    if not self._sync(box, key, lim, recipients, now):
                        return Admission(key, random.uniform(0.5, 1.5), "contended")
                    me = self._me(box)
                    assert me is not None
                due = now >= box.resync_at
                wait, reason = self._wait(box, me, lim, recipients, now)
                if wait <= 0:
                    return self._take(box, key, recipients, now)
                wants_more = me["k"] < min(self._fair(box, lim.messages_per_window, now), _wanted(box, lim))
                if reason in ("message_rate", "share_pending") and wants_more and due:
                    if self._grow(box, key, lim, recipients, now):  # the share grew: look again at once
                        continue
                if reason == "daily_limit" or now + wait > deadline:
                    if reason == "daily_limit":
                        return Admission(key, wait + random.uniform(0, 1), reason)
                    share = max(int(me["k"]), self._fair(box, lim.messages_per_window, now))
                    return Admission(key, self._reserve(box, lim, share, now, wait), reason)
                box.cond.wait(min(wait, deadline - now))

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
            box.cond.notify_all()

    # --- local decisions (no Storage) ---------------------------------------------------------------------
    def _me(self, box: _Box) -> dict[str, Any] | None:
        return box.state["p"].get(self.instance_id) if box.state else None

    def _unreserved(self, box: _Box, me: dict[str, Any]) -> int:
        return int(me["r"]) - sum(int(n) for _, n in box.used)

    def _fair(self, box: _Box, total: int, now: float) -> int:
        assert box.state is not None
        live = [h for h, e in box.state["p"].items() if e["u"] > now or h == self.instance_id]
        return _split(total, live, self.instance_id)

    def _others(self, box: _Box, lim: Limits, now: float) -> tuple[int, int, float]:
        """Messages and concurrency the other participants may be using now, and when that next drops."""
        assert box.state is not None
        msgs = conc = 0
        changes = now + lim.message_window_s
        for holder, e in box.state["p"].items():
            if holder == self.instance_id:
                continue
            k, c = _occupancy(e, now, lim.message_window_s)
            msgs, conc = msgs + k, conc + c
            for t in (e["u"], e["u"] + lim.message_window_s, e["tu"], e["tcu"]):
                if t > now:
                    changes = min(changes, t)
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
            # No share yet (the others have not shrunk to the even split): look again when theirs may have.
            box.resync_at = min(changes, now + max(window / 4, 0.2))
            return max(0.05, box.resync_at - now), "share_pending"
        if len(box.sends) >= cap_k:
            finished = [s.at for s in box.sends if s.done]
            wait = (min(finished) + window - now) if finished else window / max(1, cap_k)
            return max(wait, 0.01), "message_rate"
        if box.in_flight >= cap_c:
            return 0.5, "concurrency"  # a release notifies the waiters sooner
        return 0.0, ""

    def _daily_wait(self, box: _Box, lim: Limits, recipients: int, now: float, have: int) -> float:
        """Seconds until ``recipients`` fit in the rolling window (``have`` of them are reserved already)."""
        assert box.state is not None
        spare = lim.recipients_per_window - _recipients_in_use(box.state, now) + have
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
        """The next free time slot at least ``wait`` away, spaced from earlier promises by this instance's
        share of the window (so the instances' rescheduled backlogs together come back at the mailbox's rate)."""
        spacing = lim.message_window_s / max(1, share)
        # Promises further than a window past the first free place only pile up: look again then.
        at = min(max(now + wait, box.reserved_until + spacing), now + wait + lim.message_window_s)
        box.reserved_until = at
        return at - now + random.uniform(0, spacing / 4)

    # --- the shared row -----------------------------------------------------------------------------------
    @property
    def table(self):
        return self.storage.table(BUDGETS_TABLE)

    def _count_call(self) -> None:
        with self._guard:
            self.storage_calls += 1

    def _read(self, box: _Box, key: str) -> None:
        self._count_call()
        try:
            entity = self.table.get_entity(_partition(key), BUDGET_ROW)
        except ResourceNotFoundError:
            box.state, box.etag = {"p": {}, "b": []}, None
            return
        box.state, box.etag = json.loads(entity["state"]), entity.metadata["etag"]

    def _write(self, box: _Box, key: str, state: dict[str, Any]) -> bool:
        """Store ``state`` if the row is still what we last saw; False on a conflict."""
        self._count_call()
        entity = {"PartitionKey": _partition(key), "RowKey": BUDGET_ROW, "state": json.dumps(state)}
        try:
            if box.etag is None:
                meta = self.table.create_entity(entity)
            else:
                meta = self.table.update_entity(
                    entity, mode="replace", etag=box.etag, match_condition=MatchConditions.IfNotModified
                )
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return False
        box.state, box.etag = state, meta["etag"]
        return True

    def _sync(self, box: _Box, key: str, lim: Limits, recipients: int, now: float) -> bool:
        """Renew this instance's share and recipient block (reporting what it used) in one conditional write."""
        if box.state is None:
            self._read(box, key)
        for _ in range(WRITE_ATTEMPTS):
            assert box.state is not None
            state = self._renewed(box, lim, recipients, now)
            if self._write(box, key, state):
                mine = state["p"][self.instance_id]
                logger.debug(
                    "Budget %s: share %d msgs / %d slots, %d recipients reserved, %d participants",
                    _partition(key)[:12],
                    mine["k"],
                    mine["c"],
                    mine["r"],
                    len(state["p"]),
                )
                box.used = []
                return True
            self._read(box, key)
            now = self.clock()
        logger.warning("Budget row of a mailbox stayed contended after %d attempts", WRITE_ATTEMPTS)
        return False

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
        if mine is not None:  # what this instance used since its last write, counted from its admission
            _add_used(state, box.used, daily, self.grace_s)
        for holder, e in list(state["p"].items()):  # leases that ended: their reservation counts as used
            if now >= e["u"] + window and e["tu"] <= now and e["tcu"] <= now:
                _add_used(state, [[e["u"] - self.grace_s, e["r"]]], daily, self.grace_s)
                del state["p"][holder]
        state["b"] = [b for b in state["b"] if b[0] > now]
        live = [h for h, e in state["p"].items() if e["u"] > now] + [self.instance_id]
        others_k = others_c = 0
        for e in state["p"].values():
            k, c = _occupancy(e, now, window)
            others_k, others_c = others_k + k, others_c + c
        # The even split, of what the others leave, and no more than twice what this instance was asked for in
        # the last window (so one with a few messages leaves the rest to the others at once, without a shrink).
        wanted = _wanted(box, lim)
        k = max(0, min(_split(lim.messages_per_window, live, self.instance_id), lim.messages_per_window - others_k))
        k = min(k, wanted)
        c = max(0, min(_split(lim.max_concurrency, live, self.instance_id), lim.max_concurrency - others_c))
        spare = lim.recipients_per_window - _recipients_in_use(state, now)
        per_lease = math.ceil(max(1, k) * (self.lease_s - self.grace_s) / window * box.avg_recipients)
        block = max(recipients, min(per_lease, spare // max(1, len(live))))
        entry = {"k": k, "c": c, "u": now + self.lease_s, "r": max(0, min(block, spare)), "tk": 0, "tu": 0.0}
        entry.update(tc=0, tcu=0.0)
        if mine is not None:  # a shrinking share leaves what it already sent (or has in flight) as a tail
            recent = [s for s in box.sends if not s.done or s.at > now - window]
            tail_until = max((s.at for s in recent if s.done), default=now) + window
            if box.in_flight:
                tail_until = max(tail_until, now + self.grace_s + window)
            if len(recent) > k:
                entry.update(tk=len(recent), tu=tail_until)
            elif mine.get("tu", 0) > now:
                entry.update(tk=mine["tk"], tu=mine["tu"])
            if box.in_flight > c:
                entry.update(tc=box.in_flight, tcu=now + self.grace_s)
        state["p"][self.instance_id] = entry
        return state


def _wanted(box: _Box, lim: Limits) -> int:
    """The share this instance asks for: twice its demand in the last window, at least MIN_ASK."""
    return max(1, min(MIN_ASK, lim.messages_per_window // 4), 2 * len(box.arrivals))


def _partition(key: str) -> str:
    return "m" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _occupancy(e: dict[str, Any], now: float, window: float) -> tuple[int, int]:
    """Messages in the window and requests in flight a participant may account for at ``now``."""
    k = int(e["k"]) if now < e["u"] + window else 0
    if e["tu"] > now:
        k = max(k, int(e["tk"]))
    c = int(e["c"]) if now < e["u"] else 0
    if e["tcu"] > now:
        c = max(c, int(e["tc"]))
    return k, c


def _recipients_in_use(state: dict[str, Any], now: float) -> int:
    """Recipients counted in the rolling window: reported sends, plus every participant's reservation."""
    used = sum(int(n) for leave_at, n in state["b"] if leave_at > now)
    return used + sum(int(e["r"]) for e in state["p"].values())


def _add_used(state: dict[str, Any], used: list[list[float]], daily: float, grace: float) -> None:
    """Put sends (admitted at, recipients) into buckets that leave the window no earlier than Graph's count."""
    width = daily / BUCKETS_PER_WINDOW
    buckets = {b[0]: b for b in state["b"]}
    for admitted_at, n in used:
        if n <= 0:
            continue
        leave_at = math.ceil((admitted_at + grace + daily) / width) * width
        if leave_at in buckets:
            buckets[leave_at][1] += n
        else:
            buckets[leave_at] = [leave_at, n]
            state["b"].append(buckets[leave_at])
