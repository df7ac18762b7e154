"""Per-mailbox pacing and steady-state cost, measured with the emulator's counters (the budget's own rules,
with a fake clock: tests/test_budget.py)."""

from __future__ import annotations

import pytest

from shared.base import errors
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


class CountedReports:
    """The app's own budget seen through pacing's door (shared/pacing/admission.py), its reports counted."""

    def __init__(self, budget) -> None:
        self.budget, self.admitted, self.reported = budget, 0, 0

    def admit(self, mailbox, recipients, upload_bytes=0):
        admission = self.budget.admit(mailbox, recipients, upload_bytes)
        if admission.admitted:
            self.admitted += 1
            give_back = admission.give_back

            def counted() -> None:
                self.reported += 1
                give_back()

            admission.give_back = counted
        return admission


def test_every_admitted_attempt_reports_to_pacing_exactly_once_whatever_ends_it(send_kit, monkeypatch):
    """Issue 24: the sender asks pacing once per attempt and reports once, on every path (sent, Graph's refusal,
    an ambiguous answer, a token failure before Graph, a bug raising out of the attempt), so no slot leaks: with
    one concurrency slot and no in-process wait, a leaked slot would hold the next message back."""
    kit = send_kit()
    cid = kit.connect("alice")
    counted = CountedReports(kit.pace(max_concurrency=1, max_wait_s=0))
    sender = kit.services.sender
    monkeypatch.setattr(sender, "budget", counted)
    ended = {"sent": sender.process(kit.message(cid), "q-sent").status}
    kit.mb.admin.add_fault("graph.sendMail", "503", count=1)
    ended["refused"] = sender.process(kit.message(cid), "q-503").status
    kit.mb.admin.add_fault("graph.sendMail", "504_after", count=1)
    ended["ambiguous"] = sender.process(kit.message(cid), "q-504").status

    def token_unavailable(conn):
        raise errors.TemporarilyUnavailable(detail="the token endpoint answered 503")

    def a_bug(*args, **kwargs):
        raise RuntimeError("a bug")

    with monkeypatch.context() as m:
        m.setattr(sender, "_token", token_unavailable)
        ended["token"] = sender.process(kit.message(cid), "q-token").status
    with monkeypatch.context() as m:
        m.setattr(sender.graph, "send_mail", a_bug)
        with pytest.raises(RuntimeError):
            sender.process(kit.message(cid), "q-bug")
    ended["after"] = sender.process(kit.message(cid), "q-after").status
    assert ended == {
        "sent": "sent",
        "refused": "queued",
        "ambiguous": "unknown",
        "token": "queued",
        "after": "sent",
    }, ended
    assert counted.admitted == 6 and counted.reported == 6, (counted.admitted, counted.reported)
