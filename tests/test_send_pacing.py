"""Per-mailbox pacing and steady-state cost, measured with the emulator's counters."""

from __future__ import annotations

import threading

from shared.pacing import MailboxPacer
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pacer_limits_concurrency_messages_and_recipients():
    clock = FakeClock()
    pacer = MailboxPacer(
        max_concurrency=2,
        messages_per_window=3,
        message_window_s=60,
        recipients_per_window=10,
        recipient_window_s=3600,
        concurrency_wait_s=0,
        clock=clock,
    )
    a, b = pacer.admit("Box@x", 1), pacer.admit("box@x", 1)
    assert a.admitted and b.admitted
    busy = pacer.admit("box@x", 1)
    assert not busy.admitted and busy.reason == "concurrency" and busy.delay >= 1
    assert pacer.admit("other@x", 1).admitted, "mailboxes are paced independently"
    pacer.release(a)
    pacer.release(b)
    third = pacer.admit("box@x", 1)
    assert third.admitted  # third message of the window
    pacer.release(third)
    full = pacer.admit("box@x", 1)
    assert not full.admitted and full.reason == "messages_per_window" and 59 <= full.delay <= 66
    later = pacer.admit("box@x", 1)
    assert later.delay > full.delay, "a backlog gets spread-out reservations, not one thundering herd"
    clock.now += 61
    big = pacer.admit("box@x", 8)
    assert not big.admitted and big.reason == "recipients_per_window", "3 + 8 recipients > 10 per hour"
    clock.now += 3600
    assert pacer.admit("box@x", 8).admitted


def test_a_send_leaves_the_window_a_full_window_after_graph_answered_not_after_admission():
    """Graph counts a send when it arrives, which is after we admitted it: a slow token lookup or record
    write must not let the next window open early (the cause of B4's one 429 in docs/benchmarks.md)."""
    clock = FakeClock()
    pacer = MailboxPacer(max_concurrency=4, messages_per_window=2, message_window_s=10, clock=clock)
    quick, slow = pacer.admit("box", 1), pacer.admit("box", 1)
    clock.now += 0.1
    pacer.release(quick)
    clock.now += 4.9  # the slow one reached Graph somewhere in these 5 s
    pacer.release(slow)
    clock.now = 1000 + 10.05  # 10 s after both admissions, but not after quick's release
    assert not pacer.admit("box", 1).admitted
    clock.now = 1000 + 10.2  # quick's place is free; slow's is not until 1000 + 15
    freed = pacer.admit("box", 1)
    assert freed.admitted
    pacer.release(freed)
    held = pacer.admit("box", 1)
    assert not held.admitted and held.reason == "messages_per_window" and held.delay >= 4.7


def test_a_full_window_of_sends_still_in_flight_is_full():
    clock = FakeClock()
    pacer = MailboxPacer(max_concurrency=4, messages_per_window=2, message_window_s=10, clock=clock)
    pacer.admit("box", 1), pacer.admit("box", 1)
    clock.now += 60  # both still running (a latency spike): neither has left the window
    blocked = pacer.admit("box", 1)
    assert not blocked.admitted and blocked.reason == "messages_per_window"


def test_pacer_waits_briefly_for_a_free_slot_instead_of_rescheduling():
    pacer = MailboxPacer(max_concurrency=1, concurrency_wait_s=5)
    first = pacer.admit("box", 1)
    threading.Timer(0.05, pacer.release, args=(first,)).start()
    assert pacer.admit("box", 1).admitted


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
    assert pacer.peak_in_flight[kit.address("alice").lower()] <= 4
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
