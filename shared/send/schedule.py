"""Scheduled sends: ``send_at`` on a mailbridge.send/v1 message (RFC 3339, UTC; shared/send/mail.py checks the
form). This module checks its range and holds a message until it is due; the wait itself is parked out of the
trigger queue (shared/send/parking.py) by whoever enqueues the message.

- Range: from now to SEND_AT_MAX_AHEAD_SECONDS (30 days) ahead. Over HTTP a time more than
  SEND_AT_PAST_TOLERANCE_SECONDS in the past is refused (``invalid_send_at``); on the queue it is sent at once,
  since the queue cannot tell a producer's mistake from a backlog that kept the message there.
- Never early: every copy of a message (the parked one moved back, a redelivery, a producer's duplicate) is
  checked against the clock of the instance that reads it, before pacing, the token or Graph; one that is not
  due yet is held again. Pacing and daily-limit holds apply from ``send_at`` on, as to any message.
- While it waits its delivery row is ``queued`` with reason ``scheduled`` and ``next_attempt_at`` = send_at, so
  GET and DELETE /api/messages/{id} see it (the HTTP intake writes that row when it accepts the message; the
  sender writes it when it first reads a scheduled queue message).
"""

from __future__ import annotations

import logging
import time

from shared.base import errors
from shared.send.deliveries import RecordContended
from shared.send.ledger import Ledger, Outcome
from shared.send.mail import SendMessage

logger = logging.getLogger(__name__)

SEND_AT_MAX_AHEAD_SECONDS = 30 * 86400
SEND_AT_PAST_TOLERANCE_SECONDS = 60.0  # clocks disagree: a send_at this far in the past over HTTP means "now"
SCHEDULED = "scheduled"  # the delivery row's reason while it waits for send_at


def check_send_at(msg: SendMessage, now: float, *, past_ok: bool = False) -> None:
    """``invalid_send_at`` when ``send_at`` is more than 30 days ahead of ``now``, or (unless ``past_ok``) more than
    SEND_AT_PAST_TOLERANCE_SECONDS behind it."""
    due = msg.due_at
    if due is None:
        return
    if due > now + SEND_AT_MAX_AHEAD_SECONDS:
        raise errors.InvalidSendAt(detail="send_at is more than 30 days ahead", field="send_at")
    if not past_ok and due < now - SEND_AT_PAST_TOLERANCE_SECONDS:
        raise errors.InvalidSendAt(detail="send_at is in the past", field="send_at")


def hold_until_due(ledger: Ledger, msg: SendMessage, source: str, run: str, now: float | None = None) -> Outcome | None:
    """None when the message is due (or has no send_at): the pipeline goes on. Else the Outcome of holding it:
    ``queued`` with ``delay`` = send_at - now (its row written ``queued``, reason ``scheduled``), or what its row
    says of this copy (final: acknowledged; another worker's: look again), or ``rejected`` past 30 days ahead."""
    now = time.time() if now is None else now
    due = msg.due_at
    if due is None or due <= now:
        return None
    record = ledger.new_record(msg, source, run)
    record.reason, record.next_attempt_at = SCHEDULED, due
    try:
        check_send_at(msg, now, past_ok=True)
    except errors.InvalidSendAt as exc:
        found = ledger.claim(msg, source, run)
        return found if isinstance(found, Outcome) else ledger.finish(msg, found, "rejected", exc)
    if not ledger.deliveries.create(record):
        found = ledger.existing(msg, run)
        if isinstance(found, Outcome):
            return found
        record = found
        if record.status != "queued":  # a dead worker's `sending`: the pipeline decides (never sent early)
            return None
        if (record.reason, record.next_attempt_at) != (SCHEDULED, due):
            record.reason, record.next_attempt_at = SCHEDULED, due
            try:
                ledger.deliveries.update(record)
            except RecordContended:  # canceled (or taken) meanwhile: what the row says now decides
                again = ledger.existing(msg, run)
                if isinstance(again, Outcome):
                    return again
    logger.info("Message %s scheduled: due in %.0fs", msg.id, due - now)
    return Outcome("queued", msg.id, msg.connection_id, delay=due - now, record=record)
