"""Attacks on the composer (issue 27): user values that the standard library's ``email`` package would turn into
header fields of their own. Its header parser decodes RFC 2047 encoded words in the values it is given (even inside
a msg-id token or a quoted parameter), and its generators have written a decoded CR LF out as a line end
(CVE-2024-6923; for ``as_bytes`` CVE-2026-1299, python/cpython#144125): ``=?utf-8?q?x=0D=0ABcc=3A_evil@...?=`` in a
subject was a Bcc line. A composed message holding "=?" in any value that reaches a MIME header is refused
(``header_injection``) before Graph.

Every assertion reads what the emulator delivered (it parses the MIME like a receiving server)."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from shared.base import errors
from shared.send.mail import parse_message
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)

PARENT = "<parent-1@partner.example>"


def _evil() -> str:
    return f"evil-{uuid.uuid4().hex[:8]}@attacker.example"


def _q(text: str) -> str:
    """``text`` as a Q-encoded word: CR LF become =0D=0A, ':' and '@' their =XX forms, spaces '_'."""
    coded = "".join(c if c.isalnum() or c in ".-" else ("_" if c == " " else f"={ord(c):02X}") for c in text)
    return f"=?utf-8?q?{coded}?="


def _att(name: str) -> dict[str, Any]:
    return {"name": name, "content_type": "application/pdf", "content_base64": base64.b64encode(b"%PDF").decode()}


def _msg_id(evil: str) -> str:
    """A msg-id the published pattern takes (atext only) whose encoded word is a Bcc line; the rest an X-Y line."""
    coded = _q("a\r\nBcc: " + evil + "\r\nX-Y: ")
    return f"<{coded}@b.example>"


# Each vector: the message fields that carry a Bcc line for ``evil`` (or a second address) in an encoded word.
VECTORS: dict[str, Any] = {
    "subject": lambda evil: {"subject": _q(f"hi\r\nBcc: {evil}")},
    "custom header": lambda evil: {"headers": {"x-order": _q(f"1\r\nBcc: {evil}")}},
    "in_reply_to": lambda evil: {"in_reply_to": _msg_id(evil)},
    "a reference": lambda evil: {"references": [PARENT, _msg_id(evil)]},
    "display name": lambda evil: {"to": [{"address": "r@partner.example", "name": _q(f"x\r\nBcc: {evil}")}]},
    "display name, a second address": lambda evil: {"to": [{"address": "r@partner.example", "name": _q(f"x, {evil}")}]},
}


@pytest.mark.parametrize("vector", list(VECTORS), ids=list(VECTORS))
def test_an_encoded_word_adds_no_recipient_and_is_refused(send_kit, vector):
    kit = send_kit()
    cid = kit.connect("alice")
    evil = _evil()
    msg = {**kit.message(cid, to=["r@partner.example"], in_reply_to=PARENT), **VECTORS[vector](evil)}
    outcome = kit.services.sender.process(msg, f"q-{msg['id']}")
    assert kit.mb.admin.received(evil) == []
    assert outcome.status == "rejected"
    rec = kit.record(cid, msg["id"])
    assert rec is not None and rec.error_code == "header_injection"


@pytest.mark.parametrize(
    "fields",
    [
        {"attachments": [_att(_q("a.pdf\r\nContent-Type: text/html"))]},
        {"attachments": [{**_att("a.pdf"), "content_id": _q("c1\r\nContent-Type: text/html")}]},
    ],
    ids=["attachment name", "content id"],
)
def test_an_encoded_word_in_a_part_header_is_refused(send_kit, fields):
    kit = send_kit()
    cid = kit.connect("alice")
    to = f"r-{uuid.uuid4().hex[:8]}@partner.example"
    msg = kit.message(cid, to=[to], in_reply_to=PARENT, **fields)
    outcome = kit.services.sender.process(msg, f"q-{msg['id']}")
    assert kit.mb.admin.received(to) == []
    assert outcome.status == "rejected" and outcome.error is not None and outcome.error.code == "header_injection"


def test_http_refuses_the_encoded_word_of_a_composed_message_only(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    subject = _q(f"hi\r\nBcc: {_evil()}")
    bad = kit.mb.http("enqueue_message", "POST", body=kit.message(cid, subject=subject, in_reply_to=PARENT))
    assert bad.status_code == 400
    error = kit.mb.json(bad)["error"]
    assert error["code"] == "header_injection" and error["field"] == "subject"
    # Graph's JSON message takes the subject as text (no MIME is built here): unchanged, accepted.
    plain = kit.mb.http("enqueue_message", "POST", body=kit.message(cid, subject=subject))
    assert plain.status_code == 202


def test_a_quote_in_an_inline_attachment_name_stays_in_the_name(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    to = f"r-{uuid.uuid4().hex[:8]}@partner.example"
    name = 'report"; size="1.pdf'
    msg = kit.message(cid, to=[to], in_reply_to=PARENT, attachments=[{**_att(name), "content_id": "c1@mb"}])
    outcome = kit.services.sender.process(msg, f"q-{msg['id']}")
    assert outcome.status == "sent", outcome
    [got] = kit.mb.admin.received(to)
    [att] = got["attachments"]
    assert att["name"] == name and att["isInline"] is True


def test_a_non_ascii_address_in_a_composed_message_is_rejected_not_retried(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    msg = kit.message(cid, to=["josé@partner.example"], in_reply_to=PARENT)
    outcome = kit.services.sender.process(msg, f"q-{msg['id']}")
    assert outcome.status == "rejected" and outcome.error is not None
    assert outcome.error.code == "invalid_message" and outcome.error.extra["field"] == "to.0.address"


@pytest.mark.parametrize("content_id", ["c1> <evil", "logo 1", "lógo"])
def test_a_content_id_that_is_no_single_mime_id_is_refused_in_a_composed_message_only(content_id):
    data = {"id": "m1", "connection_id": "c1", "to": ["r@partner.example"], "in_reply_to": PARENT}
    data["attachments"] = [{**_att("a.png"), "content_id": content_id}]
    with pytest.raises(errors.InvalidMessage) as refused:
        parse_message(data)
    assert refused.value.code == "invalid_message" and refused.value.extra["field"] == "attachments.0.content_id"
    del data["in_reply_to"]  # Graph's JSON message takes it as a property, no header: unchanged
    assert parse_message(data).attachments[0].content_id == content_id
