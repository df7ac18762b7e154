"""B3: throughput. A backlog of messages over many mailboxes drained by one instance through the real queue
path (devhost's QueueListener with host.json's queue settings) while Graph answers after a fixed latency.

Two runs: Exchange's per-mailbox message limit lifted (the engine's own ceiling: host concurrency, latency,
CPU), and the production limits on both sides (30 messages a minute per mailbox in the emulator, the
default pacer in Mailbridge), where the limit is the ceiling and the figure to watch is the 429 count.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from bench.harness import StorageRequests

ROOT = Path(__file__).resolve().parent.parent


def host_queue_options() -> dict[str, Any]:
    """The queue trigger settings of host.json, as devhost's QueueOptions keywords."""
    from devhost.config import parse_timespan

    q = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    return {
        "batch_size": q["batchSize"],
        "new_batch_threshold": q["newBatchThreshold"],
        "max_polling_interval": parse_timespan(q["maxPollingInterval"], 2.0),
        "visibility_timeout": parse_timespan(q["visibilityTimeout"], 0.0),
        "max_dequeue_count": q["maxDequeueCount"],
        "message_encoding": q["messageEncoding"],
    }


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), for the emulator and Azurite columns."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds spent by this process (the app), the emulator and Azurite from creation to ``stop()``."""

    def __init__(self, stack: Any) -> None:
        self.pids = {"emulator": stack.emulator.pid, "azurite": stack.azurite.process.pid}
        self.spent: dict[str, float] = {}
        self._start = self._now()

    def _now(self) -> dict[str, float]:
        return {"app": time.process_time(), **{name: process_cpu_s(pid) for name, pid in self.pids.items()}}

    def stop(self) -> None:
        self.spent = {name: now - self._start[name] for name, now in self._now().items()}

    def per(self, count: int, unit: str) -> dict[str, float]:
        """``{app,emulator,azurite}_cpu_ms_per_<unit>``."""
        return {f"{name}_cpu_ms_per_{unit}": s * 1000 / max(1, count) for name, s in self.spent.items()}


def backlog_bound_s(per_mailbox: int, limit: int, window_s: float) -> float:
    """Shortest time a sliding window of ``limit`` per ``window_s`` allows for ``per_mailbox`` sends:
    the first ``limit`` at once, each later group a window after the one before."""
    return max(0, math.ceil(per_mailbox / limit) - 1) * window_s


def run(stack: Any, messages: int = 2000, mailboxes: int = 50, latency_ms: int = 50, rate_limits: bool = False):
    """Connect ``mailboxes`` users, enqueue the backlog, then start the listener and time the drain."""
    kit = stack.send_kit(tuple(f"b3u{i}" for i in range(mailboxes)))
    admin = kit.mb.admin
    cids = [kit.connect(u) for u in kit.mb.kit.users]
    options = host_queue_options()
    if not rate_limits:
        admin.graph_limits(messages_per_window=1_000_000, requests_per_window=10_000_000)
        kit.pace(messages_per_window=1_000_000)
    fault = admin.add_fault("graph.*", "latency", latency_ms=latency_ms) if latency_ms else None
    msgs = [kit.message(cids[i % mailboxes]) for i in range(messages)]
    for m in msgs:
        kit.put(m)
    before = admin.counters()
    cpu, start, wall_start = CpuMeter(stack), time.perf_counter(), time.time()
    own = time.thread_time()  # this thread's polling is the bench's, not the app's
    try:
        with StorageRequests(kit.mb.env["AzureWebJobsStorage"]) as storage, kit.listener(**options) as listener:
            # Cheap progress signal (one counter read, no Table scan competing with the sender).
            while (
                admin.counters("graph.messages_sent").get("graph.messages_sent", 0)
                - before.get("graph.messages_sent", 0)
                < messages
                and time.perf_counter() - start < 120 + messages
            ):
                time.sleep(0.25)
            recs = kit.wait_final([(m["connection_id"], m["id"]) for m in msgs], timeout=120, events=False)
            wall = time.perf_counter() - start
            cpu.stop()
            own = time.thread_time() - own
    finally:
        if fault is not None:
            admin.clear_faults("graph.*")
        admin.reset_graph_limits()
    after = admin.counters()
    statuses: dict[str, int] = {}
    for r in recs.values():
        statuses[r.status] = statuses.get(r.status, 0) + 1
    concurrency = options["batch_size"] + options["new_batch_threshold"]
    per_mailbox = math.ceil(messages / mailboxes)
    pacing_bound = backlog_bound_s(per_mailbox, 30, 60.0) if rate_limits else 0.0
    latency_bound = messages * latency_ms / 1000 / concurrency
    return {
        "messages": messages,
        "mailboxes": mailboxes,
        "graph_latency_ms": latency_ms,
        "rate_limits": rate_limits,
        "host_concurrency": concurrency,
        "wall_s": wall,
        "per_s": messages / wall,
        "latency_bound_per_s": messages / latency_bound if latency_bound else None,
        "pacing_floor_s": pacing_bound,
        **cpu.per(messages, "msg"),
        # The app's CPU split: the function's thread time, and the rest (devhost's receive, delete, dispatch:
        # the Functions host's work, another process in Azure), less this bench's own polling.
        # devhost times the whole invocation; the output binding's write (the events) inside it is the host's.
        "function_cpu_ms_per_msg": (listener.function_cpu_s - kit.spec.output_cpu_s) * 1000 / messages,
        "host_cpu_ms_per_msg": (cpu.spent["app"] - own - listener.function_cpu_s + kit.spec.output_cpu_s)
        * 1000
        / messages,
        "function_storage_per_msg": storage.function / messages,
        "host_storage_per_msg": storage.host / messages,
        "function_storage_by_target": dict(storage.function_by_target),
        "cores": os.cpu_count(),
        "graph_calls": sum(v - before.get(k, 0) for k, v in after.items() if k.startswith("calls.graph.")),
        "throttled_429": after.get("graph.throttled", 0) - before.get("graph.throttled", 0),
        "statuses": statuses,
        "reschedules": sum(r.reschedules for r in recs.values()),
        "failed_invocations": listener.failed,
        "completed_after_s": sorted(r.completed_at - wall_start for r in recs.values() if r.completed_at),
    }
