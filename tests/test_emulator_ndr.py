"""The emulated recipient rate limit behaves as Exchange's does (emulator/graph_ndr.py): over the rolling
limit a send is accepted (202) but not delivered, an NDR 5.1.90 lands in the sender's Inbox, and sending
works again once the window's count drops. Personal (Outlook.com) mailboxes have their own, lower limit."""

from __future__ import annotations

from tests import emulator_graph_support as support
from tests.emulator_graph_support import GraphKit

graph_kit = support.graph_kit
graph_limits = support.graph_limits


def _to(n: int) -> list[dict]:
    return [{"emailAddress": {"address": f"r{i}@x.example"}} for i in range(n)]


def test_over_the_recipient_limit_graph_says_202_but_the_mail_bounces(
    graph_kit: GraphKit, graph_limits, emulator_admin
):
    graph_limits.update({"recipients_per_window": 3, "recipient_window_s": 600})
    token = graph_kit.token("alice", lifetime_s=7200)
    alice = graph_kit.addr("alice")
    before = emulator_admin.counters("graph.")
    assert graph_kit.send(token, graph_kit.simple("first", toRecipients=_to(2))).status_code == 202
    over = graph_kit.send(token, graph_kit.simple("second", toRecipients=_to(2)))
    assert over.status_code == 202, "Graph accepts it: the limit is enforced by transport, after the 202"
    assert graph_kit.send(token, graph_kit.simple("third", toRecipients=_to(1))).status_code == 202
    delivered = emulator_admin.delivered(alice)["counts_by_key"]
    assert delivered.get("first") == 1 and delivered.get("third") == 1 and "second" not in delivered
    inbox = emulator_admin.inbox(alice)
    assert [n["idempotencyKey"] for n in inbox["value"]] == ["second"]
    assert inbox["value"][0]["status"] == "5.1.90" and inbox["value"][0]["subject"] == "Undeliverable: second"
    assert inbox["recipients_in_window"] == 3
    after = emulator_admin.counters("graph.")
    assert after.get("graph.recipients_over_limit", 0) - before.get("graph.recipients_over_limit", 0) == 2
    emulator_admin.advance_clock(601)  # the rolling count drops: the mailbox sends again
    assert graph_kit.send(token, graph_kit.simple("fourth", toRecipients=_to(3))).status_code == 202
    assert emulator_admin.delivered(alice)["counts_by_key"].get("fourth") == 1


def test_personal_mailboxes_have_the_lower_consumer_limit(emu_tenant, emulator_admin, graph_limits):
    graph_limits.update({"consumer_recipients_per_window": 2})
    kit = emu_tenant(users=("pat",), kind="personal")
    token = kit.token("pat")
    graph = GraphKit(kit, kit.http())
    assert graph.send(token, graph.simple("a", toRecipients=_to(2))).status_code == 202
    assert graph.send(token, graph.simple("b", toRecipients=_to(1))).status_code == 202
    assert [n["idempotencyKey"] for n in emulator_admin.inbox(kit.users["pat"]["mail"])["value"]] == ["b"]
