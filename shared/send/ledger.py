"""The delivery record of one queue message through its life (the second job the send pipeline used to do
itself): insert it (the claim: exactly one copy's insert wins), read the one an earlier copy left, own it under a
lease while Graph is called, put it back ``queued`` for a delay, and finish it: the final row, the outcome line
(telemetry), the event. shared/send/sender.py decides what happens; this module writes it down."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.base import errors
from shared.base.events import EventPublisher
from shared.base.formats import is_queue_name
from shared.base.telemetry import log_outcome
from shared.send.attachments import AttachmentStore
from shared.send.deliveries import UNREADABLE_PARTITION, Delivery, DeliveryStore, RecordContended
from shared.send.drafts import SEND_REQUESTED
from shared.send.mail import CONNECTION_ID_PATTERN, ID_PATTERN, SendMessage

logger = logging.getLogger(__name__)

MAX_RESCHEDULES = 100  # pacing + throttling delays before a message is given up (attempts_exhausted)
LEASE_SECONDS = 600.0  # a "sending" row belongs to its owner this long (the host's functionTimeout)


@dataclass
class Outcome:
    """What happened to one message: a final status, ``queued`` with a delay, or ``duplicate``."""

    status: str
    message_id: str
    connection_id: str
    delay: float = 0.0
    record: Delivery | None = None
    error: errors.MailbridgeError | None = None


class Ledger:
    """Delivery rows and outcome events of the send pipeline. ``max_reschedules`` bounds the delays of one
    message; ``busy_recheck_s`` is how soon a copy looks again at a message another worker is sending."""

    def __init__(
        self,
        deliveries: DeliveryStore,
        events: EventPublisher,
        attachments: AttachmentStore,
        max_reschedules: int = MAX_RESCHEDULES,
    ) -> None:
        self.deliveries = deliveries
        self.events = events
        self.attachments = attachments
        self.max_reschedules = max_reschedules
        self.busy_recheck_s = 10.0

    def new_record(self, msg: SendMessage, source: str, run: str, claim: bool = False) -> Delivery:
        """The row for a new id: ``queued``, or with ``claim`` already ``sending`` under this worker's lease (as
        :meth:`mark_sending` leaves it: the insert-if-absent picks exactly one owner, as the ETag does)."""
        now = time.time()
        record = Delivery(
            msg.connection_id,
            msg.id,
            recipients=msg.recipient_count(),
            fingerprint=msg.fingerprint(),
            source=source,
            callback_queue=msg.callback.queue if msg.callback else None,
            metadata=msg.metadata,
            created_at=now,
            run=run,
        )
        if claim:
            record.status, record.mode, record.attempts = "sending", "sendMail", 1
            record.sending_at, record.lease_until = now, now + LEASE_SECONDS
        return record

    def insert(self, msg: SendMessage, source: str, run: str, mailbox: str, claim: bool = False) -> Delivery | None:
        """The row of a new id inserted (``queued``, or ``sending`` with ``claim``: see :meth:`new_record`), counted
        against ``mailbox``; None if the id has a row already (a redelivery or a copy)."""
        record = self.new_record(msg, source, run, claim)
        if not self.deliveries.create(record):
            return None
        record.mailbox = mailbox
        return record

    def claim(self, msg: SendMessage, source: str, run: str = "") -> Delivery | Outcome:
        """The row for (connection, id): created queued, or an Outcome when this copy must not send."""
        record = self.new_record(msg, source, run)
        # Insert first: a new id costs one Table call; a redelivery reads the row.
        if self.deliveries.create(record):
            return record
        return self.existing(msg, run)

    def existing(self, msg: SendMessage, run: str) -> Delivery | Outcome:
        """The row a copy of this id found: an Outcome when this copy must not send, else the row."""
        now = time.time()
        found = self.deliveries.get(msg.connection_id, msg.id)
        if found is None:  # deleted between our insert and read (a retention purge): treat as new
            return Outcome("queued", msg.id, msg.connection_id, delay=1.0)
        record = found
        record.run = run
        if record.is_final:
            # The run that wrote the final row may have died before its event: when this is that run's queue
            # message again, publish it again (same CloudEvents id, events.event_id). Other copies of the id
            # (a producer's duplicate) are acknowledged silently. No flag write per email is needed for this.
            logger.info("Message %s already %s: acknowledged, not sent again", msg.id, record.status)
            if record.finished_by in ("cancel", "disconnect"):  # finished while waiting; its copy came back from
                self.attachments.cleanup(msg)  # the parking lot or the queue: the blobs it offloaded go now
            if not record.event_emitted or (run and record.finished_by == run):
                self.emit(record)
            return Outcome("duplicate", msg.id, msg.connection_id, record=record)
        if record.status == "sending" and record.lease_until > now:
            wait = min(record.lease_until - now, self.busy_recheck_s) * random.uniform(1, 1.5)
            logger.info("Message %s is being sent by another worker; checking again in %.0fs", msg.id, wait)
            return Outcome("queued", msg.id, msg.connection_id, delay=wait, record=record)
        return record

    def mark_sending(self, record: Delivery, attempt: bool = True) -> None:
        """Own the row (ETag-guarded) for LEASE_SECONDS; ``attempt``: for a Graph call that may send the mail."""
        now = time.time()
        record.status = "sending"
        if attempt:
            record.attempts += 1
            record.sending_at = now
        record.lease_until = now + LEASE_SECONDS
        self.deliveries.update(record)

    def reschedule(
        self,
        msg: SendMessage,
        record: Delivery,
        delay: float,
        err: errors.MailbridgeError | None,
        before_failing: Callable[[], None] | None = None,
    ) -> Outcome:
        """Back to ``queued`` for ``delay`` seconds, or the end of its attempts: ``unknown`` if a draft's /send may
        have been applied, else ``failed`` (``before_failing`` runs first: nothing was sent)."""
        record.reschedules += 1
        if record.retries > self.max_reschedules and record.phase == SEND_REQUESTED:
            err = errors.OutcomeUnknown(detail="a draft send was not confirmed before the attempts ran out")
            return self.finish(msg, record, "unknown", err)  # never `failed`: it may have been sent
        if record.retries > self.max_reschedules:
            if before_failing is not None:
                before_failing()
            cause = f"last: {err.code}" if err else "pacing"
            return self.finish(msg, record, "failed", errors.AttemptsExhausted(detail=cause))
        record.status = "queued"
        record.lease_until = 0.0
        record.next_attempt_at = time.time() + delay
        if err is not None:
            record.set_error(err)
        try:
            self.deliveries.update(record)
        except RecordContended:
            logger.info("Message %s: record changed concurrently while rescheduling", msg.id)
        if err is not None:
            logger.info("Message %s: %s, retry in %.1fs", msg.id, err.code, delay)
        return Outcome("queued", msg.id, msg.connection_id, delay=max(delay, 1.0), record=record, error=err)

    def finish(self, msg: SendMessage, record: Delivery, status: str, err: errors.MailbridgeError | None) -> Outcome:
        record.make_final(status, err, record.run)  # its event goes out right after; a redelivery publishes again
        try:
            self.deliveries.update(record)
        except RecordContended:
            # We own the send; a concurrent writer can only be a stale duplicate, or a cancel of a row this copy
            # had read `queued` and never claimed (it sent nothing): the cancel stands.
            current = self.deliveries.get(msg.connection_id, msg.id)
            if current is not None and current.status == "canceled":
                logger.info("Message %s was canceled meanwhile: %s not recorded", msg.id, status)
                return Outcome("duplicate", msg.id, msg.connection_id, record=current)
            self.deliveries.update(record, force=True)
        log_outcome(
            "send",
            status,
            code=err.code if err else None,
            message_id=msg.id,
            connection_id=msg.connection_id,
            duration_ms=(record.completed_at - record.created_at) * 1000 if record.created_at else None,
            graph_request_id=record.graph_request_id,
        )
        self.emit(record)
        self.attachments.cleanup(msg)
        return Outcome(status, msg.id, msg.connection_id, record=record, error=err)

    def emit(self, record: Delivery) -> None:
        """Publish the final row's event. No flag is written back (one Storage call less per email): the row
        says ``event_emitted`` from its final write on, and any redelivery of the message publishes again."""
        self.events.message_outcome(record)

    def reject_unparsed(self, data: Any, err: errors.MailbridgeError, queue_message_id: str) -> Outcome:
        """Record a message we could not validate, keyed as well as its content allows."""
        data = data if isinstance(data, dict) else {}
        cid = _readable(data.get("connection_id"), CONNECTION_ID_PATTERN) or UNREADABLE_PARTITION
        mid = _readable(data.get("id"), ID_PATTERN) or f"queue-{queue_message_id}"
        callback = data.get("callback") if isinstance(data.get("callback"), dict) else {}
        queue = callback.get("queue") if isinstance(callback.get("queue"), str) else None
        record = Delivery(cid, mid, status="rejected", completed_at=time.time(), created_at=time.time())
        record.callback_queue = queue if is_queue_name(queue) else None
        record.set_error(err)
        record.event_emitted = True  # published right after the insert
        if not self.deliveries.create(record):
            logger.warning("Message %s rejected (%s) but a record already exists; left unchanged", mid, err.code)
            return Outcome("rejected", mid, cid, error=err)
        log_outcome("send", "rejected", code=err.code, message_id=mid, connection_id=cid, duration_ms=0)
        self.emit(record)
        return Outcome("rejected", mid, cid, record=record, error=err)


def _readable(value: Any, pattern: str) -> str | None:
    return value if isinstance(value, str) and re.fullmatch(pattern, value) else None
