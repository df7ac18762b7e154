"""One tenant's or one mailbox's trouble, as Graph mail answers it (isolation faults, issue 25).

Tenant level: a tenant without Exchange Online (``Tenant.exchange_online`` False) answers every Graph mail call
``401 {"error": {"code": "OrganizationFromTenantGuidNotFound", "message": "The tenant for tenant guid '<tid>'
does not exist."}}`` whatever the token: refreshing it changes nothing. ``GET /me`` with a delegated token is a
directory read and still works (``mail`` null: Exchange fills it); with an app-only token it gets the same 401
(MicrosoftDocs/azure-docs#32957).

Mailbox level (``User.mailbox_state``), each with the calls it refuses:

========================  ======  ================================  =========================================
state                     status  code                              refused calls
========================  ======  ================================  =========================================
``not_enabled``           404     MailboxNotEnabledForRESTAPI       every mailbox call (unlicensed, on-premises,
                                                                    inactive or soft-deleted mailbox)
``account_suspended``     403*    ErrorAccountSuspend               every mailbox call (consumer mailbox suspended)
``quota_exceeded``        403*    ErrorQuotaExceeded                writes and submissions (mailbox full)
``submission_blocked``    403*    ErrorMessageSubmissionBlocked     submissions (sendMail, draft send)
``message_limit``         403*    ErrorExceededMessageLimit         submissions (consumer message quota)
``recipient_quota``       400*    ErrorExceededMaxRecipientLimit    submissions (consumer rolling recipient quota)
``restricted_sender``     202     (none: an NDR 5.1.8 in the Inbox) submissions are accepted and bounced
========================  ======  ================================  =========================================

``*``: Microsoft documents the code, not the HTTP status; the emulator's pick is the stricter reading (a 4xx the
app must not retry blindly) and ``status`` in the admin call overrides it. The consumer codes are Exchange's
"WASCL" (Outlook.com anti-abuse) errors (Exchange ServiceError enumeration). Sources: docs/emulator.md,
"Isolation faults (issue 25)".

Admin (test-only): ``PUT /_emulator/mailboxes/{address}/state {"state": ..., "status"?: n}``, ``DELETE`` clears;
``EmulatorAdmin.set_mailbox_state``. Counter ``graph.mailbox_state_refused``.
"""

from __future__ import annotations

from typing import Any

from emulator.core import HTTPError, Request, Response, Router, json_response
from emulator.graph_admin import find_mailbox, mailbox_summary
from emulator.graph_message import GraphError

READ, WRITE, SUBMIT = "read", "write", "submit"
# state -> (default HTTP status, Graph error code, message, the call kinds it refuses)
MAILBOX_STATES: dict[str, tuple[int, str, str, frozenset[str]]] = {
    "not_enabled": (
        404,
        "MailboxNotEnabledForRESTAPI",
        "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        frozenset({READ, WRITE, SUBMIT}),
    ),
    "account_suspended": (
        403,
        "ErrorAccountSuspend",
        "Access to this mailbox has been suspended.",
        frozenset({READ, WRITE, SUBMIT}),
    ),
    "quota_exceeded": (
        403,
        "ErrorQuotaExceeded",
        "Mailbox has exceeded maximum mailbox size.",
        frozenset({WRITE, SUBMIT}),
    ),
    "submission_blocked": (
        403,
        "ErrorMessageSubmissionBlocked",
        "Message submission has been blocked for this mailbox.",
        frozenset({SUBMIT}),
    ),
    "message_limit": (
        403,
        "ErrorExceededMessageLimit",
        "The number of messages submitted from this mailbox exceeded the limit.",
        frozenset({SUBMIT}),
    ),
    "recipient_quota": (
        400,
        "ErrorExceededMaxRecipientLimit",
        "The number of recipients for this mailbox has exceeded the limit.",
        frozenset({SUBMIT}),
    ),
    "restricted_sender": (202, "", "", frozenset()),  # accepted, then bounced: see bounce_restricted()
}
RESTRICTED_NDR_STATUS = "5.1.8"
RESTRICTED_NDR_TEXT = (
    "550 5.1.8 Access denied, bad outbound sender. Your message couldn't be delivered because you weren't "
    "recognized as a valid sender. The most common reason for this is that your email address is suspected of "
    "sending spam and it's no longer allowed to send email."
)


def no_exchange(tid: str) -> GraphError:
    """Graph's answer for a tenant that has no Exchange Online organisation."""
    return GraphError(401, "OrganizationFromTenantGuidNotFound", f"The tenant for tenant guid '{tid}' does not exist.")


def has_exchange(state: Any, tid: str) -> bool:
    """False when the tenant is known and has Exchange Online turned off."""
    tenant = state.directory.tenant(tid) if tid else None
    return tenant is None or tenant.exchange_online


def check(state: Any, mailbox: Any, kind: str) -> None:
    """Raise the mailbox state's GraphError when it refuses a call of ``kind`` (read / write / submit)."""
    current = mailbox.mailbox_state
    if not current:
        return
    default_status, code, message, refuses = MAILBOX_STATES[current["state"]]
    if kind not in refuses:
        return
    state.counters.incr("graph.mailbox_state_refused")
    raise GraphError(int(current.get("status") or default_status), code, message)


def is_restricted_sender(mailbox: Any) -> bool:
    """Exchange Online's "restricted entities" (outbound spam): submissions are accepted and bounced 5.1.8."""
    return bool(mailbox.mailbox_state) and mailbox.mailbox_state["state"] == "restricted_sender"


def parse(data: dict[str, Any]) -> dict[str, Any]:
    """The mailbox state from an admin body; ValueError for a malformed one."""
    name = data.get("state")
    if name not in MAILBOX_STATES:
        raise ValueError(f"state must be one of {sorted(MAILBOX_STATES)}")
    status = data.get("status")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 400 <= status < 600):
        raise ValueError("status must be an HTTP error status (400-599)")
    if status is not None and name == "restricted_sender":
        raise ValueError("restricted_sender answers 202 (then an NDR): it takes no status")
    return {"state": name, "status": status}


def register(router: Router, state: Any, store: Any) -> None:
    """The admin routes that set and clear a mailbox's state."""

    def bad(message: str) -> HTTPError:
        return HTTPError(json_response(400, {"error": {"code": "BadRequest", "message": message}}))

    @router.route("PUT", "/_emulator/mailboxes/{address}/state", "admin.graph.mailboxes")
    def set_state(req: Request, address: str) -> Response:
        user = find_mailbox(state, address)
        try:
            data = req.json() if req.body else {}
            parsed = parse(data if isinstance(data, dict) else {})
        except ValueError as exc:
            raise bad(str(exc)) from None
        with state.lock:
            user.mailbox_state = parsed
        return json_response(200, mailbox_summary(store, user))

    @router.route("DELETE", "/_emulator/mailboxes/{address}/state", "admin.graph.mailboxes")
    def clear_state(req: Request, address: str) -> Response:
        user = find_mailbox(state, address)
        with state.lock:
            user.mailbox_state = None
        return json_response(200, mailbox_summary(store, user))
