"""The Graph `message` resource as the emulator accepts it: validation and normalisation.

Pure functions, no HTTP. Errors are raised as `GraphError` carrying the status and the
error code real Graph / Exchange Online returns for the same mistake, so callers can map
them straight to an error response.

Facts modelled (see /work/shared/REFERENCE.md and the issues cited in docs/emulator.md):
- sendMail bodies above ~4 MB are refused with 413 (exact threshold here: 4,194,304 bytes).
- inline `fileAttachment`s are for files under 3 MB; bigger ones need an upload session.
- an Exchange message carries at most 500 recipients.
- `internetMessageHeaders` names must start with `x-`/`X-` (InvalidInternetMessageHeader); at most 5
  of them, and an empty collection is refused too (InvalidInternetMessageHeaderCollection: Microsoft
  Q&A 762243, msgraph-sdk-dotnet#2208) - on sendMail and on draft creation alike.
- invalid / missing recipients -> 400 ErrorInvalidRecipients.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

MAX_REQUEST_BYTES = 4 * 1024 * 1024  # 4,194,304: requests strictly larger get 413
MAX_INLINE_ATTACHMENT_BYTES = 3 * 1024 * 1024  # decoded size of one inline fileAttachment
MAX_RECIPIENTS = 500
MAX_ATTACHMENT_BYTES = 150 * 1024 * 1024  # upload-session ceiling
MAX_INTERNET_HEADERS = 5  # internetMessageHeaders per message (Microsoft Q&A 762243)
# MAPI properties a MIME writer turns into headers (MS-OXPROPS / MS-OXCMAIL): PidTagInReplyToId,
# PidTagInternetReferences, PidTagListUnsubscribe. Whether Graph's send honours them set as
# singleValueExtendedProperties is unconfirmed (GraphLimits.render_threading_properties).
THREADING_PROPERTIES = {
    "string 0x1042": "In-Reply-To",
    "string 0x1039": "References",
    "string 0x1045": "List-Unsubscribe",
}
MESSAGE_ID_PROPERTY = "string 0x1035"  # PidTagInternetMessageId

RECIPIENT_FIELDS = ("toRecipients", "ccRecipients", "bccRecipients")
FILE_ATTACHMENT_TYPE = "#microsoft.graph.fileAttachment"

# Properties of microsoft.graph.message a client may send. Graph's OData reader refuses a
# property that does not exist on the type, which catches client typos like `toRecipient`.
KNOWN_MESSAGE_PROPERTIES = frozenset(
    {
        "id",
        "subject",
        "body",
        "bodyPreview",
        "uniqueBody",
        "toRecipients",
        "ccRecipients",
        "bccRecipients",
        "replyTo",
        "from",
        "sender",
        "importance",
        "internetMessageHeaders",
        "internetMessageId",
        "attachments",
        "hasAttachments",
        "singleValueExtendedProperties",
        "multiValueExtendedProperties",
        "categories",
        "isDeliveryReceiptRequested",
        "isReadReceiptRequested",
        "isRead",
        "isDraft",
        "flag",
        "inferenceClassification",
        "conversationId",
        "conversationIndex",
        "parentFolderId",
        "createdDateTime",
        "lastModifiedDateTime",
        "receivedDateTime",
        "sentDateTime",
        "changeKey",
        "webLink",
        "extensions",
        "mentions",
    }
)

# Address check: deliberately modest (Exchange resolves SMTP addresses, it does not run a
# full RFC 5322 parser), but it refuses what Exchange refuses: no @, spaces, CR/LF, no domain.
_ADDRESS_RE = re.compile(
    r"^[^@\s<>(),;:\"\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_PROPERTY_ID_RE = re.compile(
    r"^(String|Integer|Boolean|Long|Double|SystemTime|Binary|Guid|Short|Float|Currency)\s+"
    r"(\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}\s+"
    r"(Name\s+\S.*|Id\s+0x[0-9A-Fa-f]+)|0x[0-9A-Fa-f]{1,4})$"
)


class GraphError(Exception):
    """An error answer of Microsoft Graph: HTTP status, error code and message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}


def bad_body(message: str) -> GraphError:
    """The OData reader's error for a body it cannot map onto the resource type."""
    return GraphError(400, "RequestBodyRead", message)


@dataclass
class Attachment:
    """A file attachment: metadata always, content bytes only up to the store's cap."""

    id: str
    name: str
    content_type: str
    size: int
    sha256: str
    content: bytes  # possibly truncated: see `content_complete`
    content_complete: bool
    is_inline: bool = False
    content_id: str | None = None
    via_upload_session: bool = False

    def to_graph(self, *, include_bytes: bool = False) -> dict[str, Any]:
        """Graph's fileAttachment representation (contentBytes only when asked and complete)."""
        out: dict[str, Any] = {
            "@odata.type": FILE_ATTACHMENT_TYPE,
            "id": self.id,
            "name": self.name,
            "contentType": self.content_type,
            "size": self.size,
            "isInline": self.is_inline,
            "contentId": self.content_id,
        }
        if include_bytes and self.content_complete:
            out["contentBytes"] = base64.b64encode(self.content).decode("ascii")
        return out

    def to_admin(self) -> dict[str, Any]:
        """Admin view: metadata plus the content hash, for tests to reconcile."""
        return {
            "id": self.id,
            "name": self.name,
            "contentType": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "isInline": self.is_inline,
            "contentId": self.content_id,
            "contentStored": len(self.content),
            "contentComplete": self.content_complete,
            "viaUploadSession": self.via_upload_session,
        }


PS_INTERNET_HEADERS = "{00020386-0000-0000-C000-000000000046}"


@dataclass
class MessageFields:
    """The writable fields of a message after validation (Graph casing kept in dicts)."""

    subject: str = ""
    body_type: str = "text"
    body: str = ""
    to: list[dict[str, Any]] = field(default_factory=list)
    cc: list[dict[str, Any]] = field(default_factory=list)
    bcc: list[dict[str, Any]] = field(default_factory=list)
    reply_to: list[dict[str, Any]] = field(default_factory=list)
    from_: dict[str, Any] | None = None
    importance: str = "normal"
    headers: list[dict[str, str]] = field(default_factory=list)
    extended_properties: list[dict[str, str]] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)  # validated raw dicts
    # Headers a MIME body carried that a recipient receives as written (graph_mime.KEPT_HEADERS, x- headers).
    mime_headers: list[dict[str, str]] = field(default_factory=list)
    # A Message-ID the client chose (MIME header, JSON internetMessageId or String 0x1035); graph_store decides.
    client_message_id: str | None = None

    def searchable_properties(self) -> list[dict[str, str]]:
        """The extended properties a `$filter`/`$expand` sees: the stored ones, and every `x-` internet header as
        the named property `String {00020386-0000-0000-C000-000000000046} Name <header name>` (PS_INTERNET_HEADERS:
        MIME readers copy header fields into that property set, e.g. PidNameCrossReference, MS-OXPROPS; JSON
        internetMessageHeaders are internet headers too). Name lower-cased, as Exchange stores x- names."""
        headers = [h for h in self.headers + self.mime_headers if h["name"].lower().startswith("x-")]
        named = [{"id": f"String {PS_INTERNET_HEADERS} Name {h['name'].lower()}", "value": h["value"]} for h in headers]
        return list(self.extended_properties) + named

    def recipient_count(self) -> int:
        """Recipients Exchange counts against per-message and per-day limits (to+cc+bcc)."""
        return len(self.to) + len(self.cc) + len(self.bcc)


def normalise_address(address: str) -> str:
    """Lower-case form used to compare addresses (Exchange compares SMTP case-insensitively)."""
    return address.strip().lower()


def is_valid_address(address: Any) -> bool:
    """True when `address` looks like an SMTP address Exchange would resolve."""
    return isinstance(address, str) and len(address) <= 320 and bool(_ADDRESS_RE.match(address))


def parse_recipient(value: Any, field_name: str) -> dict[str, Any]:
    """One `recipient` object -> `{"emailAddress": {"name", "address"}}`, or GraphError."""
    if not isinstance(value, dict) or not isinstance(value.get("emailAddress"), dict):
        raise bad_body(f"Invalid recipient in '{field_name}': expected an object with 'emailAddress'.")
    email = value["emailAddress"]
    address = email.get("address")
    name = email.get("name")
    if name is not None and not isinstance(name, str):
        raise bad_body(f"Invalid 'name' in '{field_name}'.")
    if not is_valid_address(address):
        raise GraphError(
            400,
            "ErrorInvalidRecipients",
            f"At least one recipient isn't valid., Recipient '{address}' isn't resolved. "
            "All recipients must be resolved before a message can be submitted.",
        )
    return {"emailAddress": {"name": name if name is not None else address, "address": address}}


def parse_recipient_list(value: Any, field_name: str) -> list[dict[str, Any]]:
    """A recipient collection; null is treated as empty like Graph does."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_body(f"'{field_name}' must be a collection of recipients.")
    return [parse_recipient(item, field_name) for item in value]


def _parse_body(value: Any) -> tuple[str, str]:
    if value is None:
        return "text", ""
    if not isinstance(value, dict):
        raise bad_body("'body' must be an itemBody object.")
    content_type = value.get("contentType", "text")
    if not isinstance(content_type, str) or content_type.lower() not in ("text", "html"):
        raise bad_body(f"Cannot convert the literal '{content_type}' to the expected type 'microsoft.graph.bodyType'.")
    content = value.get("content", "")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise bad_body("'body.content' must be a string.")
    return content_type.lower(), content


def _parse_headers(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_body("'internetMessageHeaders' must be a collection.")
    if not value or len(value) > MAX_INTERNET_HEADERS:
        # Graph's answer past 5 headers (Microsoft Q&A 762243); msgraph-sdk-dotnet#2208 reports the same
        # answer for an empty collection, on sendMail and on draft creation. Omit the property instead.
        raise GraphError(
            400,
            "InvalidInternetMessageHeaderCollection",
            "Maximum number of headers in one message should be less than or equal to 5.",
        )
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise bad_body("Each internetMessageHeader needs a 'name' and a 'value'.")
        name, hvalue = item["name"], item.get("value", "")
        if not isinstance(hvalue, str):
            raise bad_body("internetMessageHeader 'value' must be a string.")
        if not name.lower().startswith("x-"):
            raise GraphError(
                400,
                "InvalidInternetMessageHeader",
                f"The internet message header name '{name}' should start with 'x-' or 'X-'.",
            )
        if any(c in name + hvalue for c in "\r\n"):
            raise GraphError(
                400,
                "InvalidInternetMessageHeader",
                f"The internet message header '{name}' contains an invalid character.",
            )
        out.append({"name": name, "value": hvalue})
    return out


def parse_extended_properties(value: Any) -> list[dict[str, str]]:
    """singleValueExtendedProperties: `[{id: "String {guid} Name X", value}]`."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_body("'singleValueExtendedProperties' must be a collection.")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise bad_body("Invalid singleValueExtendedProperty.")
        pid, pvalue = item.get("id"), item.get("value")
        if not isinstance(pid, str) or not _PROPERTY_ID_RE.match(pid.strip()):
            raise GraphError(
                400,
                "ErrorInvalidExtendedPropertyValue" if isinstance(pid, str) else "RequestBodyRead",
                f"The extended property id '{pid}' is not valid.",
            )
        if not isinstance(pvalue, str):
            raise bad_body("singleValueExtendedProperty 'value' must be a string.")
        out.append({"id": " ".join(pid.split()), "value": pvalue})
    return out


def validate_file_attachment(value: Any) -> dict[str, Any]:
    """An inline `#microsoft.graph.fileAttachment`; returns it with decoded `raw` bytes."""
    if not isinstance(value, dict):
        raise bad_body("Invalid attachment.")
    odata_type = value.get("@odata.type")
    if odata_type != FILE_ATTACHMENT_TYPE:
        raise bad_body(
            f"Attachment '@odata.type' must be '{FILE_ATTACHMENT_TYPE}' "
            f"(got {odata_type!r}); item and reference attachments are not modelled."
        )
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise GraphError(
            400, "ErrorInvalidAttachmentName" if name == "" else "RequestBodyRead", "A file attachment needs a 'name'."
        )
    content_b64 = value.get("contentBytes")
    if not isinstance(content_b64, str):
        raise bad_body("A file attachment needs 'contentBytes' (base64).")
    try:
        raw = base64.b64decode(content_b64, validate=True)
    except (binascii.Error, ValueError):
        raise bad_body("'contentBytes' is not valid base64.") from None
    if len(raw) > MAX_INLINE_ATTACHMENT_BYTES:
        # Graph's own advice: inline attachments are for files under 3 MB; above that the
        # client must use an upload session on a draft.
        raise GraphError(
            400,
            "ErrorAttachmentSizeLimitExceeded",
            f"The attachment '{name}' is {len(raw)} bytes; inline attachments must be under "
            "3 MB. Use an upload session (createUploadSession) for larger files.",
        )
    content_type = value.get("contentType") or "application/octet-stream"
    if not isinstance(content_type, str):
        raise bad_body("'contentType' must be a string.")
    return {
        "name": name,
        "contentType": content_type,
        "raw": raw,
        "isInline": bool(value.get("isInline", False)),
        "contentId": value.get("contentId"),
    }


def parse_message(msg: Any, *, require_recipients: bool, max_recipients: int = MAX_RECIPIENTS) -> MessageFields:
    """Validate a message object like Graph; `require_recipients` for sendMail-style calls."""
    if not isinstance(msg, dict):
        raise bad_body("'message' must be an object.")
    for key in msg:
        if not key.startswith("@") and key not in KNOWN_MESSAGE_PROPERTIES:
            raise bad_body(
                f"The property '{key}' does not exist on type 'microsoft.graph.message'. "
                "Make sure to only use property names that are defined by the type."
            )
    subject = msg.get("subject") or ""
    if not isinstance(subject, str):
        raise bad_body("'subject' must be a string.")
    fields = MessageFields(subject=subject)
    fields.body_type, fields.body = _parse_body(msg.get("body"))
    fields.to = parse_recipient_list(msg.get("toRecipients"), "toRecipients")
    fields.cc = parse_recipient_list(msg.get("ccRecipients"), "ccRecipients")
    fields.bcc = parse_recipient_list(msg.get("bccRecipients"), "bccRecipients")
    fields.reply_to = parse_recipient_list(msg.get("replyTo"), "replyTo")
    if msg.get("from") is not None:
        fields.from_ = parse_recipient(msg["from"], "from")
    importance = msg.get("importance", "normal") or "normal"
    if not isinstance(importance, str) or importance.lower() not in ("low", "normal", "high"):
        raise bad_body(f"Cannot convert the literal '{importance}' to the expected type 'microsoft.graph.importance'.")
    fields.importance = importance.lower()
    fields.headers = _parse_headers(msg.get("internetMessageHeaders"))
    fields.extended_properties = parse_extended_properties(msg.get("singleValueExtendedProperties"))
    message_id = msg.get("internetMessageId")
    if message_id is not None and not isinstance(message_id, str):
        raise bad_body("'internetMessageId' must be a string.")
    # Writable while the message is a draft (message resource, beta: "Updatable only if isDraft is true").
    fields.client_message_id = message_id or next(
        (p["value"] for p in fields.extended_properties if p["id"].lower() == MESSAGE_ID_PROPERTY), None
    )
    categories = msg.get("categories") or []
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise bad_body("'categories' must be a collection of strings.")
    fields.categories = list(categories)
    attachments = msg.get("attachments") or []
    if not isinstance(attachments, list):
        raise bad_body("'attachments' must be a collection.")
    fields.attachments = [validate_file_attachment(a) for a in attachments]
    count = fields.recipient_count()
    if require_recipients and count == 0:
        raise GraphError(
            400,
            "ErrorInvalidRecipients",
            "At least one recipient isn't valid., A message can't be sent because it contains no recipients.",
        )
    if count > max_recipients:
        # Exchange's per-message recipient limit (500 in Exchange Online). The code is the
        # Exchange ServiceError name; the exact Graph wire code is unconfirmed.
        raise GraphError(
            400,
            "ErrorExceededMaxRecipientLimit",
            f"The message has {count} recipients; the maximum number of recipients per message is {max_recipients}.",
        )
    return fields


def hash_bytes(raw: bytes) -> str:
    """Hex sha256, the fingerprint tests compare attachments by."""
    return hashlib.sha256(raw).hexdigest()
