"""Producers (docs/producers.md): the Python example drops a message Mailbridge's queue function accepts and
sends, against real Azurite and the emulator; what a producer's `callback.queue` can make Mailbridge write.

Azurite accepts a token credential only over HTTPS and the test Azurite speaks HTTP, so the example runs with
an account-key credential in the same `QueueClient(account_url, queue, credential)` call that uses
`DefaultAzureCredential()` in Azure: the encoding and queue path under test are the same. Whether the identity
may send is the Bicep's job (queue-scoped Storage Queue Data Message Sender, asserted in tests/test_infra.py).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import uuid
from pathlib import Path

from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ResourceNotFoundError

from stack.azurite import ACCOUNT, ACCOUNT_KEY
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "docs" / "examples" / "queue_producer.py"


def load_example():
    spec = importlib.util.spec_from_file_location("queue_producer", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def queue_url(azurite) -> str:
    return f"http://{azurite.host}:{azurite.ports['queue']}/{ACCOUNT}"


def test_the_docs_show_the_tested_example_verbatim():
    text = (REPO / "docs" / "producers.md").read_text(encoding="utf-8")
    assert f"```python\n{EXAMPLE.read_text(encoding='utf-8')}```" in text


def test_python_example_drops_plain_json_that_mailbridge_sends(send_kit, azurite):
    kit = send_kit()
    cid = kit.connect("alice")
    message = kit.message(cid, subject="From a producer")
    outbound = kit.mb.env["OUTBOUND_QUEUE"]
    kit.services.storage.queue(outbound)  # infra creates it in Azure; Azurite starts empty
    queue_message_id = load_example().send_mail(
        message,
        account_url=queue_url(azurite),
        queue_name=outbound,
        credential=AzureNamedKeyCredential(ACCOUNT, ACCOUNT_KEY),
    )
    # What is on the queue is the JSON text itself (host.json messageEncoding "none"), not base64.
    (peeked,) = kit.services.storage.queue(outbound).peek_messages(max_messages=5)
    assert peeked.id == queue_message_id and json.loads(peeked.content) == message
    assert peeked.content != base64.b64encode(json.dumps(message).encode()).decode()
    with kit.listener():
        record = kit.wait_final([(cid, message["id"])])[(cid, message["id"])]
    assert record.status == "sent" and record.attempts == 1
    (item,) = kit.mb.admin.sent_items(kit.address("alice"), key=message["id"])
    assert item["subject"] == "From a producer"
    (event,) = kit.events_for(message["id"])
    assert event["type"] == "mailbridge.message.sent"


def test_a_callback_queue_gets_the_event_and_the_outbound_queues_never_do(send_kit):
    """A producer may name a queue the operator allowed (CALLBACK_QUEUES) for its events; the outbound queue,
    its poison queue and the Functions host's own queues are refused (callback_queue_not_allowed, nothing sent):
    Mailbridge must never feed a message back into its sender or write into the host's bookkeeping."""
    mine = f"cb-{uuid.uuid4().hex[:8]}"
    kit = send_kit(CALLBACK_QUEUES=mine)
    cid = kit.connect("alice")
    outbound = kit.mb.env["OUTBOUND_QUEUE"]
    host_queue = f"azure-webjobs-blobtrigger-{outbound}"[:63]
    for name in (mine, f"{outbound}-poison", host_queue):
        kit.services.storage.queue(name)  # creates it if missing, as infra or the producer would
    messages = {
        "mine": kit.message(cid, callback={"queue": mine}),
        "outbound": kit.message(cid, callback={"queue": outbound}),
        "poison": kit.message(cid, callback={"queue": f"{outbound}-poison"}),
        "host": kit.message(cid, callback={"queue": host_queue}),
    }
    with kit.listener():
        for message in messages.values():
            kit.put(message)
        records = kit.wait_final([(cid, m["id"]) for m in messages.values()])
        statuses = {
            name: (records[(cid, m["id"])].status, records[(cid, m["id"])].error_code) for name, m in messages.items()
        }
        refused = ("rejected", "callback_queue_not_allowed")
        assert statuses == {"mine": ("sent", None), "outbound": refused, "poison": refused, "host": refused}
        kit.wait_until(lambda: kit.queue_length(outbound) == 0)
    (event,) = kit.events(mine)
    assert event["data"]["message_id"] == messages["mine"]["id"]
    assert kit.events(f"{outbound}-poison") == [] and kit.events(host_queue) == []
    # Every message has its one event on EVENTS_QUEUE, and nothing came back onto the outbound queue.
    for message in messages.values():
        assert len(kit.events_for(message["id"])) == 1
    assert kit.queue_length(outbound) == 0
    assert messages_in(kit, f"{outbound}-poison") == 0


def test_a_callback_queue_that_does_not_exist_costs_the_message_nothing(send_kit, caplog):
    """Mailbridge does not create queues a producer names. A missing one is skipped with a warning: the message
    is sent once, its event is on EVENTS_QUEUE once, and nothing is retried or moved to the poison queue."""
    caplog.set_level(logging.WARNING, logger="shared.base.events")
    missing = f"nothere-{uuid.uuid4().hex[:8]}"
    kit = send_kit(CALLBACK_QUEUES=missing)  # allowed by the operator, but nobody created it
    cid = kit.connect("alice")
    message = kit.message(cid, callback={"queue": missing})
    with kit.listener():
        kit.put(message)
        record = kit.wait_final([(cid, message["id"])])[(cid, message["id"])]
        kit.wait_until(lambda: kit.queue_length() == 0)
    assert record.status == "sent" and record.attempts == 1
    assert len(kit.events_for(message["id"])) == 1
    assert messages_in(kit, f"{kit.mb.env['OUTBOUND_QUEUE']}-poison") == 0
    assert messages_in(kit, missing) is None, "Mailbridge must not create a producer's queue"
    assert any(missing in r.getMessage() and "does not exist" in r.getMessage() for r in caplog.records)


def messages_in(kit, name: str) -> int | None:
    """Approximate message count of a queue, None when the queue does not exist."""
    try:
        queue = kit.services.storage.queues.get_queue_client(name)  # not storage.queue(): that creates it
        return int(queue.get_queue_properties().approximate_message_count)
    except ResourceNotFoundError:
        return None
