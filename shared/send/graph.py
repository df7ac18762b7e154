"""Microsoft Graph mail calls on the one pooled HTTP session, with timeouts on every call.

The hard part of sending is knowing whether Graph applied a request that failed. Every failure is
mapped to the exception tree with that question answered:

- nothing was applied (connect failure, 401, 429, 503): a ``TransientError`` (``Throttled`` carries
  Retry-After) — safe to send again later;
- it may have been applied (500/502/504, read timeout, connection reset after the request went out,
  on a call that changes state): ``OutcomeUnknown`` — the caller decides (see docs/sending.md);
- Graph refused it for good (403 ErrorSendAsDenied, 413, invalid recipients, ...): a permanent
  ``SendError`` subclass; refusals about the mailbox itself (not enabled for REST, submission blocked, full)
  get their own (``MailboxUnavailable``, ``SendingBlocked``, ``MailboxFull``).

Every exception and result carries Graph's ``request-id`` (what Microsoft support asks for).
"""

from __future__ import annotations

import base64
import json as jsonlib
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from shared.base import errors
from shared.base.formats import parse_retry_after
from shared.base.settings import Settings
from shared.send.mail import SendMessage

logger = logging.getLogger(__name__)

# A fixed property set GUID for Mailbridge's client-chosen idempotency property (any GUID works;
# it only has to stay the same forever so retries can find earlier drafts).
PROPERTY_SET = "{8c3b3f3e-6a55-4f2e-9d54-5b1e2f0a7c11}"
IDEMPOTENCY_PROPERTY = f"String {PROPERTY_SET} Name MailbridgeId"
IDEMPOTENCY_HEADER = "x-mailbridge-id"
TIMEOUT = (5.0, 30.0)  # (connect, read) seconds for ordinary calls
UPLOAD_TIMEOUT = (5.0, 120.0)  # a 4 MB chunk on a slow link
# Graph asks for upload ranges in multiples of 320 KiB, each at most 4 MiB: 12 x 320 KiB.
UPLOAD_CHUNK_BYTES = 12 * 320 * 1024
FILE_ATTACHMENT = "#microsoft.graph.fileAttachment"

_BY_GRAPH_CODE: dict[str, type[errors.MailbridgeError]] = {
    "ErrorSendAsDenied": errors.SendAsDenied,
    "ErrorInvalidRecipients": errors.InvalidRecipients,
    "ErrorExceededMaxRecipientLimit": errors.TooManyRecipients,
    "ErrorMessageSizeExceeded": errors.MessageTooLarge,
    "ErrorAttachmentSizeLimitExceeded": errors.AttachmentsTooLarge,
    "InvalidInternetMessageHeader": errors.InvalidHeader,
    "InvalidInternetMessageHeaderCollection": errors.TooManyHeaders,
    "RequestEntityTooLarge": errors.MessageTooLarge,
}
# Refusals about the mailbox, not the request (docs/emulator.md "Isolation faults"; Exchange's ServiceError
# enumeration, learn.microsoft.com/dotnet/api/microsoft.exchange.webservices.data.serviceerror). Graph's status
# for the consumer codes is unconfirmed (403 assumed; 507 "maximum storage quota" for a full mailbox would be a
# 5xx), so these are looked up by code before the status decides. shared/send/mailbox_state.py turns them into
# connection states.
_MAILBOX_CODES: dict[str, type[errors.MailbridgeError]] = {
    "MailboxNotEnabledForRESTAPI": errors.MailboxUnavailable,
    "ErrorMessageSubmissionBlocked": errors.SendingBlocked,
    "ErrorAccountSuspend": errors.SendingBlocked,
    "ErrorQuotaExceeded": errors.MailboxFull,
    "ErrorExceededMessageLimit": errors.DailyLimitReached,  # Outlook.com's rolling message quota (WASCL)
}


@dataclass
class GraphResponse:
    status: int
    request_id: str | None
    body: dict[str, Any] | None


def retry_after_seconds(value: str | None, default: float) -> float:
    """Retry-After as seconds (shared/base/formats.py ``parse_retry_after``); ``default`` when absent or unreadable."""
    seconds = parse_retry_after(value)
    return default if seconds is None else seconds


def json_bytes(payload: Any) -> bytes:
    """A request body as Graph gets it: compact UTF-8 JSON (not \\u-escaped: an 'é' is 2 bytes, not 6). Graph's
    ~4 MB request limit counts these bytes."""
    return jsonlib.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def file_attachment(att: Any, raw: bytes) -> dict[str, Any]:
    """A ``#microsoft.graph.fileAttachment`` for an attachment of the message and its bytes."""
    return {
        "@odata.type": FILE_ATTACHMENT,
        "name": att.name,
        "contentType": att.content_type,
        "contentBytes": base64.b64encode(raw).decode("ascii"),
        **({"isInline": True, "contentId": att.content_id} if att.content_id else {}),
    }


def request_sizes(msg: SendMessage, body_content: str) -> tuple[int, list[int]]:
    """(bytes of the largest request carrying ``msg`` without attachments, what each attachment adds besides
    its base64): the sendMail body and the draft-creation body (with our extended property) are both below
    the first. :func:`shared.send.limits.attachment_plan` decides with these."""
    message = GraphClient.build_message(msg, body_content, [], with_property=True)
    base = len(json_bytes({"message": message, "saveToSentItems": msg.save_to_sent_items}))
    overheads = [len(json_bytes(file_attachment(att, b""))) + 1 for att in msg.attachments]  # + the comma
    return base, overheads


def user_segment(mailbox: str) -> str:
    """``mailbox`` as one ``/users/{id | userPrincipalName}`` path segment: every reserved character
    percent-encoded, ``/`` included (``quote``'s default keeps it, and ``a/../b`` would become another path; Graph
    also asks for ``#`` as ``%23``, learn.microsoft.com/graph/api/user-get). Graph decodes ``%2F`` back into a
    separator (microsoftgraph/microsoft-graph-docs#10167), so this is not enough alone: shared.send.limits.check_limits
    admits only user principal names there."""
    return quote(mailbox, safe="")


def _segment(value: str) -> str:
    """A Graph id as one path segment."""
    return quote(value, safe="")


def _graph_error(resp: requests.Response) -> tuple[str, str]:
    try:
        err = resp.json().get("error") or {}
        return str(err.get("code") or ""), str(err.get("message") or "")
    except ValueError:
        return "", ""


class GraphClient:
    """Thin, explicit wrapper over the Graph mail endpoints Mailbridge uses."""

    def __init__(self, settings: Settings, session: requests.Session) -> None:
        self.base = f"{settings.graph_endpoint}/v1.0"
        self.session = session

    # --- transport -------------------------------------------------------------------------------------
    def call(
        self,
        method: str,
        url: str,
        token: str | None,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        changes_state: bool = True,
        timeout: tuple[float, float] = TIMEOUT,
    ) -> GraphResponse:
        """One request; a mapped exception unless the answer is 2xx."""
        hdrs = dict(headers or {})
        if json is not None:
            data = json_bytes(json)
            hdrs["Content-Type"] = "application/json; charset=utf-8"
        if token is not None:  # upload URLs are pre-authenticated and must NOT get a token
            hdrs["Authorization"] = f"Bearer {token}"
        try:
            resp = self.session.request(method, url, data=data, headers=hdrs, timeout=timeout, allow_redirects=False)
        except (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError) as exc:
            raise errors.TemporarilyUnavailable(detail=f"could not reach Graph ({type(exc).__name__})") from None
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
            if _never_sent(exc) or not changes_state:
                raise errors.TemporarilyUnavailable(detail=f"Graph connection failed ({type(exc).__name__})") from None
            raise errors.OutcomeUnknown(detail=f"no answer from Graph ({type(exc).__name__})") from None
        request_id = resp.headers.get("request-id")
        if resp.status_code < 300:
            body = None
            if resp.content and "json" in resp.headers.get("content-type", ""):
                body = resp.json()
            return GraphResponse(resp.status_code, request_id, body)
        raise self._map_error(resp, request_id, changes_state)

    @staticmethod
    def _map_error(resp: requests.Response, request_id: str | None, changes_state: bool) -> errors.MailbridgeError:
        status = resp.status_code
        code, message = _graph_error(resp)
        extra = {"graph_request_id": request_id, "graph_code": code or None, "graph_status": status}
        detail = f"Graph {status} {code}: {message}".strip()
        if code in _MAILBOX_CODES and status not in (401, 429, 503):
            return _MAILBOX_CODES[code](detail=detail, **extra)
        if status == 429:
            return errors.Throttled(retry_after=retry_after_seconds(resp.headers.get("Retry-After"), 5.0), **extra)
        if status == 503:
            wait = retry_after_seconds(resp.headers.get("Retry-After"), 10.0)
            return errors.TemporarilyUnavailable(detail=detail, retry_after=wait, **extra)
        if status == 401:
            return errors.TemporarilyUnavailable(detail=detail, token_rejected=True, **extra)
        if status >= 500 or status == 408:
            if changes_state:
                return errors.OutcomeUnknown(detail=detail, **extra)
            return errors.TemporarilyUnavailable(detail=detail, **extra)
        cls = _BY_GRAPH_CODE.get(code)
        if cls is None and status == 413:
            cls = errors.MessageTooLarge
        if cls is None and status == 403:
            cls = errors.MailboxAccessDenied
        return (cls or errors.SendError)(detail=detail, **extra)

    # --- message building -------------------------------------------------------------------------------
    @staticmethod
    def build_message(
        msg: SendMessage, body_content: str, inline: list[tuple[Any, bytes]], *, with_property: bool
    ) -> dict[str, Any]:
        """The Graph ``message`` resource for ``msg``; ``inline`` = (attachment, bytes) sent in the request."""
        headers = [{"name": IDEMPOTENCY_HEADER, "value": msg.id}]
        headers += [{"name": k, "value": v} for k, v in msg.headers.items()]
        out: dict[str, Any] = {
            "subject": msg.subject,
            "body": {"contentType": "HTML" if msg.body.content_type == "html" else "Text", "content": body_content},
            "toRecipients": [a.to_graph() for a in msg.to],
            "ccRecipients": [a.to_graph() for a in msg.cc],
            "bccRecipients": [a.to_graph() for a in msg.bcc],
            "replyTo": [a.to_graph() for a in msg.reply_to],
            "importance": msg.importance,
            "internetMessageHeaders": headers,
        }
        if msg.from_ is not None:
            out["from"] = msg.from_.to_graph()
        if with_property:
            out["singleValueExtendedProperties"] = [{"id": IDEMPOTENCY_PROPERTY, "value": msg.id}]
        if inline:
            out["attachments"] = [file_attachment(att, raw) for att, raw in inline]
        return out

    # --- sending -------------------------------------------------------------------------------------------
    def send_mail(self, token: str, mailbox: str | None, message: dict[str, Any], save: bool) -> GraphResponse:
        """``POST /me/sendMail`` (``mailbox`` None) or ``/users/{mailbox}/sendMail``: 202, not idempotent."""
        prefix = "/me" if mailbox is None else f"/users/{user_segment(mailbox)}"
        return self.call(
            "POST", f"{self.base}{prefix}/sendMail", token, json={"message": message, "saveToSentItems": save}
        )

    def create_draft(self, token: str, message: dict[str, Any]) -> tuple[str, GraphResponse]:
        # Creating a draft changes state but an orphan draft is harmless: retries find it by property.
        resp = self.call("POST", f"{self.base}/me/messages", token, json=message, changes_state=False)
        assert resp.body is not None
        return str(resp.body["id"]), resp

    def add_attachment(self, token: str, draft_id: str, att: Any, raw: bytes) -> None:
        """``POST /me/messages/{id}/attachments``: one file under 3 MB, in a request of its own."""
        self.call(
            "POST",
            f"{self.base}/me/messages/{_segment(draft_id)}/attachments",
            token,
            json=file_attachment(att, raw),
            changes_state=False,  # nothing is sent before the draft's send call
        )

    def send_draft(self, token: str, draft_id: str) -> GraphResponse:
        return self.call("POST", f"{self.base}/me/messages/{_segment(draft_id)}/send", token)

    def find_by_key(self, token: str, key: str, prop: str | None = None) -> list[dict[str, Any]]:
        """Messages in any folder of the mailbox carrying our idempotency property = ``key``: ``id``,
        ``isDraft``, ``sentDateTime`` (singlevaluelegacyextendedproperty-get: ``$filter`` on ``/me/messages``
        covers every folder). Graph compares the value case-insensitively, our ids are case-sensitive: the
        expanded property is compared exactly. ``prop``: another property holding the key (a MIME draft's
        x-mailbridge-id header, shared.send.composer); ``internetMessageId`` comes along."""
        prop = prop or IDEMPOTENCY_PROPERTY
        literal = key.replace("'", "''")
        params = {
            "$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{prop}' and ep/value eq '{literal}')",
            "$expand": f"singleValueExtendedProperties($filter=id eq '{prop}')",
            "$select": "id,isDraft,sentDateTime,internetMessageId",
            "$top": "50",
        }
        query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
        resp = self.call("GET", f"{self.base}/me/messages?{query}", token, changes_state=False)
        items = (resp.body or {}).get("value", [])
        return [m for m in items if any(p.get("value") == key for p in m.get("singleValueExtendedProperties") or [])]

    def delete_message(self, token: str, message_id: str) -> None:
        try:
            self.call("DELETE", f"{self.base}/me/messages/{_segment(message_id)}", token, changes_state=False)
        except errors.SendError as exc:
            if exc.extra.get("graph_status") != 404:
                raise


def _never_sent(exc: Exception) -> bool:
    """True when the request provably never reached Graph (no connection was made)."""
    text = repr(exc)
    return "NewConnectionError" in text or "NameResolutionError" in text or "ConnectTimeoutError" in text
