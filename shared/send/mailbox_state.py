"""May this mailbox send now, and what does Graph's refusal say about the mailbox (issue 25 items 3 and 4)?

The sender asks once per attempt, beside pacing: ``states.ask(conn) -> Clearance``; an attempt that went to
Graph reports the answer once, ``clearance.report(refusal, ...) -> Verdict | None`` (None: the answer is not
about the mailbox, the sender goes on as before). The state lives on the connection row (``mailbox_state`` and
its companions, shared/tokens/store.py), shared by every instance, never in memory:

=====================  ========================================================  ===============================
state                  entered on                                                later messages
=====================  ========================================================  ===============================
mailbox_unavailable    404 ``MailboxNotEnabledForRESTAPI`` (unlicensed, on-prem,  fail fast, no Graph call
                       inactive, soft-deleted); a 401 that survived a freshly
                       forced token (a tenant without Exchange Online answers
                       401 ``OrganizationFromTenantGuidNotFound`` whatever the
                       token)
mailbox_full           ``ErrorQuotaExceeded``                                    fail fast, no Graph call
sending_blocked        ``ErrorMessageSubmissionBlocked``, ``ErrorAccountSuspend`` held, then ``sending_blocked``
sending_quota          Outlook.com's rolling quotas (WASCL): ``ErrorExceeded-     held, then ``daily_limit_reached``
                       MessageLimit``; ``ErrorExceededMaxRecipientLimit`` on a    (like pacing's daily limit)
                       consumer mailbox (the per-message limit is checked
                       before Graph, so there it is the quota, not the message)
=====================  ========================================================  ===============================

Holds last at most DAILY_LIMIT_MAX_HOLD_SECONDS from the message's first hold. The way back: a reconnect clears
the state (shared/connect/grants.py), or a re-probe: once ``mailbox_probe_at`` has passed, the next message is let
through to Graph as the probe, claimed with an ETag so one instance probes; Graph accepting it clears the state
(event ``connection.mailbox_restored``), a refusal pushes the next probe out (backoff doubling from
``first_probe_s`` to ``max_probe_s``). Entering a state is one ETag-guarded write: whichever instance makes it
emits the one ``connection.<state>`` event of the episode; the others find it made and stay quiet. A refusal
about another mailbox (``from`` sent through ``/users/{from}``) fails that message only, with the state's code (a
401 surviving the fresh token too: never a retry): the state describes the connected mailbox.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.base import errors
from shared.base.events import EventPublisher
from shared.base.formats import iso
from shared.base.settings import Settings
from shared.pacing.admission import CONSUMER_TENANT_ID
from shared.tokens.store import Connection, ConnectionStore

logger = logging.getLogger(__name__)

MAILBOX_UNAVAILABLE, MAILBOX_FULL = "mailbox_unavailable", "mailbox_full"
SENDING_BLOCKED, SENDING_QUOTA = "sending_blocked", "sending_quota"
HELD = {SENDING_BLOCKED, SENDING_QUOTA}  # messages wait; the others fail fast
_ERRORS: dict[str, type[errors.SendError]] = {
    MAILBOX_UNAVAILABLE: errors.MailboxUnavailable,
    MAILBOX_FULL: errors.MailboxFull,
    SENDING_BLOCKED: errors.SendingBlocked,
    SENDING_QUOTA: errors.DailyLimitReached,
}
_GRAPH_EXTRA = ("graph_request_id", "graph_code", "graph_status")


def state_of(conn: Connection, refusal: errors.MailbridgeError, fresh_token: bool) -> str:
    """Given this Graph refusal of a send from ``conn``'s own mailbox, what is the mailbox's state? "" when the
    refusal is about the message, or passing. ``fresh_token``: the token Graph refused was forced fresh for
    this message already, so a 401 is no longer about the token."""
    if isinstance(refusal, errors.TransientError):
        return MAILBOX_UNAVAILABLE if fresh_token and refusal.extra.get("token_rejected") else ""
    if isinstance(refusal, errors.MailboxUnavailable):
        return MAILBOX_UNAVAILABLE
    if isinstance(refusal, errors.MailboxFull):
        return MAILBOX_FULL
    if isinstance(refusal, errors.SendingBlocked):
        return SENDING_BLOCKED
    if isinstance(refusal, errors.DailyLimitReached) and refusal.extra.get("graph_code"):
        return SENDING_QUOTA
    consumer = conn.tenant_id.lower() == CONSUMER_TENANT_ID
    if consumer and isinstance(refusal, errors.TooManyRecipients) and refusal.extra.get("graph_code"):
        return SENDING_QUOTA
    return ""


@dataclass
class Verdict:
    """What the mailbox's state makes of one message: fail it with ``error`` now (``delay`` 0), or hold it for
    ``delay`` seconds (a wait for the mailbox, not a failed attempt; ``reason`` goes on its row)."""

    error: errors.MailbridgeError
    delay: float = 0.0
    reason: str = ""


@dataclass
class Clearance:
    """The answer to :meth:`MailboxStates.ask`: ``admitted`` (the mailbox sends, or this attempt is the re-probe),
    else :meth:`verdict` says what to do with the message."""

    states: MailboxStates = field(repr=False)
    conn: Connection = field(repr=False)
    state: str = ""
    admitted: bool = True
    probe: bool = False

    def verdict(self, held_since: float) -> Verdict:
        """For a message not admitted: fail fast, or hold until the next re-probe (bounded from ``held_since``)."""
        return self.states.verdict(self.conn, self.state, held_since, None)

    def report(self, refusal: errors.MailbridgeError | None, own_mailbox: bool, fresh_token: bool, held_since: float):
        """Graph's answer to the attempt (``refusal`` None: it accepted). Returns the Verdict for the message when
        the answer is about the mailbox, else None. ``own_mailbox``: the call was for the connected mailbox."""
        if refusal is None:
            if self.probe:
                self.states.restored(self.conn, self.state)
            return None
        state = state_of(self.conn, refusal, fresh_token)
        if not state:
            return None
        if not own_mailbox:  # about a `from` mailbox (/users/{from}): this message fails, the connection's state stays
            extra = {k: refusal.extra.get(k) for k in _GRAPH_EXTRA}
            return Verdict(_ERRORS[state](detail=refusal.detail, **extra))
        row = self.states.enter(self.conn, state, refusal, self.probe)
        return self.states.verdict(row, state, held_since, refusal)


class MailboxStates:
    """The policy over the connection rows' mailbox state; ``first_probe_s`` and ``max_probe_s`` bound the
    re-probe backoff (tests scale them down)."""

    def __init__(
        self,
        settings: Settings,
        connections: ConnectionStore,
        events: EventPublisher,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.connections = connections
        self.events = events
        self.clock = clock
        self.first_probe_s = 300.0
        self.max_probe_s = 6 * 3600.0

    def ask(self, conn: Connection) -> Clearance:
        """May this mailbox send now? From the row the sender holds (no Storage call) unless a re-probe is due:
        then one ETag-guarded write claims it, so of all instances one message probes."""
        state = conn.mailbox_state
        if not state:
            return Clearance(self, conn)
        now = self.clock()
        if conn.mailbox_probe_at > now:
            return Clearance(self, conn, state, admitted=False)

        def claim(row: Connection) -> bool:
            if row.mailbox_state != state or row.mailbox_probe_at > now:
                return False
            row.mailbox_probe_at = now + self._backoff(row.mailbox_probes)  # a probe that dies frees it then
            return True

        row, claimed = self.connections.change(conn.connection_id, claim)
        if claimed:
            logger.info("Connection %s: re-probing the mailbox (%s)", conn.connection_id, state)
            return Clearance(self, row, state, admitted=True, probe=True)
        if not row.mailbox_state:
            return Clearance(self, row)
        return Clearance(self, row, row.mailbox_state, admitted=False)

    def verdict(
        self, conn: Connection, state: str, held_since: float, refusal: errors.MailbridgeError | None
    ) -> Verdict:
        """Fail fast, or hold until the next probe unless that passes the longest hold."""
        extra = {k: refusal.extra.get(k) for k in _GRAPH_EXTRA} if refusal else {}
        detail = f"{refusal.detail}" if refusal and refusal.detail else f"the mailbox is {state}"
        if refusal is None and conn.mailbox_state_code:
            detail += f" (Graph {conn.mailbox_state_code})"
        if state not in HELD:
            return Verdict(_ERRORS[state](detail=detail, **extra))
        now = self.clock()
        delay = max(1.0, conn.mailbox_probe_at - now) * random.uniform(1.0, 1.1)
        since = held_since or now
        if now + delay - since > self.settings.daily_limit_max_hold_seconds:
            return Verdict(_ERRORS[state](detail=f"held {now - since:.0f}s: {detail}", **extra))
        return Verdict(_ERRORS[state](detail=detail, **extra), delay, state)

    def enter(self, conn: Connection, state: str, refusal: errors.MailbridgeError, probe: bool) -> Connection:
        """Record that Graph refused the mailbox for ``state``: a new episode (one event, from the one instance whose
        write made it), or a refused probe (the next one later). Returns the row as it now stands."""
        now = self.clock()
        new_episode = False

        def edit(row: Connection) -> bool:
            nonlocal new_episode
            if row.mailbox_state == state and not probe:
                return False  # another message or instance got here first: its event stands
            new_episode = row.mailbox_state != state
            if new_episode:
                row.mailbox_state, row.mailbox_state_since, row.mailbox_probes = state, now, 0
            else:
                row.mailbox_probes += 1
            row.mailbox_state_code = str(refusal.extra.get("graph_code") or "")
            row.mailbox_probe_at = now + self._backoff(row.mailbox_probes)
            return True

        row, wrote = self.connections.change(conn.connection_id, edit)
        if wrote and new_episode:
            logger.warning(
                "Connection %s: mailbox state %s (Graph %s)", conn.connection_id, state, row.mailbox_state_code
            )
            self.events.connection_event(state, conn.connection_id, self._event_data(row, _ERRORS[state]().to_dict()))
        return row

    def restored(self, conn: Connection, state: str) -> None:
        """A probe went through: the episode is over (one event, from the instance that cleared it)."""

        def edit(row: Connection) -> bool:
            if row.mailbox_state != state:
                return False
            row.clear_mailbox_state()
            return True

        row, wrote = self.connections.change(conn.connection_id, edit)
        if wrote:
            logger.info("Connection %s: mailbox sends again (was %s)", conn.connection_id, state)
            data = {**self._event_data(row), "was": state}
            self.events.connection_event("mailbox_restored", conn.connection_id, data)

    def _backoff(self, refused_probes: int) -> float:
        return min(self.max_probe_s, self.first_probe_s * 2 ** min(refused_probes, 20)) * random.uniform(1.0, 1.2)

    @staticmethod
    def _event_data(row: Connection, error: dict | None = None) -> dict:
        data = {
            "user_ref": row.user_ref,
            "mailbox": row.mailbox,
            "state": row.mailbox_state or None,
            "graph_code": row.mailbox_state_code or None,
            "since": iso(row.mailbox_state_since),
            "next_check_at": iso(row.mailbox_probe_at),
        }
        return {**data, **({"error": error} if error else {})}
