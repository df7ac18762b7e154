"""The one exception tree of Mailbridge. Nothing here imports a framework: adapters map ``http_status`` and ``code``.

Every error a user, an operator or a producer can meet has a stable ``code`` (part of the public contract: it
appears in HTTP error bodies, redirect query strings, delivery records and events), a sentence telling them what
to do, and a ``transient`` flag saying whether trying again later can help::

    MailbridgeError                     code="internal_error"
    ├── SettingsError                   missing or malformed app setting (fails at start)
    ├── InputError                      bad input from a caller: HTTP 4xx, never retried
    │   ├── InvalidRequest              invalid_request        (400)
    │   ├── InvalidMessage              invalid_message        (400 / queue message rejected)
    │   │   ├── InvalidJson             invalid_json
    │   │   ├── TooManyRecipients       too_many_recipients
    │   │   ├── HeaderInjection         header_injection
    │   │   ├── InvalidBlobName         invalid_blob_name (a blob name outside the rules or this message's prefix)
    │   │   ├── InvalidHeader           invalid_header
    │   │   │   └── TooManyHeaders      too_many_headers (Graph takes 5 internetMessageHeaders, ours included)
    │   │   ├── InvalidMessageId, InvalidListUnsubscribe, DuplicateInternetMessageId: in shared/send/mail_headers.py
    │   │   ├── SendAsNotEnabled        send_as_not_enabled
    │   │   ├── InvalidSendAt           invalid_send_at (send_at not RFC 3339 UTC, in the past, or > 30 days ahead)
    │   │   └── CallbackQueueNotAllowed callback_queue_not_allowed
    │   ├── ReturnUrlNotAllowed         return_url_not_allowed (400)
    │   ├── NotFound                    not_found              (404)
    │   │   ├── UnknownConnection       unknown_connection
    │   │   └── SampleUiDisabled        not_found (the sample page is off)
    │   ├── Conflict                    conflict               (409)
    │   │   ├── ResultUsed              result_used            (409: a connect result claimed twice)
    │   │   ├── MailboxAddressUnknown   mailbox_address_unknown (409: no email address known for the mailbox)
    │   │   └── NotCancelable           not_cancelable (409: the message is being sent or already final)
    │   ├── HostNotAllowed              host_not_allowed       (403: the sample page on another Host)
    │   ├── OriginNotAllowed            origin_not_allowed     (403: a cross-site change through the sample page)
    │   ├── JsonRequired                json_required          (400: a sample-page change without a JSON body)
    │   ├── InvalidResult               invalid_result         (400: malformed, tampered or unknown result)
    │   ├── ResultExpired               result_expired         (410: the 10-minute claim window passed)
    │   └── ClaimMismatch               claim_mismatch         (403: claimed for another user_ref)
    ├── ConnectError                    the OAuth connect flow failed; shown on return_url
    │   ├── ExpiredLink                 expired_link
    │   ├── InvalidState                invalid_state
    │   ├── AdminConsentRequired        admin_consent_required
    │   ├── BlockedByPolicy             blocked_by_policy
    │   ├── MfaRequired                 mfa_required
    │   ├── InteractionRequired         interaction_required
    │   ├── UserDeclined                user_declined
    │   ├── AppMisconfigured            app_misconfigured
    │   ├── AppRemovedInTenant          app_removed_in_tenant (that tenant's admin deleted the enterprise app)
    │   ├── AppDisabledInTenant         app_disabled_in_tenant (that tenant's admin disabled it)
    │   ├── IdentityMismatch            identity_mismatch
    │   └── InvalidIdToken              invalid_id_token (the id_token's issuer or expiry is not Entra's)
    ├── ReauthRequired                  reauth_required: the stored grant is dead, the user must reconnect
    ├── SendError                       Graph refused or failed a send
    │   ├── SendAsDenied                send_as_denied
    │   ├── AttachmentsTooLarge         attachments_too_large
    │   ├── MessageTooLarge             message_too_large
    │   ├── InvalidRecipients           invalid_recipients
    │   ├── MailboxAccessDenied         access_denied
    │   ├── AttemptsExhausted           attempts_exhausted
    │   ├── DailyLimitReached           daily_limit_reached (held past DAILY_LIMIT_MAX_HOLD_SECONDS)
    │   ├── MailboxUnavailable          mailbox_unavailable (no REST mailbox, no Exchange Online: fails fast)
    │   ├── SendingBlocked              sending_blocked (Microsoft blocked submission: held, then failed)
    │   ├── MailboxFull                 mailbox_full (over its storage quota: fails fast)
    │   └── OutcomeUnknown              outcome_unknown (the request may have been applied)
    └── TransientError                  try again later (transient=True)
        ├── Throttled                   throttled (carries retry_after seconds)
        ├── TemporarilyUnavailable      temporarily_unavailable
        └── AppCredentialFailed         app_credential_failed (Entra refused the app's own credential: operator)
"""

from __future__ import annotations

from typing import Any, ClassVar


class MailbridgeError(Exception):
    """Base of every error Mailbridge raises on purpose."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500
    transient: ClassVar[bool] = False
    default_hint: ClassVar[str] = "Something went wrong on our side. Try again later."

    def __init__(self, message: str | None = None, *, detail: str | None = None, **extra: Any) -> None:
        self.message = message or self.default_hint
        self.detail = detail
        self.extra = extra
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body shared by HTTP responses, delivery records and events."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail:
            body["detail"] = self.detail
        body.update({k: v for k, v in self.extra.items() if v is not None})
        return body


class SettingsError(MailbridgeError):
    code = "settings_error"
    default_hint = "An app setting is missing or malformed; see local.settings.sample.json."

    def __init__(self, name: str, problem: str) -> None:
        self.setting = name
        super().__init__(f"App setting {name}: {problem}", setting=name)


class InputError(MailbridgeError):
    code = "invalid_request"
    http_status = 400
    default_hint = "The request is not valid."


class InvalidRequest(InputError):
    code = "invalid_request"


class InvalidMessage(InputError):
    code = "invalid_message"
    default_hint = "The message does not match the mailbridge.send/v1 schema."


class ReturnUrlNotAllowed(InputError):
    code = "return_url_not_allowed"
    default_hint = "return_url must be on an origin listed in ALLOWED_RETURN_ORIGINS."


class NotFound(InputError):
    code = "not_found"
    http_status = 404
    default_hint = "No such resource."


class Conflict(InputError):
    code = "conflict"
    http_status = 409
    default_hint = "The resource is in a state that does not allow this."


class InvalidResult(InputError):
    code = "invalid_result"
    default_hint = "This connect result is not one Mailbridge issued (malformed, altered or unknown)."


class ResultUsed(Conflict):
    code = "result_used"
    default_hint = "This connect result was already claimed (or discarded). Start the connection again."


class ResultExpired(InputError):
    code = "result_expired"
    http_status = 410
    default_hint = "This connect result was not claimed within 10 minutes and was discarded. Connect again."


class ClaimMismatch(InputError):
    code = "claim_mismatch"
    http_status = 403
    default_hint = (
        "The mailbox was connected through a link made for another user_ref (a forwarded link?). "
        "The grant was discarded; the user must connect with a link of their own."
    )


class ConnectError(MailbridgeError):
    """A connect attempt failed; the code travels back to the caller's return_url."""

    code = "connect_failed"
    http_status = 400


class ExpiredLink(ConnectError):
    code = "expired_link"
    default_hint = "This connect link has expired or was already used. Start the connection again."


class InvalidState(ConnectError):
    code = "invalid_state"
    default_hint = "The sign-in response did not match a sign-in we started. Start the connection again."


class AdminConsentRequired(ConnectError):
    code = "admin_consent_required"
    default_hint = (
        "Your organisation requires an administrator to approve this app. "
        "Send the admin consent link to your IT administrator, then connect again."
    )


class BlockedByPolicy(ConnectError):
    code = "blocked_by_policy"
    default_hint = (
        "A Conditional Access policy of your organisation blocked the sign-in. "
        "Ask your IT administrator to allow this app, or connect from a compliant device."
    )


class MfaRequired(ConnectError):
    code = "mfa_required"
    default_hint = "Your organisation requires multi-factor authentication. Connect again and complete it."


class InteractionRequired(ConnectError):
    code = "interaction_required"
    default_hint = "Microsoft needs you to sign in interactively. Connect again."


class UserDeclined(ConnectError):
    code = "user_declined"
    default_hint = "The permission request was declined. Connect again and accept to send mail from your mailbox."


class AppMisconfigured(ConnectError):
    code = "app_misconfigured"
    default_hint = "The Mailbridge app registration is misconfigured. Tell the operator of this service."


class AppRemovedInTenant(ConnectError):
    """The user's organisation deleted Mailbridge's enterprise application (AADSTS700016 for that tenant only)."""

    code = "app_removed_in_tenant"
    default_hint = (
        "Your organisation's administrator removed the Mailbridge enterprise application from your tenant. "
        "An administrator restores it (Entra admin center > Enterprise applications > Deleted applications, "
        "within 30 days) or approves Mailbridge again; then connect again."
    )


class AppDisabledInTenant(ConnectError):
    """The user's organisation disabled Mailbridge's enterprise application (AADSTS7000112 for that tenant)."""

    code = "app_disabled_in_tenant"
    default_hint = (
        "Your organisation's administrator disabled the Mailbridge enterprise application. An administrator "
        "enables it again (Entra admin center > Enterprise applications > Mailbridge > Properties > "
        "'Enabled for users to sign-in?' Yes); then connect again."
    )


class IdentityMismatch(ConnectError):
    code = "identity_mismatch"
    default_hint = "The account that signed in is not the one this connection expected. Connect again."


class InvalidIdToken(ConnectError):
    """The code redemption's id_token is not one Entra issues for this sign-in: an issuer that does not match its
    tenant and the authority, or an expiry in the past (shared/connect/id_tokens.py). Nothing is stored."""

    code = "invalid_id_token"
    default_hint = (
        "Microsoft's answer to this sign-in could not be verified. Connect again; if it keeps happening, tell the"
        " service operator."
    )


class ReauthRequired(MailbridgeError):
    code = "reauth_required"
    http_status = 409
    default_hint = "The mailbox connection has expired or was revoked. The user must connect again."


class SendError(MailbridgeError):
    code = "send_failed"
    http_status = 502
    default_hint = "Microsoft Graph refused the message."


class SendAsDenied(SendError):
    code = "send_as_denied"
    default_hint = "The connected user has no Send As or Send on Behalf right on the 'from' mailbox."


class AttachmentsTooLarge(SendError):
    code = "attachments_too_large"
    http_status = 413
    default_hint = (
        "Attachments over 3 MB need large-attachment mode (ENABLE_MAIL_READWRITE) and a reconnect "
        "granting Mail.ReadWrite."
    )


class MessageTooLarge(SendError):
    code = "message_too_large"
    http_status = 413
    default_hint = "The message is larger than the allowed total size (MAX_MESSAGE_BYTES)."


class InvalidRecipients(SendError):
    code = "invalid_recipients"
    http_status = 400
    default_hint = "Microsoft Graph rejected one or more recipient addresses."


class OutcomeUnknown(SendError):
    code = "outcome_unknown"
    default_hint = (
        "Microsoft Graph may or may not have sent this message (the connection failed after the request "
        "was sent). It was not resent, to avoid a duplicate; check the mailbox's Sent Items."
    )


class TransientError(MailbridgeError):
    code = "temporarily_unavailable"
    http_status = 503
    transient = True
    default_hint = "A Microsoft service is temporarily unavailable. It will be retried."


class Throttled(TransientError):
    code = "throttled"
    http_status = 429
    default_hint = "Microsoft throttled the request. It will be retried after the delay Microsoft asked for."

    def __init__(self, message: str | None = None, *, retry_after: float = 1.0, **extra: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, retry_after=retry_after, **extra)


class TemporarilyUnavailable(TransientError):
    code = "temporarily_unavailable"


class AppCredentialFailed(TransientError):
    """Entra refused Mailbridge's own credential (secret, federated credential), not the user's grant: the
    operator must fix the app registration; connections stay connected and messages wait (transient)."""

    code = "app_credential_failed"
    default_hint = (
        "Microsoft Entra refused the Mailbridge app's own credential (client secret wrong or expired, or the "
        "federated identity credential does not match). The operator must fix the app registration; "
        "messages are retried and connections stay connected."
    )


# --- send pipeline (issue 5) ------------------------------------------------------------------------
# Rejections of a mailbridge.send/v1 message, all InvalidMessage: HTTP 400, or queue messages recorded ``rejected``.


class InvalidJson(InvalidMessage):
    code = "invalid_json"
    default_hint = "The queue message is not UTF-8 JSON (plain, or base64-encoded JSON)."


class TooManyRecipients(InvalidMessage):
    code = "too_many_recipients"
    default_hint = "A message may have at most 500 recipients (to + cc + bcc). Split it into several messages."


class HeaderInjection(InvalidMessage):
    code = "header_injection"
    default_hint = (
        "Line breaks and control characters (CR, LF, NUL, VT, FF, NEL, U+2028/U+2029 and other C0/C1 controls) are "
        "not allowed in the subject, addresses, names or header values; TAB only in the subject and header values."
    )


class InvalidBlobName(InvalidMessage):
    code = "invalid_blob_name"
    default_hint = (
        "A blob name must be segments of letters, digits, '.', '_', ':' or '-' joined by single '/', none ending "
        "in '.', and may not point under api/ of another message: name a blob your producer wrote to "
        "ATTACHMENTS_CONTAINER, or send the content inline."
    )


class InvalidHeader(InvalidMessage):
    code = "invalid_header"
    default_hint = "Custom headers must be named x-... (letters, digits, hyphens) and x-mailbridge-* is reserved."


class TooManyHeaders(InvalidHeader):
    code = "too_many_headers"
    default_hint = (
        "A message may carry at most 4 custom headers: Microsoft Graph takes 5 internetMessageHeaders and "
        "Mailbridge adds x-mailbridge-id. Merge values into fewer headers."
    )


class UnknownConnection(NotFound):
    code = "unknown_connection"
    default_hint = "No connected mailbox has this connection_id (never connected, or disconnected)."


class SendAsNotEnabled(InvalidMessage):
    code = "send_as_not_enabled"
    default_hint = "Sending as another mailbox ('from') needs ENABLE_SHARED_MAILBOXES=true and a reconnect."


class InvalidSendAt(InvalidMessage):
    code = "invalid_send_at"
    default_hint = "send_at must be RFC 3339 in UTC (2030-01-31T09:00:00Z), from now to 30 days ahead; or left out."


class CallbackQueueNotAllowed(InvalidMessage):
    code = "callback_queue_not_allowed"
    default_hint = (
        "callback.queue may name only EVENTS_QUEUE or a queue the operator listed in CALLBACK_QUEUES. Ask the "
        "operator to add your queue, or leave callback out and read EVENTS_QUEUE."
    )


class MailboxAccessDenied(SendError):
    code = "access_denied"
    http_status = 403
    default_hint = (
        "Microsoft Graph denied access to the mailbox. The user may need to reconnect to grant the "
        "permissions this operation needs, or lacks Exchange rights on the mailbox."
    )


class AttemptsExhausted(SendError):
    code = "attempts_exhausted"
    default_hint = "The message was delayed too many times (throttling or pacing) and was given up."


class DailyLimitReached(SendError):
    code = "daily_limit_reached"
    default_hint = (
        "The mailbox's daily recipient budget stayed used up for longer than DAILY_LIMIT_MAX_HOLD_SECONDS, so the "
        "message was not sent (Exchange would have NDR'd it and blocked the mailbox). Send it again later."
    )


class MailboxUnavailable(SendError):
    """Graph has no mailbox to send from: 404 ``MailboxNotEnabledForRESTAPI`` (unlicensed, on-premises, inactive or
    soft-deleted), or a 401 that a freshly redeemed token did not cure (a tenant without Exchange Online answers
    ``OrganizationFromTenantGuidNotFound`` whatever the token). A connection state (shared/send/mailbox_state.py)."""

    code = "mailbox_unavailable"
    http_status = 409
    default_hint = (
        "Microsoft 365 has no usable mailbox for this connection (no Exchange Online licence, a mailbox hosted "
        "on-premises, inactive or deleted, or no Exchange Online in the organisation). Messages fail at once until "
        "the user reconnects or a periodic re-check finds the mailbox again; an IT administrator must fix the mailbox."
    )


class SendingBlocked(SendError):
    """Microsoft refuses submissions from this mailbox (``ErrorMessageSubmissionBlocked``: e.g. a user restricted for
    outbound spam; ``ErrorAccountSuspend``: a suspended consumer account). Messages are held, then fail."""

    code = "sending_blocked"
    http_status = 409
    default_hint = (
        "Microsoft has blocked this mailbox from sending (restricted for outbound spam, or the account is suspended). "
        "Messages wait while Mailbridge re-checks; an administrator must release the user (Microsoft Defender, "
        "Restricted entities) or the account owner must restore the account."
    )


class MailboxFull(SendError):
    """The mailbox is over its storage quota (``ErrorQuotaExceeded``): nothing can be saved or sent."""

    code = "mailbox_full"
    http_status = 409
    default_hint = (
        "The mailbox is full (over its storage quota), so Microsoft refuses to send from it. The user must delete "
        "mail or an administrator must raise the quota; messages fail at once until a re-check succeeds."
    )


class ProcessingFailed(SendError):
    code = "processing_failed"
    default_hint = (
        "Mailbridge failed to process this message several times in a row and moved it to the poison queue; "
        "nothing was sent. The operator's logs (by message id) say why; send it again with a new id."
    )


class SampleUiDisabled(NotFound):
    default_hint = "The sample page is not enabled (ENABLE_SAMPLE_UI, local runs only)."


class MailboxAddressUnknown(Conflict):
    code = "mailbox_address_unknown"
    default_hint = (
        "Mailbridge knows no email address for this mailbox (the sign-in gave a phone number or a user name, and "
        "no email claim), so it sends no test message to it. The mailbox still sends; to fix the address, the user "
        "connects again once their account has an email address."
    )


class NotCancelable(Conflict):
    code = "not_cancelable"
    default_hint = "Only a message not yet sending (scheduled, paced, held) can be canceled: GET it for its status."


class HostNotAllowed(InputError):
    code = "host_not_allowed"
    http_status = 403
    default_hint = "The sample page answers only on the host and port of PUBLIC_BASE_URL: open it there."


class OriginNotAllowed(InputError):
    code = "origin_not_allowed"
    http_status = 403
    default_hint = "Only the sample page itself (the origin of PUBLIC_BASE_URL) may change things through /api/ui."


class JsonRequired(InputError):
    code = "json_required"
    default_hint = "Requests to /api/ui that change something must be Content-Type: application/json."
