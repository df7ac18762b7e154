"""Scale-out: three devhost processes (three Functions instances) drain one mailbox's backlog from one
outbound queue against real Azurite and the emulator, with Exchange's limits scaled down on both sides
(5 messages per 4 s, 12 recipients per rolling 16 s). The budget they share (shared/pacing/budget.py) must keep
the mailbox under both: no 429, nothing the emulator NDRs for the recipient limit, every message sent
once, the ones over the daily budget held (``queued``, reason ``daily_limit``) until it frees; and one
instance SIGKILLed and restarted mid-run must not start the daily budget from zero.
"""

from __future__ import annotations

import time

import pytest

from bench.crash import GraphCounts
from bench.fleet import Fleet
from shared.pacing import budget_row
from shared.pacing.budget import BUDGETS_TABLE, Mailbox
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)

MESSAGES = 20
PER_WINDOW, WINDOW_S = 5, 4
DAILY, DAILY_WINDOW_S = 12, 16
APP_SETTINGS = {
    "MAILBOX_MESSAGES_PER_MINUTE": str(PER_WINDOW),
    "MAILBOX_MESSAGE_WINDOW_SECONDS": str(WINDOW_S),
    "MAILBOX_RECIPIENTS_PER_DAY": str(DAILY),
    "MAILBOX_RECIPIENT_WINDOW_SECONDS": str(DAILY_WINDOW_S),
    "MAILBOX_BUDGET_LEASE_SECONDS": "4",
    "MAILBOX_MAX_WAIT_SECONDS": "2",
}


@pytest.mark.slow
def test_three_instances_share_one_mailboxs_limits_and_a_restart_keeps_the_daily_budget(send_kit, tmp_path):
    kit = send_kit(users=("alice",))
    cid = kit.connect("alice")
    admin = kit.mb.admin
    admin.graph_limits(
        messages_per_window=PER_WINDOW,
        message_window_s=WINDOW_S,
        recipients_per_window=DAILY,
        recipient_window_s=DAILY_WINDOW_S,
    )
    before, over_before = GraphCounts.read(admin), admin.counters("graph.").get("graph.recipients_over_limit", 0)
    fleet = Fleet(kit, tmp_path / "fleet", size=3, app_settings=APP_SETTINGS)
    msgs = [kit.message(cid, id=f"scale-{i:03d}", subject=f"Scale #{i}") for i in range(MESSAGES)]
    held: dict[str, str] = {}
    killed = False
    try:
        fleet.start()
        for m in msgs:
            kit.put(m)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            records = {m["id"]: kit.record(cid, m["id"]) for m in msgs}
            for mid, rec in records.items():
                if rec is not None and rec.status == "queued" and rec.public_view()["reason"] == "daily_limit":
                    held[mid] = rec.public_view()["reason"]
            sent = GraphCounts.read(admin).since(before).sent
            if not killed and sent >= 6:
                fleet.kill(0)  # mid-run, with its share and its recipient block in the row
                fleet.start(0)
                killed = True
            if all(r is not None and r.status == "sent" and r.event_emitted for r in records.values()):
                break
            time.sleep(0.3)
    finally:
        fleet.stop()
    final = {m["id"]: kit.record(cid, m["id"]) for m in msgs}
    counts = GraphCounts.read(admin).since(before)
    statuses = {mid: (r.status if r else "missing") for mid, r in final.items()}
    assert killed
    assert set(statuses.values()) == {"sent"}, statuses
    delivered = admin.delivered(kit.address("alice"))["counts_by_key"]
    assert all(delivered.get(m["id"]) == 1 for m in msgs), delivered
    assert counts.throttled == 0, "Graph never had to say 429: the instances shared the mailbox's window"
    over = admin.counters("graph.").get("graph.recipients_over_limit", 0) - over_before
    assert over == 0 and admin.inbox(kit.address("alice"))["count"] == 0, "nothing sent over the daily budget"
    # 20 recipients do not fit in one rolling window of 12: the rest waited for the budget, visibly.
    assert len(held) >= (MESSAGES - DAILY) // 2, held
    assert fleet.count_in_logs("Function send_queued_message failed") == 0
    # The instances stopped gracefully (SIGTERM): they gave their shares and unused recipients back, so a
    # restarted instance finds the window free but for the sends still in it (their tails).
    conn = kit.services.connections.recent(cid)
    state, _ = budget_row.read(kit.services.storage.table(BUDGETS_TABLE), Mailbox(conn.tenant_id, conn.object_id).key)
    assert state["p"], "the instances wrote the mailbox's budget row"
    held_back = {h: (e["k"], e["c"], e["r"]) for h, e in state["p"].items() if e["k"] or e["c"] or e["r"]}
    assert not held_back, held_back


def test_a_message_over_the_daily_budget_is_held_visibly_then_failed_past_the_longest_hold(send_kit):
    kit = send_kit(
        MAILBOX_RECIPIENTS_PER_DAY="2", MAILBOX_RECIPIENT_WINDOW_SECONDS="3600", DAILY_LIMIT_MAX_HOLD_SECONDS="7200"
    )
    cid = kit.connect("alice")
    two = [{"address": "a@example.com"}, {"address": "b@example.com"}]
    first, second = kit.message(cid, to=two), kit.message(cid)
    assert kit.services.sender.process(first, "q-1").status == "sent"
    held = kit.services.sender.process(second, "q-2")
    assert held.status == "queued" and held.delay > 3000, "held until the first mail's recipients leave the window"
    status = kit.mb.json(
        kit.mb.http("get_message", route_params={"message_id": second["id"]}, params={"connection_id": cid})
    )
    assert (status["status"], status["reason"]) == ("queued", "daily_limit")
    assert kit.mb.admin.delivered(kit.address("alice"))["counts_by_key"].get(second["id"]) is None
    record = kit.record(cid, second["id"])
    record.held_since -= 7200  # two hours on hold already: the next hold would pass DAILY_LIMIT_MAX_HOLD_SECONDS
    kit.services.deliveries.update(record)
    failed = kit.services.sender.process(second, "q-3")
    assert failed.status == "failed" and failed.error.code == "daily_limit_reached"
    events = kit.events_for(second["id"])
    assert [e["type"] for e in events] == ["mailbridge.message.failed"]
    assert events[0]["data"]["error"]["code"] == "daily_limit_reached"
    assert kit.mb.admin.delivered(kit.address("alice"))["counts_by_key"].get(second["id"]) is None
