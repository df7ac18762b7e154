"""The HTTP side of sending: accept a message (validate, offload big content to Blob, enqueue), report a
delivery record, and send a test message to a connected mailbox itself."""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

from shared.base import errors
from shared.base.telemetry import log_outcome
from shared.send.deliveries import Delivery, RecordContended
from shared.send.drafts import SEND_REQUESTED
from shared.send.graph import request_sizes
from shared.send.limits import check_limits
from shared.send.mail import SendMessage, parse_message
from shared.send.schedule import SCHEDULED, check_send_at
from shared.tokens.store import Connection

if TYPE_CHECKING:
    from shared.base.events import EventPublisher
    from shared.base.settings import Settings
    from shared.send.attachments import AttachmentStore
    from shared.send.deliveries import DeliveryStore
    from shared.send.sender import Sender
    from shared.tokens.store import ConnectionStore

logger = logging.getLogger(__name__)


class IntakeServices(Protocol):
    """What accepting a message uses of the composition root (shared.services.Services provides it)."""

    settings: Settings
    connections: ConnectionStore
    deliveries: DeliveryStore
    attachments: AttachmentStore
    events: EventPublisher
    sender: Sender


class MessageIntake:
    def __init__(self, services: IntakeServices) -> None:
        self.s = services
        self.settings = services.settings

    def status_url(self, connection_id: str, message_id: str) -> str:
        query = urlencode({"connection_id": connection_id})
        return f"{self.settings.public_base_url}/api/messages/{message_id}?{query}"

    def _usable_connection(self, connection_id: str, user_ref: str | None = None) -> Connection:
        conn = self.s.connections.find(connection_id, user_ref=user_ref)
        if conn is None or conn.status == "disconnected":
            raise errors.UnknownConnection(field="connection_id")
        if conn.status != "connected":
            raise errors.ReauthRequired(detail=f"connection is {conn.status}", reason=conn.last_error_code)
        return conn

    def accept(self, body: Any, user_ref: str | None = None) -> tuple[int, dict[str, Any]]:
        """Validate and enqueue; (202, {id, status_url}) — or (200, ...) when this id was already accepted.
        With ``user_ref``, a connection of another user_ref is refused as unknown (see ConnectionStore.get)."""
        msg = parse_message(body)
        now = time.time()
        check_send_at(msg, now)
        self._usable_connection(msg.connection_id, user_ref)
        self.s.attachments.measure(msg)
        if msg.total_bytes() > self.settings.max_message_bytes:
            # Refused (message_too_large) before request_sizes builds the Graph bodies to measure them: each is
            # another copy of the message, and a 33 MB text body peaked at 3x its size.
            check_limits(msg, self.settings, 0)
        check_limits(msg, self.settings, *request_sizes(msg, self.s.attachments.body_text(msg)))
        record = Delivery(
            msg.connection_id,
            msg.id,
            recipients=msg.recipient_count(),
            fingerprint=msg.fingerprint(),
            source="http",
            callback_queue=msg.callback.queue if msg.callback else None,
            metadata=msg.metadata,
        )
        due = msg.due_at
        if due is not None and due > now:  # scheduled: GET and DELETE see it waiting; it is parked till due
            record.reason, record.next_attempt_at = SCHEDULED, due
        if not self.s.deliveries.create(record):
            return self._replay(msg)
        try:
            queued = self.s.attachments.offload(msg)
            self.s.sender.enqueue(queued.to_queue_json(), (due - time.time()) if due else 0.0)
        except Exception:
            self.s.deliveries.delete(msg.connection_id, msg.id)  # let the caller retry the same id
            raise
        logger.info("Message %s (connection %s) accepted over HTTP", msg.id, msg.connection_id)
        return 202, self._accepted(msg, "queued")

    def _replay(self, msg: SendMessage) -> tuple[int, dict[str, Any]]:
        found = self.s.deliveries.get(msg.connection_id, msg.id)
        if found is None:  # deleted between our insert and read: the caller may simply retry
            raise errors.TemporarilyUnavailable(detail="message record changed concurrently")
        existing = found
        if existing.fingerprint and existing.fingerprint != msg.fingerprint():
            raise errors.Conflict(
                "This id was already used for a different message. Use a new id for a new message.", field="id"
            )
        return 200, {**self._accepted(msg, existing.status), "duplicate": True}

    def _accepted(self, msg: SendMessage, status: str) -> dict[str, Any]:
        return {
            "id": msg.id,
            "connection_id": msg.connection_id,
            "status": status,
            "status_url": self.status_url(msg.connection_id, msg.id),
        }

    def status(self, message_id: str, connection_id: str | None, user_ref: str | None = None) -> dict[str, Any]:
        if not connection_id:
            raise errors.InvalidRequest("connection_id is required (message ids are unique per connection).")
        owned = user_ref is None or self.s.connections.find(connection_id, user_ref=user_ref) is not None
        found = self.s.deliveries.get(connection_id, message_id) if owned else None
        if found is None:
            raise errors.NotFound(f"No message {message_id} for this connection.")
        return found.public_view()

    def cancel(self, message_id: str, connection_id: str | None, user_ref: str | None = None) -> dict[str, Any]:
        """Cancel a message that has not started sending (``queued``: scheduled, paced or held): its row goes to
        the final status ``canceled`` (ETag-guarded: a worker that claims it first wins, and then this is 409
        ``not_cancelable``; a worker that comes second finds it final and drops its copy), with its event. A
        DELETE repeated after it succeeded answers the canceled record again."""
        if not connection_id:
            raise errors.InvalidRequest("connection_id is required (message ids are unique per connection).")
        owned = user_ref is None or self.s.connections.find(connection_id, user_ref=user_ref) is not None
        for _ in range(5):
            found = self.s.deliveries.get(connection_id, message_id) if owned else None
            if found is None:
                raise errors.NotFound(f"No message {message_id} for this connection.")
            if found.status == "canceled":
                return found.public_view()
            if found.status != "queued" or found.phase == SEND_REQUESTED:
                raise errors.NotCancelable(detail=f"the message is {found.status}", status=found.status)
            if found.error_code == errors.OutcomeUnknown.code:  # queued to be resent: the last try may have sent it
                raise errors.NotCancelable(detail="a previous attempt may have sent it", status=found.status)
            if not self._finish_queued(found, "canceled", None, "cancel"):
                continue  # a worker claimed it (or the hold was rewritten) meanwhile: look again
            return found.public_view()
        raise errors.TemporarilyUnavailable(detail="the message record kept changing; try again")

    def finish_waiting(self, connection_id: str) -> int:
        """A disconnect's end for the connection's waiting messages (scheduled, paced, held): each ``queued`` row
        becomes final now, as the sender would record it when it came due (``rejected unknown_connection``), with
        its event, instead of in up to 30 days. A copy still parked or on the queue then finds the row final and is
        dropped. A row a worker holds (``sending``) is left to that worker. Returns how many were finished."""
        err = errors.UnknownConnection(detail="connection is disconnected", field="connection_id")
        waiting = self.s.deliveries.waiting(connection_id)
        return sum(self._finish_queued(found, "rejected", err, "disconnect") for found in waiting)

    def _finish_queued(self, found: Delivery, status: str, err: errors.MailbridgeError | None, by: str) -> bool:
        """``found`` (queued) made final with its event, ETag-guarded; False when the row changed since it was read."""
        found.make_final(status, err, by)
        found.reason = ""
        try:
            self.s.deliveries.update(found)
        except RecordContended:
            return False
        log_outcome("send", status, message_id=found.message_id, connection_id=found.connection_id)
        self.s.events.message_outcome(found)
        return True

    def send_test(self, connection_id: str, user_ref: str | None = None) -> tuple[int, dict[str, Any]]:
        """Send a short message from the mailbox to itself, now (through the normal pipeline)."""
        conn = self._usable_connection(connection_id, user_ref)
        if "@" not in conn.mailbox:  # no address was known at connect (connect/id_tokens.py mailbox_address)
            raise errors.MailboxAddressUnknown(detail="the connection has no email address")
        message_id = f"test-{uuid.uuid4().hex[:16]}"
        data = {
            "id": message_id,
            "connection_id": connection_id,
            "to": [{"address": conn.mailbox, "name": conn.display_name or None}],
            "subject": "Mailbridge test message",
            "body": {
                "content_type": "text",
                "content": "This test message confirms that Mailbridge can send mail from this mailbox. "
                "No action is needed.",
            },
        }
        outcome = self.s.sender.process(data, message_id, source="test")
        if outcome.delay > 0:  # paced or throttled: finish it through the queue
            self.s.sender.enqueue(SendMessage.model_validate(data).to_queue_json(), outcome.delay)
            return 202, {"id": message_id, "status": "queued", "status_url": self.status_url(connection_id, message_id)}
        view = outcome.record.public_view() if outcome.record else {"id": message_id, "status": outcome.status}
        if outcome.status == "sent":
            return 200, view
        status = outcome.error.http_status if outcome.error else 502
        return status, {**view, "status_url": self.status_url(connection_id, message_id)}
