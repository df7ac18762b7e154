"""Queue trigger on WEBHOOK_QUEUE: one attempt of one signed webhook per invocation (shared/base/webhooks.py).

Returning normally completes the message: a failed attempt has already queued the next one (with its backoff
delay) or recorded the delivery on the poison queue. Only a Storage failure raises, and the host retries."""

from __future__ import annotations

import logging

import azure.functions as func

logger = logging.getLogger(__name__)

webhooks_bp = func.Blueprint()


@webhooks_bp.queue_trigger(arg_name="msg", queue_name="%WEBHOOK_QUEUE%", connection="AzureWebJobsStorage")
def deliver_webhook(msg: func.QueueMessage) -> None:
    """POST one outcome event to WEBHOOK_URL, signed (Standard Webhooks)."""
    from shared.services import get_services

    outcome = get_services().webhooks.deliver(msg.get_body().decode("utf-8", "replace"))
    logger.info("Webhook attempt %d: %s %s", outcome.attempt, outcome.result, outcome.detail)
