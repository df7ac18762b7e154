"""Queue triggers on OUTBOUND_QUEUE (one mailbridge.send/v1 message per invocation) and on its poison queue.

Returning normally completes (deletes) the message: the pipeline records every outcome itself and
puts a delayed copy back on the queue when it must wait, so the host's own retries (dequeue count,
poison queue) are left for genuine outages.
"""

from __future__ import annotations

import azure.functions as func

sender_bp = func.Blueprint()


@sender_bp.queue_trigger(arg_name="msg", queue_name="%OUTBOUND_QUEUE%", connection="AzureWebJobsStorage")
def send_queued_message(msg: func.QueueMessage) -> None:
    from shared.services import get_services  # imported on first use: function_app stays cheap to load

    get_services().sender.handle_queue_message(msg.get_body(), msg.id or "no-id")


@sender_bp.queue_trigger(arg_name="msg", queue_name="%OUTBOUND_QUEUE%-poison", connection="AzureWebJobsStorage")
def record_poisoned_message(msg: func.QueueMessage) -> None:
    """The host moved a message here after maxDequeueCount failures: record it failed (or unknown) with an
    event, so that no accepted message is ever left without a final status."""
    from shared.services import get_services

    get_services().sender.handle_poisoned(msg.get_body(), msg.id or "no-id")
