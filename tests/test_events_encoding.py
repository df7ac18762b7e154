"""EVENTS_MESSAGE_ENCODING (issue 28 item 4): events a Functions app can read. With ``base64`` every event on the
events queue and on a callback queue is the base64 of its JSON, which azure-storage-queue's decode policies and a
queue trigger under the default host.json (messageEncoding base64, run by devhost's QueueListener) read; with the
default ``none`` that trigger poisons it, which is why the setting exists. The encoded event still leaves through
the output binding: the function writes no queue message itself. Fails without the setting (the base64 test
finds plain JSON)."""

from __future__ import annotations

import json
import time

import pytest
from azure.functions.queue import QueueMessage
from azure.storage.queue import BinaryBase64DecodePolicy, QueueClient, TextBase64DecodePolicy

from bench.harness import StorageRequests
from devhost.config import QueueOptions
from devhost.functions import FunctionSpec, in_function
from devhost.queues import QueueListener
from shared.base.errors import SettingsError
from shared.base.settings import load_settings
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)
from tests.test_settings import BASE


def send_with_callback(kit, callback_queue: str) -> dict:
    kit.services.storage.queue(callback_queue)  # the operator creates callback queues (Azurite: created here)
    msg = kit.message(kit.connect("alice"), callback={"queue": callback_queue})
    with StorageRequests(kit.mb.env["AzureWebJobsStorage"]) as storage:
        in_function.active = True  # as devhost's listener marks the function's own requests
        try:
            kit.spec.invoke(QueueMessage(id="q-1", body=json.dumps(msg).encode(), dequeue_count=1))
        finally:
            in_function.active = False
    assert kit.record(msg["connection_id"], msg["id"]).status == "sent"
    # The events queue's message is the host's write (output binding); only the callback queue's is the function's.
    assert storage.function_by_target["POST messages"] == 1, dict(storage.function_by_target)
    return msg


def consume_as_functions_app(env: dict[str, str], queue: str, encoding: str) -> tuple[list[dict], int]:
    """A Functions app's queue trigger on ``queue`` under host.json messageEncoding ``encoding`` (devhost's host
    semantics): the events its function got, and how many messages went to the poison queue instead."""
    got: list[dict] = []
    trigger = {"type": "queueTrigger", "direction": "in", "name": "msg", "queueName": queue}
    spec = FunctionSpec(
        "consume_events", trigger, [trigger], lambda msg: got.append(json.loads(msg.get_body())), ["msg"]
    )
    listener = QueueListener(spec, QueueOptions(4, 2, 0.2, 0.0, 1, encoding), env)
    listener.start()
    try:
        deadline = time.monotonic() + 30
        while not got and not listener.poisoned and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        listener.stop()
    return got, listener.poisoned


def test_base64_events_are_read_by_the_sdk_decode_policies_and_a_default_functions_trigger(send_kit):
    kit = send_kit(EVENTS_MESSAGE_ENCODING="base64", CALLBACK_QUEUES="cb-encoded")
    msg = send_with_callback(kit, "cb-encoded")
    conn = kit.mb.env["AzureWebJobsStorage"]
    for queue in (kit.mb.env["EVENTS_QUEUE"], "cb-encoded"):
        (raw,) = QueueClient.from_connection_string(conn, queue).peek_messages()
        assert not raw.content.startswith("{"), "base64, not JSON"
        text = QueueClient.from_connection_string(conn, queue, message_decode_policy=TextBase64DecodePolicy())
        binary = QueueClient.from_connection_string(conn, queue, message_decode_policy=BinaryBase64DecodePolicy())
        (as_text,) = text.peek_messages()
        (as_bytes,) = binary.peek_messages()
        event = json.loads(as_text.content)
        assert json.loads(as_bytes.content) == event
        assert event["type"] == "mailbridge.message.sent" and event["data"]["message_id"] == msg["id"]
    got, poisoned = consume_as_functions_app(dict(kit.mb.env), kit.mb.env["EVENTS_QUEUE"], "base64")
    assert poisoned == 0 and [e["data"]["message_id"] for e in got] == [msg["id"]]


def test_the_default_writes_plain_json_which_a_default_functions_trigger_poisons(send_kit):
    kit = send_kit(CALLBACK_QUEUES="cb-plain")
    msg = send_with_callback(kit, "cb-plain")
    conn = kit.mb.env["AzureWebJobsStorage"]
    (raw,) = QueueClient.from_connection_string(conn, kit.mb.env["EVENTS_QUEUE"]).peek_messages()
    assert json.loads(raw.content)["data"]["message_id"] == msg["id"]  # what the SDK's default client reads
    got, poisoned = consume_as_functions_app(dict(kit.mb.env), kit.mb.env["EVENTS_QUEUE"], "base64")
    assert (got, poisoned) == ([], 1), "a Functions app with the default host.json cannot read plain events"
    got, poisoned = consume_as_functions_app(dict(kit.mb.env), "cb-plain", "none")
    assert poisoned == 0 and [e["data"]["message_id"] for e in got] == [msg["id"]]


def test_the_encoding_setting_takes_none_or_base64():
    assert load_settings(BASE).events_message_encoding == "none"
    assert load_settings({**BASE, "EVENTS_MESSAGE_ENCODING": "BASE64"}).events_message_encoding == "base64"
    with pytest.raises(SettingsError) as info:
        load_settings({**BASE, "EVENTS_MESSAGE_ENCODING": "utf-8"})
    assert info.value.setting == "EVENTS_MESSAGE_ENCODING"
