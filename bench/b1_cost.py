"""B1: cost per sent email at steady state, from the emulator's counters.

Mailbridge runs its real queue path (devhost's QueueListener around ``send_queued_message``); the naive
baseline (bench/naive.py) reads, redeems and writes the refresh token for every email. Per-mailbox rate
limits are lifted on both sides: B1 counts calls, B4 measures pacing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from bench.harness import StorageRequests
from bench.naive import NaiveSender


@dataclass
class Cost:
    """Counts for one design over one run."""

    design: str
    emails: int
    mailboxes: int
    sent: int
    graph_calls: int
    token_calls: int
    refresh_grants: int
    kv_ops: int
    wall_s: float
    # Mailbridge only (None for the others): CPU and Storage requests per email, the function's apart from the
    # host role's (devhost's receive/delete, which in Azure the Functions host does in another process).
    function_cpu_ms: float | None = None
    host_cpu_ms: float | None = None
    function_storage: float | None = None
    host_storage: float | None = None

    def per_email(self, field: str) -> float:
        return getattr(self, field) / max(self.emails, 1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def _cost(design: str, emails: int, mailboxes: int, sent: int, delta: dict[str, int], wall: float) -> Cost:
    return Cost(
        design=design,
        emails=emails,
        mailboxes=mailboxes,
        sent=sent,
        graph_calls=sum(v for k, v in delta.items() if k.startswith("calls.graph.")),
        token_calls=delta.get("calls.entra.token", 0),
        refresh_grants=delta.get("entra.grant.refresh_token", 0),
        kv_ops=sum(v for k, v in delta.items() if k.startswith("calls.kv.")),
        wall_s=wall,
    )


def run_mailbridge(kit: Any, emails: int, mailboxes: int) -> Cost:
    """Connect ``mailboxes`` users of ``kit``'s tenant, then send ``emails`` round-robin through the queue.

    The connections are made before the counters are read: connecting is a one-off cost, not per email.
    """
    admin = kit.mb.admin
    users = list(kit.mb.kit.users)[:mailboxes]
    cids = [kit.connect(u) for u in users]
    admin.graph_limits(messages_per_window=100_000, requests_per_window=1_000_000)
    kit.pace(messages_per_window=100_000)
    msgs = [kit.message(cids[i % mailboxes]) for i in range(emails)]
    before = admin.counters()
    start = time.perf_counter()
    try:
        with StorageRequests(kit.mb.env["AzureWebJobsStorage"]) as storage, kit.listener() as listener:
            cpu, own = time.process_time(), time.thread_time()
            for m in msgs:
                kit.put(m)
            recs = kit.wait_final(
                [(m["connection_id"], m["id"]) for m in msgs], timeout=60 + emails * 0.5, events=False
            )
            wall = time.perf_counter() - start
            # The process's CPU less this thread's (the producer's enqueues, polling the records) and less the
            # function's is the host role's: devhost's receive, delete and dispatch.
            process_cpu = time.process_time() - cpu - (time.thread_time() - own)
    finally:
        admin.reset_graph_limits()
    sent = sum(1 for r in recs.values() if r.status == "sent")
    cost = _cost("Mailbridge (queue path)", emails, mailboxes, sent, _delta(before, admin.counters()), wall)
    # devhost times the whole invocation; the output binding's write (the events) inside it is the host's work.
    function_cpu = listener.function_cpu_s - kit.spec.output_cpu_s
    cost.function_cpu_ms = function_cpu * 1000 / emails
    cost.host_cpu_ms = (process_cpu - function_cpu) * 1000 / emails
    cost.function_storage = storage.function / emails
    cost.host_storage = storage.host / emails
    return cost


def run_naive(kit: Any, admin: Any, emails: int, mailboxes: int) -> Cost:
    """The naive design over ``mailboxes`` users of the EmuTenant ``kit`` (its own app registration)."""
    sender = NaiveSender(kit, admin)
    users = list(kit.users)[:mailboxes]
    secrets = [sender.connect(u) for u in users]
    admin.graph_limits(messages_per_window=100_000, requests_per_window=1_000_000)
    before = admin.counters()
    start = time.perf_counter()
    try:
        statuses = [sender.send(secrets[i % mailboxes], "someone@example.com", f"naive {i}") for i in range(emails)]
    finally:
        admin.reset_graph_limits()
    wall = time.perf_counter() - start
    sent = sum(1 for s in statuses if s == 202)
    return _cost("naive (KV + refresh per email)", emails, mailboxes, sent, _delta(before, admin.counters()), wall)
