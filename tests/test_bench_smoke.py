"""Smoke tests of the benchmarks (bench/b1_cost.py, b3_throughput.py, b5_keepalive.py) with tiny numbers:
counts only, no timing."""

from __future__ import annotations

import os
from types import SimpleNamespace

from bench.b1_cost import run_mailbridge, run_naive
from bench.b3_throughput import run as run_throughput
from bench.b5_keepalive import run as run_sweep
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)


def test_b1_harness_counts_one_graph_call_per_email_and_fewer_token_calls_than_naive(send_kit, emu_tenant):
    users = ("u1", "u2")
    kit = send_kit(users=users)
    ours = run_mailbridge(kit, emails=10, mailboxes=2)
    naive = run_naive(emu_tenant(users=users), kit.mb.admin, emails=10, mailboxes=2)
    assert ours.sent == 10 and naive.sent == 10
    assert ours.graph_calls == 10, ours
    assert naive.graph_calls == 10, naive
    assert naive.refresh_grants == 10, "the naive design redeems its refresh token for every email"
    assert naive.kv_ops >= 20, "and reads and writes Key Vault for every email"
    assert ours.token_calls < naive.token_calls, (ours, naive)
    assert ours.kv_ops <= 2, "Mailbridge reads each mailbox's token cache once, then keeps it in memory"


def _stack(send_kit, azurite):
    """What B3/B5 use of a BenchStack, on the test session's services (the emulator runs in this process here,
    so its CPU column means nothing in this test; only counts are asserted)."""
    return SimpleNamespace(
        send_kit=lambda users: send_kit(users=users),
        emulator=SimpleNamespace(pid=os.getpid()),
        azurite=azurite,
    )


def test_b3_drains_a_backlog_under_exchange_limits_with_one_graph_call_each_and_no_429(send_kit, azurite):
    r = run_throughput(_stack(send_kit, azurite), messages=24, mailboxes=4, latency_ms=5, rate_limits=True)
    assert r["statuses"] == {"sent": 24}, r
    assert r["graph_calls"] == 24 and r["throttled_429"] == 0, r
    assert r["host_concurrency"] == 24 and len(r["completed_after_s"]) == 24
    assert r["app_cpu_ms_per_msg"] > 0


def test_b5_sweep_refreshes_exactly_the_due_third_with_one_token_call_and_two_vault_ops_each(send_kit, azurite):
    r = run_sweep(_stack(send_kit, azurite), connections=12, latency_ms=1, workers=2)
    assert r["due"] == 4 and r["refreshed"] == 4 and r["still_due"] == 0, r
    assert (r["token_calls"], r["kv_reads"], r["kv_writes"], r["graph_calls"]) == (4, 4, 4, 0), r
    assert r["sweep"]["skipped"] == 0 and r["sweep"]["transient_failures"] == 0, r
