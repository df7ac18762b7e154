"""MIME messages as Graph accepts them: `Content-Type: text/plain` with the message base64-encoded.

Pure functions, no HTTP. What is modelled (sources in docs/emulator.md, "Composer"):
- `POST /me/sendMail` and `POST /me/messages` take either JSON or, with `Content-Type: text/plain`, "the MIME
  content as a base64-encoded string" (user-sendmail, user-post-messages, "Send messages with MIME content");
- content that is not valid base64, or base64 of something that is not a MIME message, or an empty body ->
  400 `ErrorMimeContentInvalidBase64String` "Invalid base64 string for MIME content." (the error example of
  both reference pages; the concept page's error table gives that message for "MIME content malformed,
  missing"). Line breaks inside the base64 text are allowed: Microsoft's own example wraps at 76 characters;
- recipients, subject and body come from the MIME headers and parts; attachments (and S/MIME) are parts of the
  MIME content; a part with a `Content-ID` and `Content-Disposition: inline` becomes an inline attachment;
- the headers a recipient receives as written: `In-Reply-To`, `References`, `List-Unsubscribe`,
  `List-Unsubscribe-Post` and `X-` headers (MS-OXCMAIL maps the first three onto PidTagInReplyToId,
  PidTagInternetReferences and PidTagListUnsubscribe and writes them back out); `Message-ID` is the client's
  own id, which a server MAY overwrite before submission (MS-OXCMAIL 2.1.3.2.11: graph_store decides).
Everything else a client writes (Received, Date, Return-Path ...) is transport's business and not modelled.
"""

from __future__ import annotations

import base64
import binascii
import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from typing import Any

from emulator.graph_message import GraphError, MessageFields, is_valid_address

# Header names (lower case) a delivered message keeps from the client's MIME, besides any `x-` header.
KEPT_HEADERS = ("in-reply-to", "references", "list-unsubscribe", "list-unsubscribe-post")
_HEADER_LINE = re.compile(rb"^[!-9;-~]+:")  # a field name (printable ASCII but ':') then a colon


def invalid_mime() -> GraphError:
    """Graph's answer to a MIME body it cannot read (user-sendmail / user-post-messages, Example: error)."""
    return GraphError(400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.")


def folder_path_refused() -> GraphError:
    """MIME on `POST /me/mailFolders/{id}/messages`: reported to fail where the same body on `/me/messages` works
    (microsoftgraph/microsoft-graph-docs#16368, open; Q&A 544038 "UnableToDeserializePostBody"): Graph reads the
    body as JSON there. The reference page lists the folder path for both formats; the stricter reading is kept."""
    return GraphError(400, "UnableToDeserializePostBody", "were unable to deserialize ")


def is_mime_request(content_type: str | None) -> bool:
    """True when the request body is MIME (`text/plain`), not JSON."""
    return (content_type or "").split(";", 1)[0].strip().lower() == "text/plain"


def decode(body: bytes) -> bytes:
    """The MIME bytes inside a base64 request body, or the 400 above."""
    text = b"".join(body.split())  # whitespace and line breaks between base64 lines are allowed
    if not text:
        raise invalid_mime()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_mime() from None
    # Base64 of something that is not a message (no header block) is "malformed MIME content" too.
    first = raw.lstrip(b"\r\n").split(b"\n", 1)[0]
    if not _HEADER_LINE.match(first):
        raise invalid_mime()
    return raw


def _recipients(msg: EmailMessage, name: str) -> list[dict[str, Any]]:
    out = []
    for display, address in getaddresses([str(v) for v in msg.get_all(name, [])]):
        if not address:
            continue
        if not is_valid_address(address):
            raise GraphError(
                400,
                "ErrorInvalidRecipients",
                f"At least one recipient isn't valid., Recipient '{address}' isn't resolved. "
                "All recipients must be resolved before a message can be submitted.",
            )
        out.append({"emailAddress": {"name": display or address, "address": address}})
    return out


def _part_bytes(part: EmailMessage) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def parse(raw: bytes) -> MessageFields:
    """A decoded MIME message -> the fields the emulator stores (attachments as validated dicts).

    MIME the standard library cannot read (an unknown charset, a broken part) is "malformed MIME content":
    the same 400 as bad base64, never a 500."""
    try:
        return _parse(raw)
    except (LookupError, ValueError, UnicodeError, TypeError, AttributeError, IndexError):
        raise invalid_mime() from None


def _parse(raw: bytes) -> MessageFields:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    if not isinstance(msg, EmailMessage) or not msg.keys():
        raise invalid_mime()
    fields = MessageFields(subject=str(msg.get("Subject", "") or ""))
    fields.to = _recipients(msg, "To")
    fields.cc = _recipients(msg, "Cc")
    fields.bcc = _recipients(msg, "Bcc")
    fields.reply_to = _recipients(msg, "Reply-To")
    sender = _recipients(msg, "From")
    fields.from_ = sender[0] if sender else None
    body = msg.get_body(preferencelist=("html", "plain"))
    if body is not None:
        fields.body_type = "html" if body.get_content_subtype() == "html" else "text"
        fields.body = str(body.get_content())
    for part in msg.walk():
        if part is body or part.is_multipart():
            continue
        disposition = part.get_content_disposition()
        content_id = (part.get("Content-ID") or "").strip().strip("<>") or None
        if disposition is None and content_id is None:
            continue
        fields.attachments.append(
            {
                "name": part.get_filename() or content_id or "attachment",
                "contentType": part.get_content_type(),
                "raw": _part_bytes(part),
                "isInline": disposition == "inline" or (disposition is None and content_id is not None),
                "contentId": content_id,
            }
        )
    for name, value in msg.items():
        low = name.lower()
        if low in KEPT_HEADERS or low.startswith("x-"):
            fields.mime_headers.append({"name": name, "value": " ".join(str(value).split())})
    message_id = msg.get("Message-ID")
    if message_id:
        fields.client_message_id = " ".join(str(message_id).split())
    return fields
