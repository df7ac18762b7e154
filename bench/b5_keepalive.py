"""B5: the keep-alive sweep at scale. N connections, a third of them due; the timer function's sweep runs once per
concurrency asked for (KEEPALIVE_CONCURRENCY; the due third is made due again before each run) while Entra and Key
Vault answer after a fixed latency. Counts come from the emulator.

Each run starts as the timer's instance would: holding no connection's data key (these connections have been idle
for 60 days), so each refresh unwraps its connection's data key once (issue 26).

The due connections are real: each made through the connect flow (auth code + PKCE at the emulator, token
cache in Key Vault), then aged past REFRESH_AFTER_DAYS. The others are written as rows (connection + keep-alive
index entry due in 60 days) without a grant: a sweep must not touch them at all, and a grant would only make
seeding 10,000 connections take ten minutes. If the sweep did read one, the missing secret would show up as a
Key Vault 404 in the counters and as a failure in the report."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.b3_throughput import CpuMeter
from shared.tokens.refresh import KeepAlive
from shared.tokens.store import Connection, connection_id_for

DAY = 86_400


def _connect_all(kit: Any, users: list[str], workers: int) -> list[str]:
    """The one-off connects (not measured), in parallel like many users connecting at once."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(kit.connect, users))


def _idle_rows(services: Any, count: int, workers: int) -> None:
    """Connected, not due (refreshed just now, due in REFRESH_AFTER_DAYS): rows only, no grant."""
    now = services.clock()
    due_at = now + services.settings.refresh_after_days * DAY

    def write(i: int) -> None:
        conn = Connection(
            connection_id=connection_id_for("bench-tenant", f"idle-{i}"),
            user_ref=f"idle-{i}",
            tenant_id="bench-tenant",
            object_id=f"idle-{i}",
            mailbox=f"idle-{i}@bench.example",
            scopes=["Mail.Send"],
            created_at=now,
            last_refreshed_at=now,
        )
        services.connections.set_refresh_due(conn, due_at)
        services.connections.save(conn)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(write, range(count)))


def make_due(services: Any, connection_ids: list[str]) -> None:
    """Age these connections past REFRESH_AFTER_DAYS: as if their refresh tokens were last used 61 days ago
    (the emulator's own 90-day clock is untouched, so their grants are alive)."""
    threshold = services.settings.refresh_after_days * DAY
    for cid in connection_ids:
        conn = services.connections.get(cid)
        conn.last_refreshed_at -= threshold + DAY
        services.connections.set_refresh_due(conn, conn.last_refreshed_at + threshold)
        services.connections.save(conn)


def run(
    stack: Any,
    connections: int = 10_000,
    due_fraction: float = 1 / 3,
    latency_ms: int = 20,
    workers: int = 6,
    concurrencies: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Seed once, then one sweep per concurrency (default: the settings' KEEPALIVE_CONCURRENCY). The result is the
    first run's figures, with every run's under ``runs``."""
    n_due = round(connections * due_fraction)
    users = tuple(f"k{i}" for i in range(n_due))
    kit = stack.send_kit(users)
    seed_start = time.perf_counter()
    due = _connect_all(kit, list(users), workers)
    make_due(kit.services, due)
    _idle_rows(kit.services, connections - n_due, workers)
    seed_s = time.perf_counter() - seed_start
    runs = []
    for i, concurrency in enumerate(concurrencies or (kit.services.settings.keepalive_concurrency,)):
        if i:
            make_due(kit.services, due)  # the same third, due again: the next run refreshes it all again
        runs.append(_sweep_once(stack, kit, due, connections, concurrency, latency_ms))
    return {**runs[0], "seed_s": seed_s, "runs": runs}


def _sweep_once(
    stack: Any, kit: Any, due: list[str], connections: int, concurrency: int, latency_ms: int
) -> dict[str, Any]:
    admin, services = kit.mb.admin, kit.services
    services.token_caches.forget_keys()  # the timer's instance holds no key of connections idle for 60 days
    for endpoint in ("entra.*", "kv.*"):
        admin.add_fault(endpoint, "latency", latency_ms=latency_ms)
    before = admin.counters()
    cpu, start, since = CpuMeter(stack), time.perf_counter(), services.clock()
    try:
        # What the timer function runs (blueprints/keepalive.py), called directly to keep its report.
        keepalive = KeepAlive(services, concurrency=concurrency)
        report = keepalive.sweep(budget_seconds=services.settings.keepalive_run_seconds)
        wall = time.perf_counter() - start
        cpu.stop()
    finally:
        for endpoint in ("entra.*", "kv.*"):
            admin.clear_faults(endpoint)
    after = admin.counters()
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    still_due = len(services.connections.due_for_refresh(services.clock(), limit=connections))
    refreshed = sum(1 for cid in due if services.connections.get(cid).last_refreshed_at >= since)
    return {
        "connections": connections,
        "due": len(due),
        "latency_ms": latency_ms,
        "wall_s": wall,
        "per_s": refreshed / wall,
        "token_calls": delta.get("calls.entra.token", 0),
        "refresh_grants": delta.get("entra.grant.refresh_token", 0),
        "kv_ops": sum(v for k, v in delta.items() if k.startswith("calls.kv.")),
        "kv_unwraps": delta.get("calls.kv.unwrapKey", 0),
        "kv_reads": delta.get("calls.kv.getSecret", 0),
        "kv_writes": delta.get("calls.kv.setSecret", 0),
        "graph_calls": sum(v for k, v in delta.items() if k.startswith("calls.graph.")),
        "refreshed": refreshed,
        "sweep": report.as_dict(),
        "still_due": still_due,
        "concurrency": concurrency,
        "run_seconds": services.settings.keepalive_run_seconds,
        "cores": os.cpu_count(),
        **cpu.per(len(due), "refresh"),
    }
