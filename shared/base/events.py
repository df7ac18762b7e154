"""Outcome events on the events queue (EVENTS_QUEUE): CloudEvents 1.0 JSON, plain text, one per outcome.

Types (``type`` is ``mailbridge.`` + the name): ``message.sent``, ``message.failed``,
``message.unknown``, ``message.rejected``, ``message.canceled`` (DELETE /api/messages/{id}),
``connection.reauth_required``, and once per episode of a mailbox state (shared/send/mailbox_state.py)
``connection.mailbox_unavailable``, ``connection.sending_blocked``,
``connection.mailbox_full``, ``connection.sending_quota``, then ``connection.mailbox_restored`` when it ends.
The shape is CloudEvents' structured JSON mode, so Event Grid, Logic Apps and Functions can route them unchanged::

    {"specversion": "1.0", "type": "mailbridge.message.sent", "source": "/mailbridge",
     "id": "<uuid>", "time": "<RFC 3339>", "subject": "connections/<id>/messages/<id>",
     "datacontenttype": "application/json", "data": {...}}

A message's event also goes to its ``callback.queue`` when given: an **existing** queue of the same storage
account that the operator listed in CALLBACK_QUEUES (settings refuse our own outbound queue and its poison
queue there, so a producer cannot loop mail back into the sender, and the Functions host's own
``azure-webjobs-*`` queues). Any other queue is refused when the message is validated
(``callback_queue_not_allowed``, shared.send.limits.check_limits); the publisher checks the list again, for messages
rejected before validation. Mailbridge never creates a callback queue (a producer could otherwise make it
create, and cache a client for, any number of queues); a missing one is skipped with a warning, the event still
reaches EVENTS_QUEUE. Events never contain a token or mail
content (no subject, body or addresses). docs/producers.md says who can read which queue.

EVENTS_MESSAGE_ENCODING says how the queue message holds the JSON: ``none`` (default: the text itself, what the
Storage SDKs read by default and what every consumer before this setting reads) or ``base64`` (the UTF-8 bytes in
base64: what a Functions app with the default host.json expects; with ``none`` such an app moves every event to its
poison queue). The text handed to the output binding is encoded here, so the host (messageEncoding none) writes it
as given and the setting costs no Storage request. With WEBHOOK_URL set, each event is also queued for its signed
webhook (shared/base/webhooks.py); docs/events.md describes both.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from azure.core.exceptions import ResourceNotFoundError

from shared.base.formats import is_queue_name, iso
from shared.base.settings import HOST_QUEUE_PREFIX

if TYPE_CHECKING:
    from shared.base.settings import Settings
    from shared.base.storage import StorageClients
    from shared.base.webhooks import WebhookDispatcher

logger = logging.getLogger(__name__)

EVENT_SOURCE = "/mailbridge"
TYPE_PREFIX = "mailbridge."


class OutcomeRecord(Protocol):
    """What a message's outcome event is made of: a final delivery record (shared.send.deliveries.Delivery).
    Described here, not imported: the base knows no sibling package, so events need nothing of the send path."""

    connection_id: str
    message_id: str
    status: str
    attempts: int
    completed_at: float
    graph_request_id: str | None
    internet_message_id: str | None  # the Message-ID the recipients received, when known
    metadata: dict[str, str]
    callback_queue: str | None

    def public_view(self) -> dict[str, Any]: ...


def event_id(record: OutcomeRecord) -> str:
    """The CloudEvents ``id`` of a message's outcome event: the same for every publication of it. A message's
    final row is written before its event, and a redelivered message publishes the event again (the run
    before may have died in between), so a consumer can see one outcome twice; source + id identify it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailbridge:{record.connection_id}/{record.message_id}/{record.status}"))


def build_event(
    event_type: str, data: dict[str, Any], subject: str | None = None, event_id: str | None = None
) -> dict[str, Any]:
    """A CloudEvents 1.0 envelope; ``event_type`` without the ``mailbridge.`` prefix."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "type": TYPE_PREFIX + event_type,
        "source": EVENT_SOURCE,
        "id": event_id or str(uuid.uuid4()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "datacontenttype": "application/json",
        "data": data,
    }
    if subject:
        event["subject"] = subject
    return event


def encode_for_queue(text: str, encoding: str) -> str:
    """The queue message text of an event under EVENTS_MESSAGE_ENCODING: as is, or its UTF-8 bytes in base64 (what
    azure-storage-queue's TextBase64EncodePolicy writes, and TextBase64DecodePolicy / a Functions trigger read)."""
    return base64.b64encode(text.encode()).decode() if encoding == "base64" else text


@dataclass
class Outbox:
    """What a queue function hands to its output bindings: events for EVENTS_QUEUE (encoded) and deliveries for
    WEBHOOK_QUEUE (empty when webhooks are off)."""

    events: list[str] = field(default_factory=list)
    webhooks: list[str] = field(default_factory=list)


class EventPublisher:
    """Writes events to EVENTS_QUEUE (and allowed callback queues), and queues their webhooks."""

    def __init__(self, settings: Settings, clients: StorageClients, webhooks: WebhookDispatcher | None = None) -> None:
        self.settings = settings
        self.clients = clients
        self._given_webhooks = webhooks
        self._outbox = threading.local()

    @cached_property
    def webhooks(self) -> WebhookDispatcher | None:
        """The webhook queue's writer when WEBHOOK_URL is set (imported only then)."""
        if not self.settings.webhooks_enabled:
            return None
        if self._given_webhooks is not None:
            return self._given_webhooks
        from shared.base.webhooks import WebhookDispatcher

        return WebhookDispatcher(self.settings, self.clients)

    @contextmanager
    def outbox(self) -> Iterator[Outbox]:
        """While the block runs on this thread, message-outcome events for EVENTS_QUEUE (and their webhook
        deliveries) are collected instead of sent: the queue trigger hands them to its queue output bindings, and
        the Functions host writes them after the function returns and before it deletes the trigger message (one
        Storage call less from Python per email, two with webhooks). A function that raises hands over nothing; its
        redelivery publishes again, as after a crash (shared.send.ledger, Ledger.existing). Callback queues and
        connection events are still sent at once."""
        previous = getattr(self._outbox, "items", None)
        self._outbox.items = collected = Outbox()
        try:
            yield collected
        finally:
            self._outbox.items = previous

    def callback_allowed(self, queue: str | None) -> bool:
        """Only a queue the operator allowed (CALLBACK_QUEUES). Checked here too: a message rejected before
        validation may carry any string there, and its record keeps it."""
        if not is_queue_name(queue) or queue.startswith(HOST_QUEUE_PREFIX):
            return False
        if queue in {self.settings.outbound_queue, self.settings.outbound_poison_queue}:
            return False
        return queue in self.settings.allowed_callback_queues

    def publish(
        self, event: dict[str, Any], callback_queue: str | None = None, *, via_outbox: bool = False
    ) -> dict[str, Any]:
        text = json.dumps(event, separators=(",", ":"))
        queued = encode_for_queue(text, self.settings.events_message_encoding)
        outbox: Outbox | None = getattr(self._outbox, "items", None) if via_outbox else None
        webhooks = self.webhooks
        if outbox is not None:
            outbox.events.append(queued)
            if webhooks is not None:
                outbox.webhooks.extend(webhooks.deliveries([text]))
        else:
            self.clients.queue(self.settings.events_queue).send_message(queued)
            if webhooks is not None:
                webhooks.enqueue(text)
        if callback_queue and callback_queue != self.settings.events_queue and self.callback_allowed(callback_queue):
            try:  # not clients.queue(): that creates the queue and caches a client per name
                self.clients.queues.get_queue_client(callback_queue).send_message(queued)
            except ResourceNotFoundError:
                logger.warning("Event %s: callback queue %s does not exist; skipped", event["type"], callback_queue)
        logger.info("Event %s (%s)", event["type"], event.get("subject") or "")
        return event

    def message_outcome(self, record: OutcomeRecord) -> dict[str, Any]:
        """Publish ``mailbridge.message.<status>`` for a final delivery record."""
        data = {
            "message_id": record.message_id,
            "connection_id": record.connection_id,
            "status": record.status,
            "attempts": record.attempts,
            "completed_at": iso(record.completed_at),
            "graph_request_id": record.graph_request_id,
            "internet_message_id": record.internet_message_id,
            "error": record.public_view()["error"],
            "metadata": record.metadata,
        }
        subject = f"connections/{record.connection_id}/messages/{record.message_id}"
        event = build_event(f"message.{record.status}", data, subject, event_id(record))
        return self.publish(event, record.callback_queue, via_outbox=True)

    def reauth_required(self, connection_id: str, data: dict[str, Any]) -> dict[str, Any]:
        body = {"connection_id": connection_id, **data}
        return self.publish(build_event("connection.reauth_required", body, f"connections/{connection_id}"))

    def connection_event(self, kind: str, connection_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """Publish ``mailbridge.connection.<kind>`` (a mailbox state entered or ended) on EVENTS_QUEUE, at once."""
        body = {"connection_id": connection_id, **data}
        return self.publish(build_event(f"connection.{kind}", body, f"connections/{connection_id}"))


def emit_event(settings: Settings, storage: StorageClients, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Publish one event (``event_type`` like ``connection.reauth_required``) on EVENTS_QUEUE."""
    subject = f"connections/{data['connection_id']}" if data.get("connection_id") else None
    return EventPublisher(settings, storage).publish(build_event(event_type, data, subject))
