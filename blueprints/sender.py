"""Queue triggers on OUTBOUND_QUEUE (one mailbridge.send/v1 message per invocation) and on its poison queue.

Returning normally completes (deletes) the message: the pipeline records every outcome itself and
puts a delayed copy back on the queue when it must wait, so the host's own retries (dequeue count,
poison queue) are left for genuine outages. The message's outcome event leaves through a queue output
binding on EVENTS_QUEUE, and with WEBHOOK_URL set its webhook delivery through one on WEBHOOK_QUEUE: the host
writes them after the function returns and before it deletes the trigger message (shared/base/events.py
``EventPublisher.outbox``).
"""

import typing  # no `from __future__ import annotations`: the worker reads Out[...] from the real annotation

import azure.functions as func

sender_bp = func.Blueprint()
Outputs = func.Out[typing.List[str]]  # noqa: UP006


def _run(events: Outputs, webhooks: Outputs, handle: typing.Callable[[typing.Any], object]) -> None:
    from shared.services import get_services  # imported on first use: function_app stays cheap to load

    services = get_services()
    with services.events.outbox() as outbox:
        handle(services.sender)
    if outbox.events:
        events.set(outbox.events)
    if outbox.webhooks:
        webhooks.set(outbox.webhooks)


@sender_bp.queue_trigger(arg_name="msg", queue_name="%OUTBOUND_QUEUE%", connection="AzureWebJobsStorage")
@sender_bp.queue_output(arg_name="events", queue_name="%EVENTS_QUEUE%", connection="AzureWebJobsStorage")
@sender_bp.queue_output(arg_name="webhooks", queue_name="%WEBHOOK_QUEUE%", connection="AzureWebJobsStorage")
def send_queued_message(msg: func.QueueMessage, events: Outputs, webhooks: Outputs) -> None:
    _run(events, webhooks, lambda sender: sender.handle_queue_message(msg.get_body(), msg.id or "no-id"))


@sender_bp.queue_trigger(arg_name="msg", queue_name="%OUTBOUND_QUEUE%-poison", connection="AzureWebJobsStorage")
@sender_bp.queue_output(arg_name="events", queue_name="%EVENTS_QUEUE%", connection="AzureWebJobsStorage")
@sender_bp.queue_output(arg_name="webhooks", queue_name="%WEBHOOK_QUEUE%", connection="AzureWebJobsStorage")
def record_poisoned_message(msg: func.QueueMessage, events: Outputs, webhooks: Outputs) -> None:
    """The host moved a message here after maxDequeueCount failures: record it failed (or unknown) with an
    event, so that no accepted message is ever left without a final status."""
    _run(events, webhooks, lambda sender: sender.handle_poisoned(msg.get_body(), msg.id or "no-id"))
