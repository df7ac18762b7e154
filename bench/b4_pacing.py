"""B4: pacing. A backlog to one mailbox with the emulator's per-mailbox limits scaled down for speed."""

from __future__ import annotations

import time
from typing import Any


def run(kit: Any, messages: int = 300, limit: int = 30, window_s: float = 3.0) -> dict[str, Any]:
    """``messages`` to one mailbox; Graph allows ``limit`` messages per ``window_s`` (Exchange: 30 / 60 s).

    Mailbridge's budget is given exactly Graph's limit, as in production (MAILBOX_MESSAGES_PER_MINUTE=30):
    a send stays in its window until a full window after Graph answered, so no margin is needed.
    """
    admin = kit.mb.admin
    user = next(iter(kit.mb.kit.users))
    cid = kit.connect(user)
    own_limit = limit
    admin.graph_limits(messages_per_window=limit, message_window_s=window_s)
    kit.pace(max_concurrency=4, messages_per_window=own_limit, message_window_s=window_s)
    throttled_before = admin.counters("graph.throttled").get("graph.throttled", 0)
    msgs = [kit.message(cid) for _ in range(messages)]
    start = time.perf_counter()
    try:
        with kit.listener() as listener:
            for m in msgs:
                kit.put(m)
            timeout = 60 + messages * window_s / limit * 3
            recs = kit.wait_final([(cid, m["id"]) for m in msgs], timeout=timeout, events=False)
        times = sorted(kit.record(cid, m["id"]).completed_at for m in msgs)
    finally:
        admin.reset_graph_limits()
    wall = time.perf_counter() - start
    throttled = admin.counters("graph.throttled").get("graph.throttled", 0)
    rate = messages / wall
    limit_rate = limit / window_s
    return {
        "messages": messages,
        "limit_per_window": limit,
        "window_s": window_s,
        "pacer_limit_per_window": own_limit,
        "wall_s": wall,
        "achieved_per_s": rate,
        "limit_per_s": limit_rate,
        "fraction_of_limit": rate / limit_rate,
        "throttled_429": throttled - throttled_before,
        "sent": sum(1 for r in recs.values() if r.status == "sent"),
        "reschedules": sum(r.reschedules for r in recs.values()),
        "attempts": sum(r.attempts for r in recs.values()),
        "failed_invocations": listener.failed,
        "completed_at": times,
    }
