"""The ``mailbridge.send/v1`` message: model, validation and the stable rejection codes.

A producer (HTTP caller, Logic App, Event Grid, another Function) hands us one JSON object. Validation
happens in two layers:

1. :class:`SendMessage` (pydantic) checks shape and per-field rules; ``docs/schema/send-v1.json`` is
   generated from it (``python -m shared.send.mail > docs/schema/send-v1.json``).
2. :func:`shared.send.limits.check_limits` checks what depends on the settings (total size, send-as switched
   on, a ``from`` that becomes a ``/users/{from}`` path segment, the allowed callback queues, attachments that
   need large-attachment mode).

Every failure becomes one exception of the ``InvalidMessage`` family (or ``MessageTooLarge`` /
``AttachmentsTooLarge``) carrying ``field`` and a reason, so HTTP answers, delivery records and events
all show the same code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from shared.base import errors
from shared.base.formats import QUEUE_NAME_PATTERN
from shared.send.mail_headers import (
    CONTROL_BUT_TAB_PATTERN,
    CONTROL_PATTERN,
    MAX_REFERENCES,
    MAX_REFERENCES_BYTES,
    MSG_ID_FIELD,
    InvalidListUnsubscribe,
    InvalidMessageId,
    ListUnsubscribe,
    check_composed,
    msg_id,
    no_controls,
)

SCHEMA_ID = "mailbridge.send/v1"
MAX_RECIPIENTS = 500
GRAPH_MAX_HEADERS = 5  # Graph: internetMessageHeaders per message (Microsoft Q&A 762243)
MAX_HEADERS = GRAPH_MAX_HEADERS - 1  # x-mailbridge-id takes one (docs/sending.md says why it is kept)
# How each attachment reaches Graph (attachment_plan): inside the sendMail / draft-creation request, in a
# POST /messages/{id}/attachments of its own (draft mode, under 3 MB), or through an upload session (3 MB+).
INLINE, ATTACH, UPLOAD = "inline", "attach", "upload"

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
CONNECTION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# A blob name: segments of [A-Za-z0-9._:-] joined by single "/", none empty and none ending in "." (so no "."
# or ".." segment: URL clients remove those before sending, issue 23; Azure: "no path segments should end with a
# dot", Naming and Referencing Containers, Blobs, and Metadata). No "%", "\\", space or control character.
# ":" because message ids may hold one and the HTTP API names blobs api/<connection id>/<message id>/...
BLOB_MAX_LENGTH = 512
_BLOB_SEGMENT = r"[A-Za-z0-9._:-]*[A-Za-z0-9_:-]"
BLOB_PATTERN = rf"^{_BLOB_SEGMENT}(?:/{_BLOB_SEGMENT})*$"
# Deliberately modest, like Exchange's own resolver: local@domain.tld, no spaces, controls or list separators.
# The patterns below are also the published JSON Schema's (json_schema), so they are written in the subset
# Python and ECMA-262 regexes read alike: \s differs (\x1c-\x1f and \x85 are whitespace to Python's, \ufeff to
# ECMA's), so those are listed explicitly, with every C0/C1 control and U+2028/U+2029.
ADDRESS_PATTERN = (
    r'^[^@\s\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff<>(),;:"\[\]\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?'
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
# A `from` that becomes a Graph `/users/{id | userPrincipalName}` path segment (SEND_AS_ENDPOINT=users) must be a
# user principal name: Microsoft Entra allows A-Z a-z 0-9 ' . - _ ! # ^ ~ before the "@" (at most 64, no "."
# just before it) and at most 48 characters after it (learn.microsoft.com/entra/identity/authentication/
# concept-sspr-policy, "Username policies"). So no "/", "%", "?" or "$" can make the segment another path.
UPN_PATTERN = r"^[A-Za-z0-9'._!#^~-]{0,63}[A-Za-z0-9'_!#^~-]@[A-Za-z0-9.-]{1,48}$"
HEADER_NAME_PATTERN = r"^[Xx]-[A-Za-z0-9-]{1,62}$"
RESERVED_HEADER_PATTERN = r"^[Xx]-[Mm][Aa][Ii][Ll][Bb][Rr][Ii][Dd][Gg][Ee]-"  # x-mailbridge-*, any case
CONTENT_TYPE_PATTERN = r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$"
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
# send_at: RFC 3339 in UTC, to the second or finer ("Z" or "+00:00"); the range (now .. 30 days) is checked where
# "now" is known (shared/send/schedule.py).
SEND_AT_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|\+00:00)$"
_SEND_AT_RE = re.compile(SEND_AT_PATTERN)
_ADDRESS_RE = re.compile(ADDRESS_PATTERN)
_HEADER_NAME_RE = re.compile(HEADER_NAME_PATTERN)
_CONTENT_TYPE_RE = re.compile(CONTENT_TYPE_PATTERN)
_BLOB_RE = re.compile(BLOB_PATTERN)

# JSON Schema for "none of them anywhere" (a search, so it does not depend on how an engine reads `$`).
NO_CONTROL: dict[str, Any] = {"not": {"pattern": CONTROL_PATTERN}}
NO_CONTROL_BUT_TAB: dict[str, Any] = {"not": {"pattern": CONTROL_BUT_TAB_PATTERN}}

# Custom pydantic error types that map to our own exception classes (everything else: invalid_message).
_ERROR_CLASSES: dict[str, type[errors.MailbridgeError]] = {
    "header_injection": errors.HeaderInjection,
    "invalid_send_at": errors.InvalidSendAt,
    "invalid_blob_name": errors.InvalidBlobName,
    "invalid_header": errors.InvalidHeader,
    "invalid_message_id": InvalidMessageId,
    "invalid_list_unsubscribe": InvalidListUnsubscribe,
    "too_many_headers": errors.TooManyHeaders,
    "too_many_recipients": errors.TooManyRecipients,
}


def is_blob_name(value: object) -> bool:
    """True for a name :data:`BLOB_PATTERN` allows (at most :data:`BLOB_MAX_LENGTH` characters)."""
    return isinstance(value, str) and len(value) <= BLOB_MAX_LENGTH and _BLOB_RE.fullmatch(value) is not None


def _blob_name(value: str | None) -> str | None:
    if value is not None and not is_blob_name(value):
        raise PydanticCustomError(
            "invalid_blob_name",
            "not a blob name: segments of letters, digits, . _ : - joined by single /, none ending in . "
            "(so no . or .. segment), no % or \\, at most {max} characters",
            {"max": BLOB_MAX_LENGTH},
        )
    return value


# The published form of a blob field (the runtime check is _blob_name: the same pattern and length).
BLOB_FIELD: dict[str, Any] = {"pattern": BLOB_PATTERN, "maxLength": BLOB_MAX_LENGTH}


def _is_utc_time(value: str) -> bool:
    """RFC 3339 in UTC (SEND_AT_PATTERN) and a date that exists (not 2030-02-30)."""
    if not _SEND_AT_RE.match(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


class Address(BaseModel):
    """A recipient or sender: ``{"address": "...", "name": "..."}`` (a bare string is accepted too)."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field(
        max_length=320,
        description="SMTP address, e.g. ada@contoso.com",
        json_schema_extra={"pattern": ADDRESS_PATTERN, **NO_CONTROL},
    )
    name: str | None = Field(default=None, max_length=256, description="Display name", json_schema_extra=NO_CONTROL)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"address": value} if isinstance(value, str) else value

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        no_controls(value, "an address")
        value = value.strip()
        if not _ADDRESS_RE.match(value):
            raise PydanticCustomError("invalid_address", "not an email address")
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        return no_controls(value, "a display name")

    def to_graph(self) -> dict[str, Any]:
        email: dict[str, Any] = {"address": self.address}
        if self.name:
            email["name"] = self.name
        return {"emailAddress": email}


class Body(BaseModel):
    """The message body: inline ``content``, or a ``blob`` in ATTACHMENTS_CONTAINER for very large bodies."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "not": {
                "properties": {"content": {"type": "string"}, "blob": {"type": "string"}},
                "required": ["content", "blob"],
            }
        },
    )

    content_type: Literal["text", "html"] = "text"
    content: str | None = None
    blob: Annotated[str, Field(json_schema_extra=BLOB_FIELD)] | None = Field(
        default=None, description="Name of a UTF-8 blob in ATTACHMENTS_CONTAINER holding the content"
    )
    size: int | None = Field(default=None, ge=0, description="Bytes of the blob (set by POST /api/messages)")

    @field_validator("blob")
    @classmethod
    def _blob(cls, value: str | None) -> str | None:
        return _blob_name(value)

    @model_validator(mode="after")
    def _one_source(self) -> Body:
        if self.content is not None and self.blob is not None:
            raise PydanticCustomError("invalid_body", "give content or blob, not both")
        return self

    def byte_size(self) -> int:
        if self.content is not None:
            return len(self.content.encode("utf-8"))
        return self.size or 0


class Attachment(BaseModel):
    """A file attachment: base64 content inline in the message, or a blob reference."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"properties": {key: {"type": "string"}}, "required": [key]} for key in ("content_base64", "blob")
            ]
        },
    )

    name: str = Field(min_length=1, max_length=255, json_schema_extra=NO_CONTROL)
    content_type: str = Field(
        default="application/octet-stream",
        max_length=127,
        json_schema_extra={"pattern": CONTENT_TYPE_PATTERN, **NO_CONTROL},
    )
    content_base64: Annotated[str, Field(json_schema_extra={"pattern": BASE64_PATTERN})] | None = None
    blob: Annotated[str, Field(json_schema_extra=BLOB_FIELD)] | None = Field(
        default=None, description="Name of a blob in ATTACHMENTS_CONTAINER"
    )
    size: int | None = Field(default=None, ge=0, description="Bytes of the blob (set by POST /api/messages)")
    content_id: str | None = Field(
        default=None, max_length=128, description="For inline images: cid in HTML", json_schema_extra=NO_CONTROL
    )

    @field_validator("name", "content_id")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return no_controls(value, "an attachment name")

    @field_validator("blob")
    @classmethod
    def _blob(cls, value: str | None) -> str | None:
        return _blob_name(value)

    @field_validator("content_type")
    @classmethod
    def _ctype(cls, value: str) -> str:
        no_controls(value, "a content type")
        if not _CONTENT_TYPE_RE.match(value):
            raise PydanticCustomError("invalid_content_type", "not a MIME type like application/pdf")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Attachment:
        if (self.content_base64 is None) == (self.blob is None):
            raise PydanticCustomError("invalid_attachment", "give exactly one of content_base64 or blob")
        if self.content_base64 is not None:
            try:
                decoded = base64.b64decode(self.content_base64, validate=True)
            except (binascii.Error, ValueError):
                raise PydanticCustomError("invalid_base64", "content_base64 is not valid base64") from None
            self.size = len(decoded)
        return self

    def content(self) -> bytes:
        """Decoded inline content (blob attachments are read by shared.send.attachments)."""
        assert self.content_base64 is not None
        return base64.b64decode(self.content_base64)


class Callback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: str = Field(
        pattern=QUEUE_NAME_PATTERN,
        description="Storage queue (same account) that also receives this message's final event",
        json_schema_extra={"not": {"pattern": "--"}},
    )

    @field_validator("queue")
    @classmethod
    def _no_double_hyphen(cls, value: str) -> str:
        if "--" in value:
            raise PydanticCustomError("invalid_queue", "queue names cannot contain '--'")
        return value


class SendMessage(BaseModel):
    """One email to send from a connected mailbox (``mailbridge.send/v1``)."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        title="mailbridge.send/v1",
        json_schema_extra={
            "$id": SCHEMA_ID,
            # At least one recipient. That to + cc + bcc together stay <= 500 is the one rule here JSON Schema
            # cannot say (each list alone is capped); the runtime checks the sum (too_many_recipients).
            "anyOf": [{"properties": {key: {"minItems": 1}}, "required": [key]} for key in ("to", "cc", "bcc")],
        },
    )

    schema_: Literal["mailbridge.send/v1"] | None = Field(default=None, alias="schema")
    id: str = Field(pattern=ID_PATTERN, description="Client idempotency key: one id is sent at most once")
    connection_id: str = Field(pattern=CONNECTION_ID_PATTERN)
    from_: Address | None = Field(default=None, alias="from", description="Send as / on behalf of this mailbox")
    to: list[Address] = Field(default_factory=list, json_schema_extra={"maxItems": MAX_RECIPIENTS})
    cc: list[Address] = Field(default_factory=list, json_schema_extra={"maxItems": MAX_RECIPIENTS})
    bcc: list[Address] = Field(default_factory=list, json_schema_extra={"maxItems": MAX_RECIPIENTS})
    reply_to: list[Address] = Field(default_factory=list, max_length=50)
    subject: str = Field(default="", max_length=998, json_schema_extra=NO_CONTROL_BUT_TAB)
    body: Body = Field(default_factory=Body)
    attachments: list[Attachment] = Field(default_factory=list, max_length=100)
    headers: dict[str, str] = Field(
        default_factory=dict,
        description=f"Custom internet headers, names x-..., at most {MAX_HEADERS} (Graph's 5 minus x-mailbridge-id)",
        json_schema_extra={
            "maxProperties": MAX_HEADERS,
            "propertyNames": {
                "pattern": HEADER_NAME_PATTERN,
                "not": {"anyOf": [{"pattern": RESERVED_HEADER_PATTERN}, {"pattern": CONTROL_PATTERN}]},
            },
            "additionalProperties": {"type": "string", "maxLength": 998, **NO_CONTROL_BUT_TAB},
        },
    )
    in_reply_to: Annotated[str, Field(json_schema_extra=MSG_ID_FIELD)] | None = Field(
        default=None, description="Message-ID of the message this one replies to (In-Reply-To), e.g. <a@b>"
    )
    references: list[Annotated[str, Field(json_schema_extra=MSG_ID_FIELD)]] = Field(
        default_factory=list,
        description=f"Message-IDs of the thread, oldest first (References): at most {MAX_REFERENCES}, "
        f"{MAX_REFERENCES_BYTES} bytes together",
        json_schema_extra={"maxItems": MAX_REFERENCES},
    )
    list_unsubscribe: ListUnsubscribe | None = None
    internet_message_id: Annotated[str, Field(json_schema_extra=MSG_ID_FIELD)] | None = Field(
        default=None,
        description="The Message-ID to ask for (unique per connection); Exchange may replace it: the record and the "
        "event carry the one delivered",
    )
    importance: Literal["low", "normal", "high"] = "normal"
    save_to_sent_items: bool = True
    callback: Callback | None = None
    on_ambiguous: Literal["record", "resend"] = Field(
        default="record",
        description="If Graph may have sent it but did not confirm (5xx/timeout): record 'unknown', or resend",
    )
    send_at: str | None = Field(
        default=None,
        description="Send at this time (RFC 3339, UTC), from now to 30 days ahead; never before it",
        json_schema_extra={"format": "date-time", "pattern": SEND_AT_PATTERN},
    )
    metadata: dict[str, str] = Field(
        default_factory=dict,
        max_length=16,
        description="Echoed in the delivery record and events (not sent)",
        json_schema_extra={
            "propertyNames": {"maxLength": 64},
            "additionalProperties": {"type": "string", "maxLength": 256},
        },
    )

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return no_controls(value, "the subject", tab=True) or ""

    @field_validator("send_at")
    @classmethod
    def _send_at(cls, value: str | None) -> str | None:
        if value is not None and not _is_utc_time(value):
            raise PydanticCustomError("invalid_send_at", "not an RFC 3339 time in UTC like 2030-01-31T09:00:00Z")
        return value

    @property
    def due_at(self) -> float | None:
        """``send_at`` as a Unix time, or None (send now)."""
        return datetime.fromisoformat(self.send_at).timestamp() if self.send_at else None

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_HEADERS:
            raise PydanticCustomError(
                "too_many_headers",
                "at most {n} custom headers: Graph takes 5 and x-mailbridge-id is one",
                {"n": MAX_HEADERS},
            )
        for name, hvalue in value.items():
            no_controls(name, f"header name {name!r}")
            no_controls(hvalue, f"header {name!r}", tab=True)
            if not _HEADER_NAME_RE.match(name):
                raise PydanticCustomError("invalid_header", "header {name} must be named x-...", {"name": repr(name)})
            if name.lower().startswith("x-mailbridge-"):
                raise PydanticCustomError("invalid_header", "x-mailbridge-* headers are reserved")
            if len(hvalue) > 998:
                raise PydanticCustomError(
                    "invalid_header", "header {name} is longer than 998 characters", {"name": repr(name)}
                )
        return value

    @field_validator("in_reply_to", "internet_message_id")
    @classmethod
    def _one_msg_id(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else msg_id(value, info.field_name)

    @field_validator("references")
    @classmethod
    def _references(cls, value: list[str]) -> list[str]:
        for item in value:
            msg_id(item, "a reference")
        if len(value) > MAX_REFERENCES or len(" ".join(value)) > MAX_REFERENCES_BYTES:
            raise PydanticCustomError(
                "invalid_message_id",
                "at most {n} references, {b} bytes together",
                {"n": MAX_REFERENCES, "b": MAX_REFERENCES_BYTES},
            )
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        if any(len(k) > 64 or len(v) > 256 for k, v in value.items()):
            raise PydanticCustomError("invalid_metadata", "metadata keys <= 64 and values <= 256 characters")
        return value

    @model_validator(mode="after")
    def _recipients(self) -> SendMessage:
        count = self.recipient_count()
        if count == 0:
            raise PydanticCustomError("no_recipients", "at least one of to, cc, bcc is required")
        if count > MAX_RECIPIENTS:
            raise PydanticCustomError(
                "too_many_recipients", "{count} recipients; at most {max}", {"count": count, "max": MAX_RECIPIENTS}
            )
        return self

    @model_validator(mode="after")
    def _composed(self) -> SendMessage:
        return check_composed(self)  # the rules of MIME built by the email package (shared/send/mail_headers.py)

    def recipient_count(self) -> int:
        return len(self.to) + len(self.cc) + len(self.bcc)

    def recipient_addresses(self) -> list[str]:
        return [r.address for r in (*self.to, *self.cc, *self.bcc)]

    def is_composed(self) -> bool:
        """True when the message needs headers Graph takes only in MIME (threading, unsubscribe, a Message-ID)."""
        return bool(self.in_reply_to or self.references or self.list_unsubscribe or self.internet_message_id)

    def total_bytes(self) -> int:
        """Body plus decoded attachments: what MAX_MESSAGE_BYTES limits (blob sizes as declared)."""
        return self.body.byte_size() + sum(a.size or 0 for a in self.attachments) + len(self.subject.encode())

    def fingerprint(self) -> str:
        """Hash of the content, to tell a replay of an id from a different message reusing it."""
        data = self.model_dump(mode="json", by_alias=True, exclude={"schema_", "callback", "metadata"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]

    def to_queue_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":"))


def parse_message(data: Any) -> SendMessage:
    """Validate a decoded JSON value; raise the InvalidMessage subclass for the first problem found."""
    if not isinstance(data, dict):
        raise errors.InvalidMessage("The message must be a JSON object.", field="$")
    try:
        return SendMessage.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "$"
        cls = _ERROR_CLASSES.get(first["type"], errors.InvalidMessage)
        if first["loc"][:1] == ("send_at",):  # not a string at all: still the send_at code
            cls = errors.InvalidSendAt
        reason = first["msg"]
        if first["type"] == "extra_forbidden":
            reason = "unknown field (check the spelling against docs/schema/send-v1.json)"
        return_error = cls(f"Invalid message: {field}: {reason}.", field=field, reason=reason)
        raise return_error from None


def json_schema() -> dict[str, Any]:
    """The published JSON Schema (docs/schema/send-v1.json), generated from :class:`SendMessage`."""
    schema = SendMessage.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m shared.send.mail > docs/schema/send-v1.json
    print(schema_text(), end="")
