"""shared/pacing/budget.py against real Azurite with a fake clock: one mailbox's limits shared by several
instances (each a MailboxBudget with its own id, as each Functions instance has its own process) and
surviving a recycle (a new MailboxBudget reads what the old one reserved)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from shared.base.settings import StorageSettings
from shared.base.storage import StorageClients
from shared.pacing.budget import CONSUMER_TENANT_ID, Limits, Mailbox, MailboxBudget
from shared.pacing.budget_row import partition

BOX = Mailbox("11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_budget(storage_conn, unique_name):
    """Factory: ``make_budget(name, **limits)`` -> an instance's budget on one shared table and clock."""
    clock = FakeClock()
    storage = SimpleNamespace(storage=StorageSettings(connection_string=storage_conn), table_prefix=unique_name)

    def make(name: str = "a", lease_s: float = 60.0, max_wait_s: float = 0.0, **limits) -> MailboxBudget:
        lim = Limits(**limits)
        return MailboxBudget(
            StorageClients(storage),
            lim,
            Limits(recipients_per_window=3, recipients_per_message=2, **_rates(limits)),
            lease_s=lease_s,
            max_wait_s=max_wait_s,
            clock=clock,
            instance_id=name,
        )

    make.clock = clock
    return make


def _rates(limits: dict) -> dict:
    return {k: v for k, v in limits.items() if k in ("messages_per_window", "message_window_s", "max_concurrency")}


def _partition(box: Mailbox = BOX) -> str:
    return partition(box.key)


def _send(budget: MailboxBudget, recipients: int = 1, box: Mailbox = BOX):
    adm = budget.admit(box, recipients)
    if adm.admitted:
        adm.report()
    return adm


def test_one_instance_limits_concurrency_messages_and_recipients(make_budget):
    budget = make_budget(
        max_concurrency=2, messages_per_window=3, message_window_s=60, recipients_per_window=10, recipient_window_s=3600
    )
    clock = make_budget.clock
    a, b = budget.admit(BOX, 1), budget.admit(BOX, 1)
    assert a.admitted and b.admitted
    busy = budget.admit(BOX, 1)
    assert not busy.admitted and busy.reason == "concurrency"
    a.report(), b.report()
    assert _send(budget).admitted  # third message of the window
    full = budget.admit(BOX, 1)
    assert not full.admitted and full.reason == "message_rate" and 59 <= full.delay <= 66
    later = [budget.admit(BOX, 1) for _ in range(3)]
    assert all(59 <= a.delay <= 61 for a in later[:2]), "3 sends left together: 3 places in the next window"
    assert 119 <= later[2].delay <= 121, "a backlog gets the window's places in turn, not one thundering herd"
    clock.now += 61
    assert _send(budget, 5).admitted
    big = budget.admit(BOX, 3)
    assert not big.admitted and big.reason == "daily_limit", "3 + 5 + 3 recipients > 10 per hour"
    assert 3500 <= big.delay <= 3700 + 3600 / 96
    clock.now += 3700 + 3600 / 96
    assert _send(budget, 3).admitted


def test_a_send_leaves_the_window_a_full_window_after_graph_answered(make_budget):
    budget = make_budget(max_concurrency=4, messages_per_window=2, message_window_s=10)
    clock = make_budget.clock
    quick, slow = budget.admit(BOX, 1), budget.admit(BOX, 1)
    clock.now += 0.1
    quick.report()
    clock.now += 4.9
    slow.report()
    clock.now += 5.05  # 10 s after both admissions, not after quick's answer
    assert not budget.admit(BOX, 1).admitted
    clock.now += 0.1
    assert _send(budget).admitted
    held = budget.admit(BOX, 1)
    assert not held.admitted and held.reason == "message_rate" and held.delay >= 4.7


def test_the_budget_waits_briefly_in_process_for_a_free_slot(make_budget):
    budget = make_budget(max_concurrency=1, max_wait_s=5)
    first = budget.admit(BOX, 1)
    threading.Timer(0.05, first.report).start()
    assert budget.admit(BOX, 1).admitted


def test_instances_share_one_mailboxs_window_and_never_exceed_it_together(make_budget):
    a = make_budget("a", lease_s=20, messages_per_window=6, message_window_s=10)
    b = make_budget("b", lease_s=20, messages_per_window=6, message_window_s=10)
    clock = make_budget.clock
    assert all(_send(a).admitted for _ in range(6)), "alone, instance a may use the whole window"
    pending = b.admit(BOX, 1)
    assert not pending.admitted and pending.reason == "share_pending", "b defers: a's share is the whole window"
    clock.now += 10.5  # a's sends left the window; its share stands (it is busy: it renews, keeps the window)
    assert not b.admit(BOX, 1).admitted
    clock.now += 0.5
    assert sum(_send(a).admitted for _ in range(7)) == 6, "a renews at half its lease and keeps the whole window"
    clock.now += 3
    sent = sum(_send(b).admitted for _ in range(6)) + sum(_send(a).admitted for _ in range(6))
    assert sent == 0, "6 per window between them, not 6 each"


def test_a_deferring_instance_writes_nothing_and_takes_over_when_the_holder_stops(make_budget):
    """One instance can always use a mailbox's whole window, so the others defer to it rather than split it
    (a split strands parts of the window on instances the queue gives no message to): a deferring instance
    reads the row (at most once per eighth of a window) and writes nothing; it takes over, with what the
    holder's tail leaves, as soon as the holder gives its share back."""
    a = make_budget("a", lease_s=20, messages_per_window=6, message_window_s=8)
    b = make_budget("b", lease_s=20, messages_per_window=6, message_window_s=8)
    clock = make_budget.clock
    start = clock.now
    assert all(_send(a).admitted for _ in range(4))
    for _ in range(5):
        held = b.admit(BOX, 1)
        assert held.reason == "share_pending" and 0 < held.delay <= 8 / 4 + 0.3, "b looks again within 1/4 window"
    assert b.calls_by == {"read first": 1}, f"5 deferrals: one read of the row, no write ({b.calls_by})"
    assert a.table.get_entity(_partition(), "budget")["state"].count('"k"') == 1, "b is not in the row"
    clock.now += 2.1  # a quarter window without a message for the mailbox on a
    assert a.sweep() == 1
    assert sum(_send(b).admitted for _ in range(6)) == 2, "b takes over at once: a's 4 sends still count"
    clock.now = start + 8.05  # a's sends leave the window a window after they were answered
    assert sum(_send(b).admitted for _ in range(6)) == 4
    assert b.calls_by.get("read to join") == 1 and "join" in b.calls_by, "its stale row said defer: read again"


def test_a_recycled_instance_does_not_reset_the_daily_budget(make_budget):
    first = make_budget("old", recipients_per_window=5, recipient_window_s=3600)
    assert _send(first, 2).admitted and _send(first, 3).admitted
    make_budget.clock.now += 120  # the instance dies before reporting its last sends; its lease ends
    fresh = make_budget("new", recipients_per_window=5, recipient_window_s=3600)
    held = fresh.admit(BOX, 1)
    assert not held.admitted and held.reason == "daily_limit", "the dead instance's reservation counts as sent"
    assert 3500 <= held.delay <= 3600 + 3600 / 96 + 1
    make_budget.clock.now += held.delay
    assert _send(fresh, 1).admitted, "the old sends leave the window in their turn"


def test_personal_mailboxes_get_the_consumer_limits(make_budget):
    budget = make_budget(recipients_per_window=100, recipients_per_message=50)
    personal = Mailbox(CONSUMER_TENANT_ID, "33333333-3333-3333-3333-333333333333")
    refused = budget.admit(personal, 3)
    assert refused.error is not None and refused.error.code == "too_many_recipients"
    assert _send(budget, 2, personal).admitted
    assert budget.admit(personal, 2).reason == "daily_limit", "the consumer budget here is 3 a window"
    assert _send(budget, 40).admitted, "a work mailbox of the same app keeps its own, larger budget"


def test_a_message_larger_than_the_whole_daily_budget_fails_at_once(make_budget):
    budget = make_budget(recipients_per_window=4, recipients_per_message=10)
    adm = budget.admit(BOX, 5)
    assert adm.error is not None and adm.error.code == "daily_limit_reached"


def test_an_idle_share_is_given_back_and_the_others_see_its_sends_leave_one_by_one(make_budget):
    a = make_budget("a", lease_s=20, messages_per_window=6, message_window_s=10)
    b = make_budget("b", lease_s=20, messages_per_window=6, message_window_s=10)
    clock = make_budget.clock
    start = clock.now
    for _ in range(3):  # a alone: its share grows to the whole window; it sends 3, one a second
        assert _send(a).admitted
        clock.now += 1
    assert a.sweep() == 0, "not idle yet: a quarter window has not passed since its last message"
    clock.now = start + 5.6
    assert a.sweep() == 1, "nothing for the mailbox on a since 2.5 s: the share goes back, its 3 sends stay"
    assert sum(_send(b).admitted for _ in range(6)) == 3, "b gets what a's sends leave, without a's renewal"
    clock.now = start + 10.4  # a's first send left the window; its other two have not
    assert sum(_send(b).admitted for _ in range(3)) == 1
    clock.now = start + 12.4
    assert sum(_send(b).admitted for _ in range(3)) == 2, "a's last two sends left as well"
    assert not a.sweep() and not b.sweep(), "b was busy a moment ago; a has nothing left to give"


def test_a_graceful_stop_gives_the_share_and_the_unused_recipients_back(make_budget):
    limits = dict(messages_per_window=6, message_window_s=10, recipients_per_window=10, recipient_window_s=3600)
    old = make_budget("old", **limits)
    assert _send(old, 1).admitted and _send(old, 1).admitted
    old.close()  # SIGTERM: the process exits through atexit (shared.services)
    fresh = make_budget("new", **limits)
    assert _send(fresh, 7).admitted, "old's reservation was given back: only its 2 sent recipients count"
    assert _send(fresh, 1).admitted
    held = fresh.admit(BOX, 1)
    assert not held.admitted and held.reason == "daily_limit", "2 + 7 + 1 = the whole budget of 10"


def test_a_dead_senders_small_share_does_not_stop_the_mailbox_for_a_window(make_budget):
    """A share counts in full for a window after its instance dies (its sends since its last write are not in
    the row), so the sender holds twice its demand, not the whole window: after a crash the others lose only
    that much, and only after the dead share's lease (not lease + window, as a whole-window share would cost)."""
    a = make_budget("a", lease_s=4, messages_per_window=100, message_window_s=10)
    b = make_budget("b", lease_s=4, messages_per_window=100, message_window_s=10)
    clock = make_budget.clock
    assert _send(a).admitted and _send(a).admitted  # then a is SIGKILLed: no give-back
    assert b.admit(BOX, 1).reason == "share_pending", "a's lease is live: b defers to it"
    clock.now += 4.1
    assert sum(_send(b).admitted for _ in range(50)) == 50, "a's lease ended: b sends, a's 4 still counted"
