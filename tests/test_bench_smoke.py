"""Smoke test of the B1 benchmark harness (bench/b1_cost.py) with tiny numbers: counts only, no timing."""

from __future__ import annotations

from bench.b1_cost import run_mailbridge, run_naive
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
