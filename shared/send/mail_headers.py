"""The ``mailbridge.send/v1`` fields that become RFC 5322 header fields of their own (issue 27): msg-ids
(``in_reply_to``, ``references``, ``internet_message_id``) and ``list_unsubscribe``; and the control-character
check every value that reaches a header goes through; and their three errors (branches of the one exception tree
drawn in shared/base/errors.py, kept here beside the rules they enforce). shared/send/mail.py builds the message
model from them; shared/send/composer.py writes them into the MIME message."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from shared.base.errors import HeaderInjection, InvalidMessage

# Characters no value that reaches a header may hold: every C0 control (CR, LF, NUL, VT, FF, ESC, ...), DEL,
# every C1 control (NEL U+0085 among them) and the Unicode line and paragraph separators; a mail system that
# reads any of them as a line end would let a value start a header of its own. TAB is white space in RFC 5322
# unstructured fields, so the subject and header values may hold it (CONTROL_BUT_TAB); names and addresses not.
CONTROL_PATTERN = r"[\x00-\x1f\x7f-\x9f\u2028\u2029]"
CONTROL_BUT_TAB_PATTERN = r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]"
_CONTROL = re.compile(CONTROL_PATTERN)
_CONTROL_BUT_TAB = re.compile(CONTROL_BUT_TAB_PATTERN)
# RFC 5322 3.6.4 msg-id, "<" id-left "@" id-right ">", both dot-atom-text (the no-fold-literal right side is not
# taken: Exchange, Gmail and Apple Mail write dot-atoms). In_reply_to, references and internet_message_id use it.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
MSG_ID_PATTERN = rf"^<{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*>$"
MSG_ID_MAX_LENGTH = 250
MAX_REFERENCES = 50
MAX_REFERENCES_BYTES = 8 * 1024  # the References header: msg-ids joined by single spaces
# List-Unsubscribe URLs (RFC 2369, RFC 8058): https or mailto only, printable ASCII without the characters that would
# end or split the header's "<url>, <url>" list (space, '"', ',', '<', '>').
_URL_CHARS = r"[\x21\x23-\x2b\x2d-\x3b\x3d\x3f-\x7e]"
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
UNSUBSCRIBE_URL_PATTERN = (
    rf"^(?:https://{_HOST}(?::[0-9]{{1,5}})?(?:[/?#]{_URL_CHARS}*)?"
    rf"|mailto:[\x21\x23-\x2b\x2d-\x3b\x3d\x41-\x7e]+@{_HOST}(?:\?{_URL_CHARS}*)?)$"
)
UNSUBSCRIBE_URL_MAX_LENGTH = 900  # one URL cannot be folded: it must fit a 998-character header line
# "=?" starts an RFC 2047 encoded word. The email package decodes one wherever it meets it in a value it is given
# (inside a msg-id token, a quoted display name or parameter too), and its generators have written a decoded CR LF
# out as a line end (CVE-2024-6923, python/cpython#121650; for as_bytes' BytesGenerator CVE-2026-1299, #144125):
# "=?utf-8?q?x=0D=0ABcc=3A_a@b?=" in a subject became a Bcc line. So no value that reaches a MIME header may hold
# it (the composer encodes non-ASCII text itself).
ENCODED_WORD_START = "=?"
ENCODED_WORD_PATTERN = r"=\?"
_MSG_ID_RE = re.compile(MSG_ID_PATTERN)
_UNSUBSCRIBE_URL_RE = re.compile(UNSUBSCRIBE_URL_PATTERN)


def no_controls(value: str | None, what: str, *, tab: bool = False) -> str | None:
    """``value`` unchanged, or header_injection when it holds a line break or control character."""
    if value is not None and (_CONTROL_BUT_TAB if tab else _CONTROL).search(value):
        raise PydanticCustomError(
            "header_injection", "{what} contains a line break or control character", {"what": what}
        )
    return value


def no_encoded_word(value: str, what: str) -> str:
    """``value`` unchanged, or header_injection when it holds "=?" (:data:`ENCODED_WORD_START`)."""
    if ENCODED_WORD_START in value:
        raise PydanticCustomError(
            "header_injection", "{what} contains '=?', the start of an RFC 2047 encoded word", {"what": what}
        )
    return value


def msg_id(value: str, what: str) -> str:
    no_controls(value, what)
    no_encoded_word(value, what)
    if len(value) > MSG_ID_MAX_LENGTH or not _MSG_ID_RE.match(value):
        raise PydanticCustomError(
            "invalid_message_id", "{what} is not an RFC 5322 msg-id like <local@domain>", {"what": what}
        )
    return value


# The published form of a msg-id field (the runtime check is msg_id: the same pattern, length and "=?" rule).
MSG_ID_FIELD: dict[str, Any] = {
    "pattern": MSG_ID_PATTERN,
    "maxLength": MSG_ID_MAX_LENGTH,
    "not": {"pattern": ENCODED_WORD_PATTERN},
}
_CONTENT_ID_RE = re.compile(r"^[\x21-\x3b\x3d\x3f-\x7e]+$")  # printable ASCII but "<" and ">": one <id> in Content-ID


def check_composed(msg: Any) -> Any:
    """``msg`` (a SendMessage) unchanged. A composed message is sent as MIME the email package builds
    (shared/send/composer.py), so beyond the schema: no value that reaches one of its headers holds "=?"
    (header_injection), its addresses are ASCII (the MIME is 7-bit, no SMTPUTF8: the package cannot write another)
    and a content id fits one ``<id>``. Raised as the error itself, naming the field (a rule of the whole message,
    which the published schema does not state)."""
    if not msg.is_composed():
        return msg
    values: list[tuple[str, str | None]] = [("subject", msg.subject)]
    values += [(f"headers.{name}", value) for name, value in msg.headers.items()]
    people = [("from", msg.from_)] if msg.from_ is not None else []
    for key in ("to", "cc", "bcc", "reply_to"):
        people += [(f"{key}.{i}", person) for i, person in enumerate(getattr(msg, key))]
    for where, person in people:
        if not person.address.isascii():
            raise InvalidMessage(
                f"Invalid message: {where}.address: a message with threading, unsubscribe or Message-ID fields is "
                "sent as 7-bit MIME: its addresses must be ASCII.",
                field=f"{where}.address",
                reason="not an ASCII address",
            )
        values += [(f"{where}.address", person.address), (f"{where}.name", person.name)]
    for i, att in enumerate(msg.attachments):
        values += [(f"attachments.{i}.name", att.name), (f"attachments.{i}.content_id", att.content_id)]
        if att.content_id is not None and not _CONTENT_ID_RE.match(att.content_id):
            raise InvalidMessage(
                f"Invalid message: attachments.{i}.content_id: in MIME a content id is printable ASCII without "
                "spaces, '<' or '>'.",
                field=f"attachments.{i}.content_id",
                reason="not a MIME content id",
            )
    for field, value in values:
        if value is not None and ENCODED_WORD_START in value:
            reason = "contains '=?', the start of an RFC 2047 encoded word: give the text itself"
            raise HeaderInjection(f"Invalid message: {field}: {reason}.", field=field, reason=reason)
    return msg


class ListUnsubscribe(BaseModel):
    """``List-Unsubscribe`` (RFC 2369) and, with ``one_click``, ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``
    (RFC 8058, which needs an https URL)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"one_click": {"const": True}}, "required": ["one_click"]},
            "then": {"properties": {"urls": {"contains": {"pattern": "^https://"}}}},
        },
    )

    urls: list[
        Annotated[
            str, Field(json_schema_extra={"pattern": UNSUBSCRIBE_URL_PATTERN, "maxLength": UNSUBSCRIBE_URL_MAX_LENGTH})
        ]
    ] = Field(min_length=1, max_length=4, description="https:// and mailto: URLs, in order of preference")
    one_click: bool = Field(default=False, description="RFC 8058 one-click unsubscribe (POST to the https URL)")

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            no_controls(url, "an unsubscribe URL")
            if len(url) > UNSUBSCRIBE_URL_MAX_LENGTH or not _UNSUBSCRIBE_URL_RE.match(url):
                raise PydanticCustomError(
                    "invalid_list_unsubscribe",
                    "unsubscribe URLs must be https://host/... or mailto:local@domain, printable ASCII without "
                    "spaces, '\"', ',', '<' or '>', at most {max} characters",
                    {"max": UNSUBSCRIBE_URL_MAX_LENGTH},
                )
        return value

    @model_validator(mode="after")
    def _one_click(self) -> ListUnsubscribe:
        if self.one_click and not any(url.startswith("https://") for url in self.urls):
            raise PydanticCustomError("invalid_list_unsubscribe", "one_click needs an https URL (RFC 8058)")
        return self

    def header(self) -> str:
        """The List-Unsubscribe value: ``<url>, <url>``."""
        return ", ".join(f"<{url}>" for url in self.urls)


class InvalidMessageId(InvalidMessage):
    code = "invalid_message_id"
    default_hint = (
        "in_reply_to, each of references and internet_message_id must be an RFC 5322 msg-id like "
        "<local@domain> (at most 250 characters); at most 50 references, 8 KB together."
    )


class InvalidListUnsubscribe(InvalidMessage):
    code = "invalid_list_unsubscribe"
    default_hint = (
        "list_unsubscribe.urls takes 1-4 https:// or mailto: URLs (printable ASCII, no spaces, quotes, commas or "
        "angle brackets); one_click needs an https URL (RFC 8058)."
    )


class DuplicateInternetMessageId(InvalidMessage):
    code = "duplicate_internet_message_id"
    default_hint = (
        "Another message of this connection already asked for this internet_message_id: a Message-ID names one "
        "message. Leave it out (Exchange assigns one, reported in the record) or choose a new one."
    )
