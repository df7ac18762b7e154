"""One instance's view of one mailbox's budget (shared/pacing/budget.py): the row as it last read or wrote it, its
own sends in the message window, and the local decisions made from them without Storage: how long a
message must wait and why, what share to ask for, and when to promise a rescheduled message its place."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

from shared.pacing import budget_row as row
from shared.pacing.budget_row import Limits


def look_again_s(lim: Limits) -> float:
    """How long an instance held back by the others waits before it looks at the row again: a quarter window."""
    return max(lim.message_window_s / 4, 0.2)


@dataclass
class Send:
    at: float  # admission time while in flight, Graph's answer after
    done: bool = False
    used: list[float] | None = None  # its [admitted at, recipients] entry of MailboxView.used


@dataclass
class MailboxView:
    """Guarded by ``cond`` (``arrivals`` by the budget's own lock: it is counted before ``cond`` is taken)."""

    me_id: str
    grace_s: float  # a send admitted now reaches Graph within this
    cond: threading.Condition = field(default_factory=threading.Condition)
    lim: Limits | None = None
    state: dict[str, Any] | None = None  # the row's state as last read or written
    etag: str | None = None
    sends: list[Send] = field(default_factory=list)  # in flight, or answered within the message window
    in_flight: int = 0
    waiting: int = 0  # admit() calls in progress
    used: list[list[float]] = field(default_factory=list)  # [admitted at, recipients] not yet reported
    resync_at: float = 0.0  # earliest time to look at the row again for a larger share
    read_at: float = float("-inf")  # when the row was last read or written (``state``)
    promises: list[float] = field(default_factory=list)  # times promised to rescheduled messages
    arrivals: list[float] = field(default_factory=list)  # admit() calls within the message window: demand
    last_arrival: float = 0.0
    avg_recipients: float = 1.0

    @property
    def me(self) -> dict[str, Any] | None:
        return self.state["p"].get(self.me_id) if self.state else None

    def share_lasts(self, recipients: int, now: float) -> bool:
        """This instance holds a share with at least half its lease left (renewed at half the lease, so a send
        admitted now reaches Graph within it) and a reservation that covers ``recipients``."""
        me = self.me
        return me is not None and me["u"] - now >= self.grace_s and self.unreserved(me) >= recipients

    def unreserved(self, me: dict[str, Any]) -> int:
        return int(me["r"]) - sum(int(n) for _, n in self.used)

    @property
    def sharing(self) -> bool:
        """This instance holds a share of the window (``k`` > 0): it sends for the mailbox, or may."""
        me = self.me
        return me is not None and int(me["k"]) > 0

    def wanted(self) -> int:
        """This instance's demand for the mailbox, published as the entry's ``w``: messages asked about in the
        last window rounded up to a power of two (at least 1)."""
        demand = len(self.arrivals)
        return 1 << max(0, demand - 1).bit_length() if demand > 0 else 1

    def deferred(self, lim: Limits, now: float) -> float | None:
        """Seconds until this instance may take the mailbox when another instance holds a live share of it (it
        sends for the mailbox and grows with its demand) or the others' shares and tails fill the window, else
        None. Nothing is written: the others need not know."""
        others_k, others_c, changes = self.others(lim, now)
        assert self.state is not None
        held = any(row.sending(e, now) for h, e in self.state["p"].items() if h != self.me_id)
        if not held and others_k < lim.messages_per_window and others_c < lim.max_concurrency:
            return None
        return max(0.05, min(changes, now + look_again_s(lim)) - now)

    def leave_times(self, lim: Limits, now: float) -> list[float]:
        """When this instance's sends leave the message window: a window after Graph's answer, or for one in
        flight a window after the latest it reaches Graph."""
        window = lim.message_window_s
        return [
            s.at + window + (0 if s.done else self.grace_s) for s in self.sends if not s.done or s.at > now - window
        ]

    def full_until(self, lim: Limits, now: float) -> float:
        """When the sends known to be in the window (this instance's own, the tails in the cached row) leave
        room for one more: a lower bound on when the mailbox can send, whatever the row says now (the known
        sends only leave; shares the cached row shows may have been given back since)."""
        assert self.state is not None
        leaving = [t for t in self.leave_times(lim, now) if t > now]
        for holder, e in self.state["p"].items():
            if holder != self.me_id:
                leaving += [t for t, n in e.get("t", ()) if t > now for _ in range(int(n))]
        excess = len(leaving) - lim.messages_per_window
        return sorted(leaving)[excess] if excess >= 0 else now

    def others(self, lim: Limits, now: float) -> tuple[int, int, float]:
        """Messages and concurrency the other participants may be using now, and when that next drops."""
        assert self.state is not None
        msgs = conc = 0
        changes = now + lim.message_window_s
        for holder, e in self.state["p"].items():
            if holder == self.me_id:
                continue
            k, c = row.occupancy(e, now, lim.message_window_s)
            msgs, conc = msgs + k, conc + c
            changes = min([changes, *row.changes(e, now, lim.message_window_s)])
        return msgs, conc, changes

    def wait(self, me: dict[str, Any], lim: Limits, recipients: int, now: float) -> tuple[float, str]:
        """Seconds this message must wait (0: send now) and why."""
        window = lim.message_window_s
        self.sends = [s for s in self.sends if not s.done or s.at > now - window]
        others_k, others_c, changes = self.others(lim, now)
        cap_k = min(int(me["k"]), lim.messages_per_window - others_k)
        cap_c = min(int(me["c"]), lim.max_concurrency - others_c)
        if self.unreserved(me) < recipients:
            return self.daily_wait(lim, recipients, now, self.unreserved(me)), "daily_limit"
        if cap_k <= 0 or cap_c <= 0:
            # No room yet (the others have not shrunk, or their tails have not left): look again then.
            self.resync_at = min(changes, now + look_again_s(lim))
            return max(0.05, self.resync_at - now), "share_pending"
        if len(self.sends) >= cap_k:
            finished = [s.at + window for s in self.sends if s.done]
            if len(self.sends) < int(me["k"]):  # bound by the others' tails, not by its own sends
                finished.append(changes)
            wait = (min(finished) - now) if finished else window / max(1, cap_k)
            return max(wait, 0.01), "message_rate"
        if self.in_flight >= cap_c:
            return 0.5, "concurrency"  # a report notifies the waiters sooner
        return 0.0, ""

    def daily_wait(self, lim: Limits, recipients: int, now: float, have: int) -> float:
        """Seconds until ``recipients`` fit in the rolling window (``have`` of them are reserved already)."""
        assert self.state is not None
        spare = lim.recipients_per_window - row.recipients_in_use(self.state, now) + have
        for leave_at, n in sorted(self.state["b"]):
            if leave_at <= now:
                continue
            spare += n
            if spare >= recipients:
                return leave_at - now
        # What is left is reserved by other instances: their next renewal gives back what they did not use.
        return max(self.grace_s, 1.0)

    def take(self, recipients: int, now: float) -> Send:
        send = Send(now, used=[now, recipients])
        self.sends.append(send)
        self.in_flight += 1
        self.used.append(send.used)
        self.avg_recipients = 0.8 * self.avg_recipients + 0.2 * recipients
        return send

    def withdraw(self, send: Send) -> None:
        """Take back a send that never reached Graph: out of the message window and the unreported recipients."""
        self.sends = [s for s in self.sends if s is not send]
        self.used = [u for u in self.used if u is not send.used]

    def promise(self, lim: Limits, share: int, now: float, wait: float) -> float:
        """The first time at least ``wait`` away when this instance's sends and earlier promises leave room in
        its share's sliding window (so the instances' rescheduled backlogs come back at the mailbox's rate)."""
        window = lim.message_window_s
        self.promises = [p for p in self.promises if p > now - window]
        counted = sorted([s.at for s in self.sends] + self.promises)
        at = max([now + wait, *self.promises[-1:]])
        while True:
            inside = [t for t in counted if at - window < t <= at]
            if len(inside) < max(1, share):
                break
            at = inside[0] + window + 0.01
        # Promises further than a window past the first free place only pile up: look again then.
        at = min(at, now + wait + window)
        self.promises.append(at)
        return at - now + random.uniform(0, min(0.25, window / max(1, share) / 4))

    def renewed(self, lim: Limits, lease_s: float, recipients: int, now: float) -> dict[str, Any]:
        """The row with this instance's share renewed (what it used reported): see row.renewed."""
        assert self.state is not None
        return row.renewed(
            self.state,
            self.me_id,
            lim,
            now=now,
            lease_s=lease_s,
            grace_s=self.grace_s,
            wanted=self.wanted(),
            used=self.used,
            leaving=self.leave_times(lim, now),
            in_flight=self.in_flight,
            recipients=recipients,
            avg_recipients=self.avg_recipients,
        )

    def given_back(self, lim: Limits, now: float) -> dict[str, Any] | None:
        """The row with this instance's share given back (None: it holds none): see row.given_back."""
        assert self.state is not None
        return row.given_back(
            self.state,
            self.me_id,
            lim,
            now=now,
            grace_s=self.grace_s,
            used=self.used,
            leaving=self.leave_times(lim, now),
            in_flight=self.in_flight,
        )
