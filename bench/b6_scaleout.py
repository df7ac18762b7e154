"""B6: scale-out. The same backlog drained by 1 and by 3 Mailbridge instances (devhost processes on one
storage account, bench/fleet.py), with Exchange's per-mailbox limits scaled down on both sides: one mailbox
at its limit, then many mailboxes. Per run: fraction of the limit reached, Graph 429s, recipients the
emulator NDR'd for the daily limit, Storage requests per message (all of them, and those of the shared
budget alone: the extra round trips it costs), and the instances' CPU per message.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.b3_throughput import backlog_bound_s, process_cpu_s
from bench.crash import GraphCounts
from bench.fleet import Fleet


def run(
    stack: Any,
    instances: int,
    mailboxes: int,
    messages: int,
    limit: int,
    window_s: float,
    lease_s: int = 6,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """``messages`` spread over ``mailboxes`` (each allowed ``limit`` per ``window_s``), drained by ``instances``."""
    users = tuple(f"b6u{i}" for i in range(mailboxes))
    kit = stack.send_kit(users)
    admin = kit.mb.admin
    cids = [kit.connect(u) for u in users]
    admin.graph_limits(messages_per_window=limit, message_window_s=window_s)
    settings = {
        "MAILBOX_MESSAGES_PER_MINUTE": str(limit),
        "MAILBOX_MESSAGE_WINDOW_SECONDS": str(int(window_s)),
        "MAILBOX_BUDGET_LEASE_SECONDS": str(lease_s),
        "MAILBOX_MAX_WAIT_SECONDS": str(int(min(window_s, 5))),  # well inside the 15 s queue lease (bench.fleet)
    }
    fleet = Fleet(kit, Path(tempfile.mkdtemp(prefix="b6-")), size=instances, app_settings=settings)
    msgs = [kit.message(cids[i % mailboxes]) for i in range(messages)]
    before = GraphCounts.read(admin)
    over_before = admin.counters("graph.").get("graph.recipients_over_limit", 0)
    try:
        fleet.start()
        cpu0 = sum(process_cpu_s(h.proc.pid) for h in fleet.hosts)
        start = time.perf_counter()
        for m in msgs:
            kit.put(m)
        while GraphCounts.read(admin).since(before).sent < messages and time.perf_counter() - start < timeout_s:
            time.sleep(0.1)
        wall = time.perf_counter() - start
        recs = kit.wait_final([(m["connection_id"], m["id"]) for m in msgs], timeout=120)
        cpu = sum(process_cpu_s(h.proc.pid) for h in fleet.hosts) - cpu0
    finally:
        fleet.stop()
        admin.reset_graph_limits()
    stats = fleet.stats()
    counts = GraphCounts.read(admin).since(before)
    per_mailbox = math.ceil(messages / mailboxes)
    limit_rate = mailboxes * limit / window_s
    statuses: dict[str, int] = {}
    for r in recs.values():
        statuses[r.status] = statuses.get(r.status, 0) + 1
    return {
        "instances": instances,
        "mailboxes": mailboxes,
        "messages": messages,
        "limit_per_window": limit,
        "window_s": window_s,
        "lease_s": lease_s,
        "wall_s": wall,
        "achieved_per_s": messages / wall,
        "limit_per_s": limit_rate,
        "fraction_of_limit": messages / wall / limit_rate,
        "drain_floor_s": backlog_bound_s(per_mailbox, limit, window_s),
        "throttled_429": counts.throttled,
        "recipients_over_limit": admin.counters("graph.").get("graph.recipients_over_limit", 0) - over_before,
        "storage_calls_per_msg": stats["storage_calls"] / messages,
        "budget_calls_per_msg": stats["budget_calls"] / messages,
        "app_cpu_ms_per_msg": cpu * 1000 / messages,
        "reschedules": sum(r.reschedules for r in recs.values()),
        "statuses": statuses,
        "completed_at": sorted(r.completed_at for r in recs.values() if r.completed_at),
    }


def runs(stack: Any, size: str = "full") -> list[dict[str, Any]]:
    """One mailbox at its limit, then many mailboxes, each with 1 and then 3 instances (``size``: full, quick, or
    smoke, the smallest run that still makes the budget defer: the suite's check that B6 runs at all)."""
    one = ({"full": 300, "quick": 90, "smoke": 8}[size], 30, 3.0)  # B4's scaled Exchange limit: 30 messages / 3 s
    # Many mailboxes: each allowed 6 messages per 40 s, so 50 of them together allow 7.5 / s (this machine's
    # CPU, not the limit, would bind at B4's rate); 8 messages each: 6 at once, 2 a window later.
    many = (50, 8, 6, 40.0) if size == "full" else (10, 8, 6, 40.0) if size == "quick" else (2, 3, 2, 3.0)
    out = []
    for instances in (1, 3):
        print(f"B6: {one[0]} messages to one mailbox, {instances} instance(s) ...", flush=True)
        out.append(run(stack, instances, 1, one[0], one[1], one[2]))
    for instances in (1, 3):
        print(f"B6: {many[0]} mailboxes x {many[1]} messages, {instances} instance(s) ...", flush=True)
        out.append(run(stack, instances, many[0], many[0] * many[1], many[2], many[3], lease_s=20))
    return out
