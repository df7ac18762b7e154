"""The outcome event leaves through the queue function's output binding (issue 18): the host writes it after the
function has returned and before the trigger message is deleted, so the function makes one Storage request less
per email. Run through devhost (which writes queue outputs as the host does) against Azurite and the emulator."""

from __future__ import annotations

import json

from azure.functions.queue import QueueMessage

from bench.harness import StorageRequests
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)

EMAILS = 30


def test_the_function_makes_two_storage_requests_per_email_and_the_host_writes_the_event(send_kit):
    kit = send_kit()
    cids = [kit.connect(user) for user in ("alice", "bob")]
    kit.pace(messages_per_window=100_000)
    warm = [kit.message(cid) for cid in cids]
    with kit.listener():  # warm: token cache, the mailbox's budget share, the connection row
        for m in warm:
            kit.put(m)
        kit.wait_final([(m["connection_id"], m["id"]) for m in warm])
    msgs = [kit.message(cids[i % 2]) for i in range(EMAILS)]
    with StorageRequests(kit.mb.env["AzureWebJobsStorage"]) as storage, kit.listener():
        for m in msgs:
            kit.put(m)
        recs = kit.wait_final([(m["connection_id"], m["id"]) for m in msgs])
    assert {r.status for r in recs.values()} == {"sent"}
    by_target = dict(storage.function_by_target)
    budget = sum(n for what, n in by_target.items() if "mailboxbudgets" in what)
    # The claim (the row) and the final state (into its outgoing-log index row); no event write of its own.
    assert storage.function - budget <= 2 * EMAILS, by_target
    assert "POST messages" not in by_target, by_target  # no queue message written by the function itself
    for m in msgs:  # one event per message, written by the host from the binding
        (event,) = kit.events_for(m["id"])
        assert event["type"] == "mailbridge.message.sent"


def test_a_function_that_fails_after_the_final_row_hands_over_no_event_and_its_redelivery_does(send_kit, monkeypatch):
    """The host writes outputs only when the function returns: a failure after the final row leaves no event;
    the same queue message redelivered publishes it (same CloudEvents id), as after a crash."""
    kit = send_kit()
    cid = kit.connect("alice")
    msg = kit.message(cid)
    cleanup = kit.services.attachments.cleanup
    calls = []

    def fail_once(message):
        calls.append(message.id)
        if len(calls) == 1:
            raise RuntimeError("Storage went away after the final row")
        return cleanup(message)

    monkeypatch.setattr(kit.services.attachments, "cleanup", fail_once)
    queued = QueueMessage(id="q-1", body=json.dumps(msg).encode(), dequeue_count=1)
    try:
        kit.spec.invoke(queued)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the function did not fail")
    assert kit.record(cid, msg["id"]).status == "sent"
    assert kit.events_for(msg["id"]) == [], "a failed invocation hands nothing to the output binding"
    kit.spec.invoke(QueueMessage(id="q-1", body=json.dumps(msg).encode(), dequeue_count=2))
    (event,) = kit.events_for(msg["id"])
    assert event["type"] == "mailbridge.message.sent"
    assert kit.mb.admin.deliveries(key=msg["id"])["count"] == 1, "sent once"
