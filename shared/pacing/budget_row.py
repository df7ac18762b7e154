"""The shared row of one mailbox's budget (shared/pacing/budget.py): its JSON state, ETag-conditional reads and
writes, and the arithmetic of what each participant may be using at a given time.

State: ``{"p": {instance id: entry}, "b": [[leave_at, recipients], ...]}``. An entry is one instance's share:

- ``k`` messages per window and ``c`` concurrency slots, held until ``u`` (the lease end; the share's sends
  count until ``u`` + a window);
- ``t``: its sends that still count in the message window, as ``[leave_at, n]`` (rounded up to 1/32 of the
  window), written when the share is smaller than what it already sent: the others see it shrink as those
  sends leave, not in one step at the last one;
- ``tc`` requests in flight until ``tcu`` (a concurrency share that shrank below what was in flight);
- ``r`` recipients reserved and not yet reported; ``w`` its demand (messages asked about in the last window;
  0 once given back).

``b`` holds the reported recipients in buckets of 1/96 of the recipient window.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

BUDGETS_TABLE = "mailboxbudgets"
BUDGET_ROW = "budget"
BUCKETS_PER_WINDOW = 96  # recipient buckets: 15 minutes of a 24-hour window
TAIL_STEPS = 32  # a published tail's leave times are rounded up to 1/32 of the message window
MIN_SHARE = 4  # messages per window a share starts with (it grows with the instance's demand)
WRITE_ATTEMPTS = 6  # ETag-conditional writes of one row before a caller gives up for now

State = dict[str, Any]


@dataclass(frozen=True)
class Limits:
    """Sending limits of one kind of mailbox (settings; docs/settings.md says where each figure comes from)."""

    messages_per_window: int = 30
    message_window_s: float = 60.0
    recipients_per_window: int = 10_000
    recipient_window_s: float = 86_400.0
    recipients_per_message: int = 500
    max_concurrency: int = 4
    upload_bytes_per_window: int = 150_000_000  # Graph: 150 MB PATCH/POST/PUT per 5 min (shared/pacing/uploads.py)
    upload_window_s: float = 300.0


def wait_until_freed(live: list[list[Any]], over: int, now: float, margin_s: float) -> float:
    """Seconds until the oldest of ``live`` (entries ``[leave_at, n, ...]`` in leave order) free ``over`` units,
    plus ``margin_s``; at most until all have left (one request bigger than the whole budget then goes alone)."""
    freed = 0
    for entry in live:
        freed += int(entry[1])
        if freed >= over:
            return entry[0] - now + margin_s
    return live[-1][0] - now + margin_s


def partition(key: str) -> str:
    return "m" + hashlib.sha256(key.encode()).hexdigest()[:40]


def read(
    table: Any, key: str, *, row_key: str = BUDGET_ROW, empty: State | None = None, **options: Any
) -> tuple[State, str | None]:
    """The row's state and ETag (an empty state and None when no instance has written it yet)."""
    try:
        entity = table.get_entity(partition(key), row_key, **options)
    except ResourceNotFoundError:
        return (empty if empty is not None else {"p": {}, "b": []}), None
    return json.loads(entity["state"]), entity.metadata["etag"]


def write(
    table: Any, key: str, state: State, etag: str | None, *, row_key: str = BUDGET_ROW, **options: Any
) -> str | None:
    """Store ``state`` if the row is still at ``etag`` (created if None); the new ETag, or None on a conflict."""
    entity = {"PartitionKey": partition(key), "RowKey": row_key, "state": json.dumps(state)}
    try:
        if etag is None:
            meta = table.create_entity(entity, **options)
        else:
            match = MatchConditions.IfNotModified
            meta = table.update_entity(entity, mode="replace", etag=etag, match_condition=match, **options)
    except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
        return None
    return meta["etag"]


def tail(leave_times: list[float], window: float) -> list[list[float]]:
    """Sends that leave the window at ``leave_times``, as ``[leave_at, n]`` rounded up to 1/32 of the window."""
    step = window / TAIL_STEPS
    out: dict[float, int] = {}
    for t in leave_times:
        at = round(math.ceil(t / step) * step, 3)
        at = at if at >= t else at + step  # never earlier than the send's own leave time
        out[at] = out.get(at, 0) + 1
    return [[t, n] for t, n in sorted(out.items())]


def occupancy(e: dict[str, Any], now: float, window: float, tails: bool = True) -> tuple[int, int]:
    """Messages in the window and requests in flight a participant may account for at ``now``. Its count of
    sends in the window is never above the larger of its share and its tail: it sends only below its share.
    Without ``tails``: its share alone (what a new share must leave it; the tails are waited out at each send,
    and as they only shrink, a share that fits beside the others' shares stays within the limit)."""
    k = int(e["k"]) if now < e["u"] + window else 0
    if not tails:
        return k, int(e["c"]) if now < e["u"] else 0
    k = max(k, sum(int(n) for t, n in e.get("t", ()) if t > now))
    if e.get("tu", 0) > now:  # a tail written as one step (rows of an earlier version)
        k = max(k, int(e["tk"]))
    c = int(e["c"]) if now < e["u"] else 0
    if e.get("tcu", 0) > now:
        c = max(c, int(e["tc"]))
    return k, c


def changes(e: dict[str, Any], now: float, window: float) -> list[float]:
    """Future times at which what a participant occupies may drop (``x``: a look promised by rows of an earlier
    version, which split the window)."""
    times = [e["u"], e["u"] + window, e.get("tu", 0), e.get("tcu", 0), e.get("x", 0) + 0.05]
    times += [t for t, _ in e.get("t", ())]
    return [t for t in times if t > now]


def live_entry(e: dict[str, Any], now: float) -> bool:
    """Holds a lease and asks for a share (a share given back asks for nothing)."""
    return e["u"] > now and int(e.get("w", 1)) > 0


def sending(e: dict[str, Any], now: float) -> bool:
    """Holds a live share of the window: the instance sending for the mailbox, which the others defer to."""
    return live_entry(e, now) and int(e["k"]) > 0


def lapsed(e: dict[str, Any], now: float, window: float) -> bool:
    """Its lease ended a window ago and nothing of it counts any longer: the entry can go."""
    return now >= e["u"] + window and not changes(e, now, window)


def recipients_in_use(state: State, now: float) -> int:
    """Recipients counted in the rolling window: reported sends, plus every participant's reservation."""
    used = sum(int(n) for leave_at, n in state["b"] if leave_at > now)
    return used + sum(int(e["r"]) for e in state["p"].values())


def add_used(state: State, used: list[list[float]], daily: float, grace: float) -> None:
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


def _copy(state: State) -> State:
    return {"p": {h: dict(e) for h, e in state["p"].items()}, "b": [list(b) for b in state["b"]]}


def _prune(state: State, lim: Limits, now: float, grace_s: float) -> None:
    """Drop the entries of instances whose lease ended a window ago (their reservation counts as sent at the
    lease end) and the recipient buckets that left the window."""
    for holder, e in list(state["p"].items()):
        if lapsed(e, now, lim.message_window_s):
            add_used(state, [[e["u"] - grace_s, e["r"]]], lim.recipient_window_s, grace_s)
            del state["p"][holder]
    state["b"] = [b for b in state["b"] if b[0] > now]


def renewed(
    state: State,
    me: str,
    lim: Limits,
    *,
    now: float,
    lease_s: float,
    grace_s: float,
    wanted: int,
    used: list[list[float]],
    leaving: list[float],
    in_flight: int,
    recipients: int,
    avg_recipients: float,
) -> State:
    """``state`` with ``me``'s share renewed: what it ``used`` reported, lapsed entries dropped (their
    reservations counted as sent), a new share (what the others' shares leave), recipient block and lease, and
    its tail if it sent more than the new share (``leaving``: when its sends leave the window)."""
    window, daily = lim.message_window_s, lim.recipient_window_s
    state = _copy(state)
    mine = state["p"].pop(me, None)
    if mine is not None:  # what this instance used since its last write (else its entry lapsed: counted)
        add_used(state, used, daily, grace_s)
    _prune(state, lim, now, grace_s)
    live = [h for h, e in state["p"].items() if live_entry(e, now)]
    others_k = others_c = 0
    for e in state["p"].values():
        k, c = occupancy(e, now, window, tails=False)
        others_k, others_c = others_k + k, others_c + c
    # Twice its demand, up to everything the others' shares leave: one instance can always use a mailbox's
    # whole window (30 a minute, 4 at once), so while it holds a share the others defer to it rather than split
    # the window (docs/sending.md), and it grows as its demand does. Not the whole window at once: a share
    # counts in full for a window after its instance dies, which would stop the mailbox for that long.
    k = max(0, min(lim.messages_per_window - others_k, max(2 * wanted, MIN_SHARE)))
    c = max(0, lim.max_concurrency - others_c)
    spare = lim.recipients_per_window - recipients_in_use(state, now)
    # What the share can send before its next renewal: its whole window at once at least (a burst).
    per_lease = math.ceil(max(1, k) * max(1.0, (lease_s - grace_s) / window) * avg_recipients)
    block = max(recipients, min(per_lease, spare // max(1, len(live) + 1)))
    entry: dict[str, Any] = {"k": k, "c": c, "w": wanted, "u": now + lease_s, "r": max(0, min(block, spare))}
    if len(leaving) > k:  # a share below what it already sent publishes its tail
        entry["t"] = tail(leaving, window)
    if in_flight > c:
        entry.update(tc=in_flight, tcu=now + grace_s)
    state["p"][me] = entry
    return state


def given_back(
    state: State,
    me: str,
    lim: Limits,
    *,
    now: float,
    grace_s: float,
    used: list[list[float]],
    leaving: list[float],
    in_flight: int,
) -> State | None:
    """``state`` with ``me``'s share given back: what it used reported, its reservation freed, only its tail
    (and requests in flight) left; None if it holds no share."""
    state = _copy(state)
    if state["p"].pop(me, None) is None:
        return None
    add_used(state, used, lim.recipient_window_s, grace_s)
    _prune(state, lim, now, grace_s)
    entry: dict[str, Any] = {"k": 0, "c": 0, "w": 0, "u": now, "r": 0}
    if leaving:
        entry["t"] = tail(leaving, lim.message_window_s)
    if in_flight:
        entry.update(tc=in_flight, tcu=now + grace_s)
    if leaving or in_flight:
        state["p"][me] = entry
    return state
