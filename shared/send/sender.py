"""The send pipeline for one queue message: parse -> validate -> idempotency -> pacing -> token -> Graph
-> delivery record -> event. docs/sending.md is the prose version of this module; the delivery rows and
outcome events are written by shared/send/ledger.py (this module decides, the ledger writes it down); what an
attempt that did not send makes of the message (paced, held, rescheduled, failed, unknown) is shared/send/refusals.py.

:meth:`Sender.process` never raises for anything a message or Microsoft can do to it; it returns an
:class:`Outcome`. A positive ``delay`` means "put a copy back on the queue, invisible for that long"
(:meth:`Sender.handle_queue_message` does it), so throttling never burns the host's dequeue count.
Only our own bugs or Storage outages raise, and then the Functions host retries as usual.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from shared.base import errors
from shared.base.events import EventPublisher
from shared.base.json_limits import decode_payload
from shared.base.settings import Settings
from shared.base.storage import StorageClients
from shared.pacing.admission import Admission, Mailbox, Pacer
from shared.send import composer
from shared.send.attachments import AttachmentStore
from shared.send.deliveries import Delivery, DeliveryStore, RecordContended
from shared.send.drafts import SEND_REQUESTED, send_via_draft
from shared.send.graph import GraphClient, request_sizes
from shared.send.ledger import MAX_RESCHEDULES, Ledger, Outcome
from shared.send.limits import check_limits, upload_bytes
from shared.send.mail import INLINE, SendMessage, parse_message
from shared.send.mailbox_state import Clearance, MailboxStates
from shared.send.parking import ParkingLot
from shared.send.refusals import Refusals, plan_status
from shared.send.schedule import hold_until_due
from shared.tokens.store import Connection, ConnectionStore
from shared.tokens.tokens import TokenService

logger = logging.getLogger(__name__)


class Sender:
    def __init__(
        self,
        settings: Settings,
        storage: StorageClients,
        connections: ConnectionStore,
        tokens: TokenService,
        graph: GraphClient,
        budget: Pacer,
        deliveries: DeliveryStore,
        events: EventPublisher,
        attachments: AttachmentStore,
        mailbox_states: MailboxStates,
        max_reschedules: int = MAX_RESCHEDULES,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.connections = connections
        self.tokens = tokens
        self.graph = graph
        self.budget = budget  # pacing, through its door: one admit and one report per attempt
        self.deliveries = deliveries
        self.events = events
        self.attachments = attachments
        self.mailbox_states = mailbox_states  # may the mailbox send at all: asked once per attempt, like pacing
        self.ledger = Ledger(deliveries, events, attachments, max_reschedules)
        self.parking = ParkingLot(settings, storage)  # waits over PARK_AFTER_SECONDS wait there, not on the queue
        self._token_locks: dict[str, threading.Lock] = {}
        self._token_guard = threading.Lock()
        self.refusals = Refusals(settings, self.ledger, tokens, events, graph, self._token)  # an attempt's end

    @property
    def max_reschedules(self) -> int:
        """Pacing and throttling delays before a message is given up (the ledger counts them)."""
        return self.ledger.max_reschedules

    @max_reschedules.setter
    def max_reschedules(self, value: int) -> None:
        self.ledger.max_reschedules = value

    @property
    def busy_recheck_s(self) -> float:
        """How soon a duplicate looks again at a message another worker is sending."""
        return self.ledger.busy_recheck_s

    @busy_recheck_s.setter
    def busy_recheck_s(self, value: float) -> None:
        self.ledger.busy_recheck_s = value

    # --- entry points -----------------------------------------------------------------------------------
    def handle_queue_message(self, body: bytes | str, queue_message_id: str) -> Outcome:
        """The queue trigger's job: process, and re-enqueue a delayed copy when asked to wait."""
        outcome = self.process(body, queue_message_id)
        if outcome.delay > 0:
            self.enqueue(body if isinstance(body, str) else body.decode("utf-8"), outcome.delay)
        return outcome

    def handle_poisoned(self, body: bytes | str, queue_message_id: str) -> Outcome:
        """A message the host gave up on (its function failed maxDequeueCount times): give it a final record
        and an event instead of leaving it ``queued`` forever. A row left ``sending`` means a failing attempt
        may have reached Graph, so it ends ``unknown``; otherwise nothing was sent and it ends ``failed``."""
        msg = self._parse(body, queue_message_id)
        if isinstance(msg, Outcome):
            return msg
        logger.error("Message %s (connection %s) was moved to the poison queue", msg.id, msg.connection_id)
        found = self.ledger.claim(msg, "queue", run=queue_message_id)
        if isinstance(found, Outcome):  # already final, or a live worker holds it: that worker finishes it
            return found
        if found.status == "sending" or found.phase == SEND_REQUESTED:
            err = errors.OutcomeUnknown(detail="the message failed repeatedly while being sent")
            return self.ledger.finish(msg, found, "unknown", err)
        return self.ledger.finish(msg, found, "failed", errors.ProcessingFailed())

    def enqueue(self, text: str, delay: float = 0.0) -> None:
        """Put a message on the outbound queue, invisible for ``delay`` seconds, or park a longer wait (parking.py)."""
        self.parking.put(text, delay)

    def process(self, raw: bytes | str | dict[str, Any], queue_message_id: str, source: str = "queue") -> Outcome:
        msg = self._parse(raw, queue_message_id)
        return msg if isinstance(msg, Outcome) else self._process(msg, source, queue_message_id)

    def _parse(self, raw: bytes | str | dict[str, Any], queue_message_id: str) -> SendMessage | Outcome:
        """The validated message, or the Outcome of recording it ``rejected``."""
        data: Any = None
        try:
            data = raw if isinstance(raw, dict) else decode_payload(raw)
            return parse_message(data)
        except errors.InvalidMessage as exc:
            return self.ledger.reject_unparsed(data, exc, queue_message_id)

    # --- the pipeline -------------------------------------------------------------------------------------
    def _process(self, msg: SendMessage, source: str, run: str = "") -> Outcome:
        if msg.send_at is not None and (held := hold_until_due(self.ledger, msg, source, run)) is not None:
            return held  # not due yet on this instance's clock (shared/send/schedule.py): never sent early
        # The row as this instance read it at most CONNECTION_CACHE_S ago (store.py): the bound within which
        # another instance's disconnect or reauth_required stops sends here (docs/sending.md).
        conn = self.connections.recent(msg.connection_id)
        clearance = self.mailbox_states.ask(conn) if conn is not None and conn.status == "connected" else None
        if clearance and not clearance.state and not _has_scope(conn, "Mail.ReadWrite"):
            done = self._send_new(msg, source, run, conn, clearance)
            if done is not None:
                return done
        found = self.ledger.claim(msg, source, run=run)
        if isinstance(found, Outcome):
            return found
        record = found
        if record.status == "sending" and record.mode != "draft" and msg.on_ambiguous != "resend":
            # The previous owner's lease ran out mid-send (it died): Graph may have sent the mail. Decide now,
            # before pacing, the token or the connection can reschedule it (a rescheduled row is `queued`
            # again and would be sent a second time) or fail it (`failed` promises nothing was sent).
            err = errors.OutcomeUnknown(detail="a previous attempt was interrupted while sending")
            return self.ledger.finish(msg, record, "unknown", err)
        if record.phase == SEND_REQUESTED:  # a draft's /send may have reached Graph: look it up, never resend
            return self.refusals.resolve_draft(
                msg, conn, record, errors.OutcomeUnknown(detail="the draft send was not confirmed")
            )
        if conn is None or conn.status == "disconnected":
            detail = "connection is disconnected" if conn else None
            return self.ledger.finish(
                msg, record, "rejected", errors.UnknownConnection(detail=detail, field="connection_id")
            )
        if conn.status != "connected":
            err = errors.ReauthRequired(detail=f"connection is {conn.status}", reason=conn.last_error_code)
            return self.ledger.finish(msg, record, "failed", err)
        try:
            uploads, body = self._plan(msg, conn)
        except errors.MailbridgeError as exc:
            return self.ledger.finish(msg, record, plan_status(exc), exc)
        assert clearance is not None  # connected
        if not clearance.admitted:  # the mailbox cannot send: fail fast, or wait for its next re-probe
            return self.refusals.mailbox_verdict(msg, record, clearance.verdict(record.held_since))
        draft_mode = self._use_drafts(msg, conn, uploads)
        record.mode = "draft" if draft_mode else "sendMail"
        budget_of, record.mailbox = self._budget_of(msg, conn, draft_mode)
        admission = self.budget.admit(budget_of, msg.recipient_addresses(), upload_bytes(msg, uploads, body))
        if not admission.admitted:
            return self.refusals.not_admitted(msg, record, admission)
        # Admitted; a re-probe of a held mailbox keeps its hold clock (the longest hold counts from the first hold).
        record.reason, record.held_since = "", record.held_since if clearance.probe else 0.0
        done = self._attempt(
            msg,
            conn,
            (admission, clearance),
            uploads,
            body,
            draft_mode,
            lambda claim: self._claim(msg, record) if claim else record,
        )
        assert done is not None  # this row is never None
        return done

    def _send_new(
        self, msg: SendMessage, source: str, run: str, conn: Connection, clearance: Clearance
    ) -> Outcome | None:
        """The common case, a new id of a connection that can only use sendMail: the plan, the mailbox's budget
        and the token first (no Storage call while the share and the token last), then the row inserted
        already ``sending`` with its lease (the claim: exactly one copy's insert wins; one call instead of an
        insert and an ETag update), Graph, the final row, the event. A crash between the insert and Graph's
        answer leaves ``sending``: a redelivery records it ``unknown``. Anything that stops the send before
        the claim inserts the row ``queued`` and is handled as on the general path. None: the id has a row
        already (a redelivery or a copy); the general path decides what it needs."""
        try:
            uploads, body = self._plan(msg, conn)
        except errors.MailbridgeError as exc:
            record = self.ledger.insert(msg, source, run, self._budget_of(msg, conn, False)[1])
            return None if record is None else self.ledger.finish(msg, record, plan_status(exc), exc)
        budget_of, mailbox = self._budget_of(msg, conn, False)
        admission = self.budget.admit(budget_of, msg.recipient_addresses(), upload_bytes(msg, uploads, body))
        if not admission.admitted:
            found = self.ledger.insert(msg, source, run, mailbox) or self._found_row(msg, run, mailbox)
            return found if not isinstance(found, Delivery) else self.refusals.not_admitted(msg, found, admission)
        # The row: inserted `queued` to record a failure before the claim on, or inserted already `sending` (the
        # claim); a rescheduled copy or a duplicate claims the row it finds, as the general path does.
        return self._attempt(
            msg,
            conn,
            (admission, clearance),
            uploads,
            body,
            False,
            lambda claim: (
                self.ledger.insert(msg, source, run, mailbox, claim)
                or (self._claim_found(msg, run, mailbox) if claim else None)
            ),
        )

    def _found_row(self, msg: SendMessage, run: str, mailbox: str) -> Delivery | Outcome | None:
        """For :meth:`_send_new`, the row an earlier copy of the id left: an Outcome when this copy must not send
        (final, another worker's live lease, a dead worker's ``sending``: ``unknown``); None for a draft-mode row
        (the general path handles it); else the row, ready to be claimed for sendMail."""
        found = self.ledger.existing(msg, run)
        if isinstance(found, Outcome):
            return found
        if found.mode == "draft" or found.phase:
            return None
        if found.status == "sending" and msg.on_ambiguous != "resend":
            err = errors.OutcomeUnknown(detail="a previous attempt was interrupted while sending")
            return self.ledger.finish(msg, found, "unknown", err)
        found.mode, found.mailbox = "sendMail", mailbox
        return found  # its hold (reason, held_since) stays until it is admitted: the longest hold counts from it

    def _claim_found(self, msg: SendMessage, run: str, mailbox: str) -> Delivery | Outcome | None:
        """For :meth:`_send_new`, admitted: the row an earlier copy of the id left, claimed (see :meth:`_found_row`)."""
        found = self._found_row(msg, run, mailbox)
        if not isinstance(found, Delivery):
            return found
        found.reason, found.held_since = "", 0.0  # admitted: no longer on hold
        return self._claim(msg, found)

    def _claim(self, msg: SendMessage, record: Delivery) -> Delivery | Outcome:
        """The row owned for this attempt (``sending`` under this worker's lease), or the Outcome of finding
        another worker got it first (look again soon)."""
        try:
            self.ledger.mark_sending(record)
        except RecordContended:
            delay = self.busy_recheck_s * random.uniform(1, 1.5)
            return Outcome("queued", msg.id, msg.connection_id, delay=delay, record=record)
        return record

    def _budget_of(self, msg: SendMessage, conn: Connection, draft_mode: bool) -> tuple[Mailbox, str]:
        """Which mailbox's budget the send counts against, and the mailbox's name for the row."""
        mailbox = conn.mailbox.lower()
        budget_of = Mailbox(conn.tenant_id, conn.object_id, mailbox)
        if msg.from_ and self.settings.send_as_endpoint == "users" and not draft_mode:
            # /users/{from}/sendMail counts against the `from` mailbox, keyed by its principal name (check_limits
            # admits nothing else there, so no "x/../" spelling reaches this) lower-cased as Entra compares it;
            # the connected mailbox's own name keeps the budget of its object id, as /me sends do.
            named = msg.from_.address.lower()
            if named != mailbox:
                mailbox, budget_of = named, Mailbox(conn.tenant_id, named, named)
        return budget_of, mailbox

    def _attempt(
        self,
        msg: SendMessage,
        conn: Connection,
        asked: tuple[Admission, Clearance],
        uploads: list[str],
        body: str,
        draft_mode: bool,
        row: Callable[[bool], Delivery | Outcome | None],
    ) -> Outcome | None:
        """One admitted attempt: the token, the row claimed, Graph, the answer written down. ``row(True)`` is the
        message's row claimed for sending, ``row(False)`` the row to record a failure before the claim on (an
        Outcome: this copy must not send; None: the general path decides). The admission is reported exactly
        once: when Graph has answered, or at whatever ends the attempt before it (the slot is Graph's
        concurrency, so the answer's row and event are written after); Graph's answer goes to the mailbox's
        clearance too."""
        admission, clearance = asked
        try:
            try:
                token = self._token(conn)
            except (errors.ReauthRequired, errors.TransientError) as exc:
                held = row(False)
                if not isinstance(held, Delivery):
                    return held
                if isinstance(exc, errors.ReauthRequired):
                    return self.refusals.reauth_failed(msg, conn, held, exc)
                return self.ledger.reschedule(msg, held, self.refusals.backoff(held, exc), exc)
            record = row(True)
            if not isinstance(record, Delivery):
                return record
            refused: errors.MailbridgeError | None = None
            try:
                if draft_mode:
                    request_id = send_via_draft(
                        self.graph, self.attachments, self.deliveries, msg, token, record, uploads, body
                    )
                else:
                    request_id = self._send_mail(msg, token, body)
            except errors.MailbridgeError as exc:
                refused = exc
        finally:
            admission.report()
        own = record.mailbox == conn.mailbox.lower()
        verdict = clearance.report(refused, own, record.token_refreshed, record.held_since)
        if verdict is not None:  # a draft Graph refused for good was discarded already (drafts.py)
            return self.refusals.mailbox_verdict(msg, record, verdict)
        if refused is not None:
            return self.refusals.graph_refused(msg, conn, token, record, draft_mode, refused)
        record.graph_request_id = request_id
        return self.ledger.finish(msg, record, "sent", None)

    def _token(self, conn: Connection) -> str:
        # One miss per connection at a time: concurrent messages of a cold connection wait for the
        # first one's Key Vault read instead of each reading the vault (then all hit memory).
        with self._token_guard:
            lock = self._token_locks.setdefault(conn.connection_id, threading.Lock())
        with lock:
            return self.tokens.access_token(conn)

    # --- Graph, two ways ----------------------------------------------------------------------------------
    def _send_mail(self, msg: SendMessage, token: str, body: str) -> str | None:
        inline = [(a, self.attachments.content(msg, a)) for a in msg.attachments]
        mailbox = msg.from_.address if (msg.from_ and self.settings.send_as_endpoint == "users") else None
        return composer.send_mail(self.graph, token, mailbox, msg, body, inline)  # MIME when composed

    # --- helpers ---------------------------------------------------------------------------------------------
    def _plan(self, msg: SendMessage, conn: Connection) -> tuple[list[str], str]:
        """How each attachment travels (mail.attachment_plan), measured on the body as Graph will get it."""
        self.attachments.measure(msg)
        body = self.attachments.body_text(msg)
        uploads = check_limits(msg, self.settings, *request_sizes(msg, body))
        uploads = composer.plan(msg, body, uploads, self.attachments, self.deliveries, self.settings)
        if any(way != INLINE for way in uploads) and not _has_scope(conn, "Mail.ReadWrite"):
            raise errors.AttachmentsTooLarge(detail="the connection lacks Mail.ReadWrite: the user must reconnect")
        if msg.from_ and msg.from_.address.lower() != conn.mailbox.lower() and not _has_scope(conn, "Mail.Send.Shared"):
            # Granted before ENABLE_SHARED_MAILBOXES (its features_missing says shared_mailboxes): Graph would answer
            # 403; its own mailbox keeps working.
            raise errors.SendAsDenied(detail="the connection lacks Mail.Send.Shared: the user must reconnect")
        return uploads, body

    def _use_drafts(self, msg: SendMessage, conn: Connection, uploads: list[str]) -> bool:
        if any(way != INLINE for way in uploads):
            return True
        # Draft mode is the idempotent path; a draft send always saves to Sent Items, so honour
        # save_to_sent_items=false with sendMail.
        return self.settings.enable_mail_readwrite and msg.save_to_sent_items and _has_scope(conn, "Mail.ReadWrite")


def _has_scope(conn: Connection, scope: str) -> bool:
    want = scope.lower()
    return any(s.lower() == want or s.lower().endswith("/" + want) for s in conn.scopes)
