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

from shared.base.errors import InvalidMessage

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
_MSG_ID_RE = re.compile(MSG_ID_PATTERN)
_UNSUBSCRIBE_URL_RE = re.compile(UNSUBSCRIBE_URL_PATTERN)


def no_controls(value: str | None, what: str, *, tab: bool = False) -> str | None:
    """``value`` unchanged, or header_injection when it holds a line break or control character."""
    if value is not None and (_CONTROL_BUT_TAB if tab else _CONTROL).search(value):
        raise PydanticCustomError(
            "header_injection", "{what} contains a line break or control character", {"what": what}
        )
    return value


def msg_id(value: str, what: str) -> str:
    no_controls(value, what)
    if len(value) > MSG_ID_MAX_LENGTH or not _MSG_ID_RE.match(value):
        raise PydanticCustomError(
            "invalid_message_id", "{what} is not an RFC 5322 msg-id like <local@domain>", {"what": what}
        )
    return value


# The published form of a msg-id field (the runtime check is msg_id: the same pattern and length).
MSG_ID_FIELD: dict[str, Any] = {"pattern": MSG_ID_PATTERN, "maxLength": MSG_ID_MAX_LENGTH}


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
