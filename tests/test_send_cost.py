"""Send-path cost (issue 18 goal 1): Storage requests the function makes per sent email at steady state,
counted at the azure-core transport against real Azurite and the emulator. The host's own queue receive and
delete are not the function's (in Azure the Functions host does them outside Python): the messages are
handed to the sender directly, as the queue trigger does."""

from __future__ import annotations

import json

from bench.request_count import storage_hosts
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)
from tests.test_keepalive_cost import storage_requests

EMAILS = 40


def _steady_sends(kit, emails: int = EMAILS):
    """Warm two connections, then count the Storage requests of ``emails`` more sends (round-robin)."""
    cids = [kit.connect(user) for user in ("alice", "bob")]
    kit.pace(messages_per_window=100_000)
    sender = kit.services.sender
    for cid in cids:  # warm: token cache, the mailbox's budget share, the connection row
        assert sender.process(json.dumps(kit.message(cid)), f"warm-{cid}").status == "sent"
    msgs = [kit.message(cids[i % 2]) for i in range(emails)]
    with storage_requests(storage_hosts(kit.mb.env["AzureWebJobsStorage"])) as seen:
        outcomes = [sender.process(json.dumps(m), f"q-{i}").status for i, m in enumerate(msgs)]
    assert outcomes == ["sent"] * emails
    budget = sum(n for what, n in seen.items() if "mailboxbudgets" in what)
    print(f"Storage requests per sent email: {(sum(seen.values()) - budget) / emails} + budget {budget / emails}")
    return msgs, seen, budget


def test_a_sent_email_costs_at_most_three_storage_requests_at_steady_state_when_the_app_writes_its_event(send_kit):
    """Here the sender publishes the event itself (no host around it); in Azure the host writes it from the output
    binding (tests/test_send_event_binding.py: two)."""
    kit = send_kit()
    msgs, seen, budget = _steady_sends(kit)
    # The claim (the row, inserted already `sending`), the final state (written into the message's outgoing-log
    # index row, shared/send/deliveries.py), the event. No batch: it cost more CPU than single requests.
    assert sum(seen.values()) - budget <= 3 * EMAILS, sorted(seen.items())
    assert seen[f"POST {kit.services.settings.events_queue}"] == EMAILS, sorted(seen.items())
    for m in msgs:  # the bookkeeping is all there: a final row and one event per message
        rec = kit.record(m["connection_id"], m["id"])
        assert rec.status == "sent" and rec.attempts == 1 and rec.event_emitted
        assert len(kit.events_for(m["id"])) == 1


def test_the_mailbox_budget_costs_next_to_nothing_per_email_while_a_share_lasts(send_kit):
    """Issue 18 keeps the per-mailbox budget (shared/pacing/budget.py) inside the send path's count: it is paid per
    share or recipient block, not per message (0.15 requests per email at d1554cb with this test's sizes)."""
    _, seen, budget = _steady_sends(send_kit())
    assert budget <= EMAILS / 4, sorted(seen.items())


class WorkerKilled(BaseException):
    """Stands for SIGKILL between the final row and its event (BaseException: no handler catches it)."""


def test_a_run_that_died_before_its_event_publishes_it_on_redelivery_and_a_duplicate_does_not(send_kit, monkeypatch):
    """No ``event_emitted`` write per email: the final row names the run (queue message) that wrote it, and
    that queue message coming back (the host redelivers it after a crash) publishes the event again."""
    kit = send_kit()
    cid = kit.connect("alice")
    msg = json.dumps(kit.message(cid))
    sender = kit.services.sender
    with monkeypatch.context() as m:
        m.setattr(sender.events, "message_outcome", lambda record: (_ for _ in ()).throw(WorkerKilled()))
        try:
            sender.process(msg, "q-first")
        except WorkerKilled:
            pass
        else:
            raise AssertionError("the event was not published")
    mid = json.loads(msg)["id"]
    assert kit.record(cid, mid).status == "sent" and kit.events_for(mid) == []
    assert sender.process(msg, "q-producer-copy").status == "duplicate"
    assert kit.events_for(mid) == [], "another copy of the id does not publish the outcome again"
    assert sender.process(msg, "q-first").status == "duplicate"  # the dead run's message, redelivered
    (event,) = kit.events_for(mid)
    assert sender.process(msg, "q-first").status == "duplicate"
    again = kit.events_for(mid)
    assert len(again) == 2 and again[0]["id"] == again[1]["id"] == event["id"], "one CloudEvents id per outcome"
    assert kit.mb.admin.deliveries(key=mid)["count"] == 1
