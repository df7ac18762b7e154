"""What the end of an attempt that did not send makes of a message: a pacing refusal (paced, held, failed past
the longest hold), the mailbox's verdict (held or failed), Graph's refusal (rescheduled with backoff, a rejected
token redeemed once, rejected, failed), an ambiguous answer (``unknown``, a resend, or a draft looked up until
its grace period ends) and a dead grant (``reauth_required`` event, failed). shared/send/sender.py runs the
attempt and hands its end here; shared/send/ledger.py writes down what is decided."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from shared.base import errors
from shared.base.events import EventPublisher
from shared.base.settings import Settings
from shared.pacing.admission import Admission
from shared.send.deliveries import Delivery, RecordContended
from shared.send.drafts import TRANSIT_GRACE_S, discard_unsent, recheck_delay, submitted
from shared.send.graph import GraphClient
from shared.send.ledger import Ledger, Outcome
from shared.send.mail import SendMessage
from shared.send.mailbox_state import Verdict
from shared.tokens.store import Connection
from shared.tokens.tokens import TokenService

logger = logging.getLogger(__name__)


class Refusals:
    """Decides what an attempt's refusal or wait makes of the message; the ledger writes it down."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        tokens: TokenService,
        events: EventPublisher,
        graph: GraphClient,
        token_of: Callable[[Connection], str],
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.tokens = tokens
        self.events = events
        self.graph = graph
        self.token_of = token_of  # the sender's access token for a connection (one Key Vault miss at a time)
        self.transit_grace_s = TRANSIT_GRACE_S  # how long an ambiguous draft send is looked for (drafts.py)

    def not_admitted(self, msg: SendMessage, record: Delivery, admission: Admission) -> Outcome:
        """The mailbox's budget said no: rejected over the per-message limit, held while the daily recipient
        budget is used up (never sent to be NDR'd), failed past the longest hold, else paced."""
        if isinstance(admission.error, errors.TooManyRecipients):
            return self.ledger.finish(msg, record, "rejected", admission.error)
        if admission.error is not None:
            return self.ledger.finish(msg, record, "failed", admission.error)
        record.reason = admission.reason
        now = time.time()
        record.held_since = record.held_since or now
        # Waiting for the mailbox (its message window, a concurrency slot, another instance sending for it, its
        # daily recipients) is not a failed attempt: at 30 messages a minute a backlog to one mailbox takes hours,
        # and the back of it would run out of MAX_RESCHEDULES untried. The longest hold bounds it instead.
        record.waits += 1
        daily = admission.reason in ("daily_limit", "tenant_external_limit")  # a rolling 24-hour budget
        if now + admission.delay - record.held_since > self.settings.daily_limit_max_hold_seconds:
            waited = now - record.held_since
            err: errors.MailbridgeError = (
                errors.DailyLimitReached(detail=f"held {waited:.0f}s for the daily recipient budget")
                if daily
                else errors.AttemptsExhausted(detail=f"waited {waited:.0f}s for the mailbox's turn")
            )
            return self.ledger.finish(msg, record, "failed", err)
        if daily:
            logger.info("Message %s held for a daily budget (%s): %.0fs", msg.id, admission.reason, admission.delay)
        else:
            logger.info("Message %s paced (%s): retry in %.1fs", msg.id, admission.reason, admission.delay)
        return self.ledger.reschedule(msg, record, admission.delay, None)

    def graph_refused(
        self,
        msg: SendMessage,
        conn: Connection,
        token: str,
        record: Delivery,
        draft_mode: bool,
        exc: errors.MailbridgeError,
    ) -> Outcome:
        """What Graph's refusal, or an answer that leaves the outcome unknown, makes of the message."""
        if isinstance(exc, errors.OutcomeUnknown):
            if draft_mode:
                return self.resolve_draft(msg, conn, record, exc, token)
            if msg.on_ambiguous == "resend":
                return self.ledger.reschedule(msg, record, self.backoff(record, exc), exc)
            return self.ledger.finish(msg, record, "unknown", exc)
        if isinstance(exc, errors.TransientError):  # nothing was applied
            delay = self.backoff(record, exc)
            if exc.extra.get("token_rejected"):
                # Graph says the token is no good although it has not expired by our clock (revoked, or
                # clocks disagree): redeem the refresh token now (at most once per message, and per connection
                # once a FORCED_REFRESH_FLOOR_S), which also tells us if the grant is dead. Another 401 for this
                # message is the mailbox's (mailbox_state.py), not the token's.
                record.token_refreshed = True
                try:
                    self.tokens.refresh_rejected(conn)
                    delay = 1.0
                except errors.ReauthRequired as reauth:
                    return self.reauth_failed(msg, conn, record, reauth)
                except errors.TransientError:
                    pass
            # A draft-mode message whose attempts end here leaves no unsent draft in the user's Drafts.
            discard = (lambda: discard_unsent(self.graph, token, msg)) if draft_mode else None
            return self.ledger.reschedule(msg, record, delay, exc, discard)
        if isinstance(exc, errors.InputError):  # e.g. a referenced blob vanished
            return self.ledger.finish(msg, record, "rejected", exc)
        return self.ledger.finish(msg, record, "failed", exc)

    def mailbox_verdict(self, msg: SendMessage, record: Delivery, verdict: Verdict) -> Outcome:
        """The mailbox's state decided: failed now, or held (a wait for the mailbox, like pacing's daily limit)."""
        if verdict.delay <= 0:
            return self.ledger.finish(msg, record, "failed", verdict.error)
        record.reason, record.held_since = verdict.reason, record.held_since or time.time()
        record.waits += 1
        logger.info("Message %s held (%s): retry in %.0fs", msg.id, verdict.reason, verdict.delay)
        return self.ledger.reschedule(msg, record, verdict.delay, verdict.error)

    def reauth_failed(
        self, msg: SendMessage, conn: Connection, record: Delivery, exc: errors.ReauthRequired
    ) -> Outcome:
        """The grant is dead (TokenService has marked the connection): tell everyone, fail the message."""
        self.events.reauth_required(
            conn.connection_id,
            {"user_ref": conn.user_ref, "mailbox": conn.mailbox, "reason": exc.detail, "error": exc.to_dict()},
        )
        return self.ledger.finish(msg, record, "failed", exc)

    def resolve_draft(
        self,
        msg: SendMessage,
        conn: Connection | None,
        record: Delivery,
        err: errors.OutcomeUnknown,
        token: str | None = None,
    ) -> Outcome:
        """A draft's ``/send`` may have been applied: the mailbox says ``sent`` (the item was submitted), or we
        look again until ``transit_grace_s`` after the send, then record ``unknown``. Never sent again: an item
        in transit may still look like an unsent draft (drafts.py)."""
        if token is None:  # a later delivery: own the row first (two copies must not both finish it)
            try:
                self.ledger.mark_sending(record, attempt=False)
            except RecordContended:
                return Outcome("queued", msg.id, msg.connection_id, delay=self.ledger.busy_recheck_s, record=record)
        try:
            if conn is None or conn.status != "connected":
                raise errors.ReauthRequired(detail="the mailbox can no longer be read")
            if submitted(self.graph, token or self.token_of(conn), msg, record):
                logger.info("Message %s: ambiguous send resolved as sent (the item was submitted)", msg.id)
                return self.ledger.finish(msg, record, "sent", None)
        except errors.TransientError as lookup_err:
            logger.warning("Message %s: lookup after ambiguous send failed: %s", msg.id, lookup_err.code)
        except errors.MailbridgeError as lookup_err:  # cannot look (reauth, refused): the send may have happened
            detail = f"{err.detail}; the mailbox could not be checked ({lookup_err.code})"
            return self.ledger.finish(msg, record, "unknown", errors.OutcomeUnknown(detail=detail))
        delay = recheck_delay(record.sending_at, time.time(), self.transit_grace_s)
        if delay is None:
            detail = (
                f"{err.detail}; not submitted {self.transit_grace_s:.0f}s later (not sent again: it may be in transit)"
            )
            return self.ledger.finish(msg, record, "unknown", errors.OutcomeUnknown(detail=detail))
        return self.ledger.reschedule(msg, record, delay, err)

    @staticmethod
    def backoff(record: Delivery, err: errors.MailbridgeError) -> float:
        asked = err.extra.get("retry_after")
        if asked:
            return float(asked) + random.uniform(0, 1)
        return min(300.0, 5.0 * 2 ** min(record.retries, 6)) * random.uniform(0.8, 1.2)


def plan_status(exc: errors.MailbridgeError) -> str:
    """What a message the plan refused ends as: the message's own fault is ``rejected``, else ``failed``."""
    if isinstance(exc, errors.InputError | errors.MessageTooLarge | errors.AttachmentsTooLarge):
        return "rejected"
    return "failed"
