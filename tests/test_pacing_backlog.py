"""A backlog longer than the reschedule limit: waiting for the mailbox's turn is not a failed attempt.

A message that waits for its mailbox's message window goes round the queue once per window or so (more often
when another instance sends for the mailbox and this one defers). Exchange allows 30 messages a minute, so a
backlog of a few thousand messages to one mailbox takes hours; if each of those trips counted against the
100 reschedules that bound retries of *failures*, the back of the backlog would end `failed
attempts_exhausted` without ever having been tried. Scaled down here: 2 messages per second, a limit of 3
reschedules, a backlog of 16.
"""

from __future__ import annotations

from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)


def _drain_backlog(kit, cid: str, n: int = 16, max_reschedules: int | None = None):
    """``n`` messages to one mailbox allowed 2 a second (Graph and our budget alike), every wait a queue round
    trip, drained by one in-process instance: (messages, their final records, the listener)."""
    kit.mb.admin.graph_limits(messages_per_window=2, message_window_s=1)
    kit.pace(messages_per_window=2, message_window_s=1.0, max_wait_s=0.0)
    if max_reschedules is not None:  # after pace(): it builds a new sender
        kit.services.sender.max_reschedules = max_reschedules
    msgs = [kit.message(cid) for _ in range(n)]
    with kit.listener() as listener:
        for m in msgs:
            kit.put(m)
        recs = kit.wait_final([(cid, m["id"]) for m in msgs], timeout=120)
    return msgs, recs, listener


def test_a_backlog_longer_than_the_reschedule_limit_is_sent_whole(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    msgs, recs, listener = _drain_backlog(kit, cid, max_reschedules=3)
    statuses = {m["id"]: recs[(cid, m["id"])].status for m in msgs}
    assert set(statuses.values()) == {"sent"}, statuses
    assert listener.failed == 0
    assert max(r.attempts for r in recs.values()) == 1, "one Graph call each"
    counts = kit.mb.admin.deliveries(mailbox=kit.address("alice"))["counts_by_key"]
    assert all(counts[m["id"]] == 1 for m in msgs)


def test_a_message_waiting_longer_than_the_longest_hold_fails_with_a_reason(send_kit):
    """The wait is bounded by time instead (DAILY_LIMIT_MAX_HOLD_SECONDS, 3 days by default; 2 s here): past
    it, `failed attempts_exhausted` saying it waited for the mailbox's turn, with its event; nothing is lost."""
    kit = send_kit(DAILY_LIMIT_MAX_HOLD_SECONDS="2")
    cid = kit.connect("alice")
    msgs, recs, listener = _drain_backlog(kit, cid)
    sent = [r for r in recs.values() if r.status == "sent"]
    failed = [r for r in recs.values() if r.status == "failed"]
    assert len(sent) + len(failed) == 16 and listener.failed == 0
    assert 2 <= len(sent) <= 8, "2 a second for about 2 s, then the rest waited too long"
    reasons = {(r.error_code, "mailbox's turn" in (r.error_detail or "")) for r in failed}
    assert reasons == {("attempts_exhausted", True)}
    assert all(r.attempts == 0 for r in failed), "never tried at Graph"
    assert all(kit.events_for(r.message_id) for r in failed), "each failure has its event"
    counts = kit.mb.admin.deliveries(mailbox=kit.address("alice"))["counts_by_key"]
    assert sum(counts.get(m["id"], 0) for m in msgs) == len(sent)
