"""Per-mailbox pacing and steady-state cost, measured with the emulator's counters (the budget's own rules,
with a fake clock: tests/test_budget.py)."""

from __future__ import annotations

from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)


def test_a_backlog_to_one_mailbox_stays_within_4_concurrent_calls_and_its_rate(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    # Scaled-down Exchange limits on both sides: 5 messages / 2 s at Graph, 4 / 2 s in our pacer
    # (a margin for the gap between our admission and Graph's clock); each Graph call holds 0.3 s.
    kit.mb.admin.graph_limits(messages_per_window=5, message_window_s=2, concurrency_hold_ms=300)
    pacer = kit.pace(max_concurrency=4, messages_per_window=4, message_window_s=2.0)
    throttled_before = kit.mb.admin.graph_stats()["throttled"]
    msgs = [kit.message(cid) for _ in range(16)]
    with kit.listener() as listener:  # up to 24 invocations at once, like one Functions instance
        for m in msgs:
            kit.put(m)
        recs = kit.wait_final([(cid, m["id"]) for m in msgs], timeout=90)
    assert {r.status for r in recs.values()} == {"sent"}
    stats = kit.mb.admin.graph_stats()
    assert stats["max_concurrency"][kit.address("alice").lower()] <= 4
    assert max(pacer.peak_in_flight.values()) <= 4
    assert stats["throttled"] == throttled_before, "Graph never had to say 429: we paced ourselves"
    assert sum(r.reschedules for r in recs.values()) > 0, "the backlog was rescheduled, not hammered"
    assert all(r.attempts == 1 for r in recs.values()), "pacing delays never count as send attempts"
    assert listener.failed == 0
    counts = kit.mb.admin.deliveries(mailbox=kit.address("alice"))["counts_by_key"]
    assert all(counts[m["id"]] == 1 for m in msgs)


def test_steady_state_costs_one_graph_call_per_mail_and_almost_no_token_or_vault_calls(send_kit):
    users = ("u1", "u2", "u3", "u4", "u5")
    kit = send_kit(users=users)
    cids = [kit.connect(u) for u in users]
    kit.mb.admin.graph_limits(messages_per_window=1000)
    kit.pace(messages_per_window=1000)
    before = kit.mb.admin.counters()
    msgs = [kit.message(cids[i % 5]) for i in range(200)]
    with kit.listener() as listener:
        for m in msgs:
            kit.put(m)
        recs = kit.wait_final([(m["connection_id"], m["id"]) for m in msgs], timeout=120)
    after = kit.mb.admin.counters()
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    assert {r.status for r in recs.values()} == {"sent"} and listener.failed == 0
    graph_calls = sum(v for k, v in delta.items() if k.startswith("calls.graph."))
    token_calls = delta.get("calls.entra.token", 0)
    vault_ops = sum(v for k, v in delta.items() if k.startswith("calls.kv."))
    print(f"\nsteady state, 200 mails / 5 mailboxes: graph={graph_calls} token={token_calls} kv={vault_ops}")
    assert graph_calls == 200 and delta["calls.graph.sendMail"] == 200, "exactly one Graph call per mail"
    assert token_calls <= 5, "at most one token redemption per mailbox, not per mail"
    assert vault_ops <= 5, "the token cache is read from Key Vault once per mailbox, then kept in memory"
