"""Unit tests of the emulator's pure Graph pieces: message validation, throttle windows,
upload sessions and the OData filter parser (no HTTP)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from emulator.graph_message import (
    MAX_INLINE_ATTACHMENT_BYTES,
    GraphError,
    parse_message,
)
from emulator.graph_query import parse_expand, parse_filter, parse_list_query
from emulator.graph_throttle import GraphLimits, Throttle
from emulator.graph_upload import MAX_CHUNK_BYTES, UploadSession, parse_attachment_item

PROP = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name MailbridgeId"


def rcpt(address: str) -> dict:
    return {"emailAddress": {"address": address}}


def test_parse_message_normalises_every_field() -> None:
    fields = parse_message(
        {
            "subject": "Hi",
            "body": {"contentType": "HTML", "content": "<b>x</b>"},
            "toRecipients": [rcpt("a@x.example")],
            "ccRecipients": [rcpt("b@x.example")],
            "bccRecipients": [rcpt("c@x.example")],
            "replyTo": [rcpt("d@x.example")],
            "importance": "High",
            "internetMessageHeaders": [{"name": "X-Trace", "value": "1"}],
            "singleValueExtendedProperties": [{"id": PROP, "value": "k1"}],
        },
        require_recipients=True,
    )
    assert fields.body_type == "html" and fields.importance == "high"
    assert fields.recipient_count() == 3
    assert fields.to == [{"emailAddress": {"name": "a@x.example", "address": "a@x.example"}}]
    assert fields.extended_properties == [{"id": PROP, "value": "k1"}]


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"toRecipients": [rcpt("not-an-address")]}, "ErrorInvalidRecipients"),
        ({"toRecipients": [rcpt("a@x.example\r\nBcc: e@x.example")]}, "ErrorInvalidRecipients"),
        ({"subject": "no recipients"}, "ErrorInvalidRecipients"),
        (
            {"toRecipients": [rcpt("a@x.example")], "internetMessageHeaders": [{"name": "Reply", "value": "v"}]},
            "InvalidInternetMessageHeader",
        ),
        ({"toRecipients": [rcpt("a@x.example")], "toRecipient": []}, "RequestBodyRead"),
        ({"toRecipients": [rcpt("a@x.example")], "importance": "urgent"}, "RequestBodyRead"),
        ({"toRecipients": [rcpt("a@x.example")], "body": {"contentType": "rtf", "content": ""}}, "RequestBodyRead"),
    ],
)
def test_parse_message_rejects_like_graph(message: dict, code: str) -> None:
    with pytest.raises(GraphError) as err:
        parse_message(message, require_recipients=True)
    assert err.value.status == 400 and err.value.code == code


def test_recipient_limit_counts_to_cc_bcc() -> None:
    many = [rcpt(f"u{i}@x.example") for i in range(250)]
    parse_message({"toRecipients": many, "ccRecipients": many}, require_recipients=True)  # 500 ok
    with pytest.raises(GraphError) as err:
        parse_message(
            {"toRecipients": many, "ccRecipients": many, "bccRecipients": [rcpt("z@x.example")]},
            require_recipients=True,
        )
    assert err.value.code == "ErrorExceededMaxRecipientLimit"


def test_inline_attachment_limit_is_3_mb() -> None:
    def att(size: int) -> dict:
        return {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "f.bin",
            "contentBytes": base64.b64encode(b"\0" * size).decode(),
        }

    parse_message(
        {"toRecipients": [rcpt("a@x.example")], "attachments": [att(MAX_INLINE_ATTACHMENT_BYTES)]},
        require_recipients=True,
    )
    with pytest.raises(GraphError) as err:
        parse_message(
            {"toRecipients": [rcpt("a@x.example")], "attachments": [att(MAX_INLINE_ATTACHMENT_BYTES + 1)]},
            require_recipients=True,
        )
    assert err.value.code == "ErrorAttachmentSizeLimitExceeded"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_throttle_concurrency_and_release() -> None:
    throttle = Throttle(GraphLimits(), FakeClock())
    for _ in range(4):
        throttle.acquire("app", "mbx")
    with pytest.raises(GraphError) as err:
        throttle.acquire("app", "mbx")
    assert err.value.status == 429 and err.value.headers["Retry-After"] == "1"
    assert "MailboxConcurrency" in err.value.message
    throttle.acquire("other-app", "mbx")  # limits are per app + mailbox
    throttle.release("app", "mbx")
    throttle.acquire("app", "mbx")
    assert throttle.stats()["max_concurrency"]["mbx"] == 5  # the refused attempt is recorded


def test_throttle_message_window_slides_on_the_clock() -> None:
    clock = FakeClock()
    limits = GraphLimits()
    limits.update({"messages_per_window": 3, "message_window_s": 60})
    throttle = Throttle(limits, clock)
    for _ in range(3):
        throttle.admit_send("app", "mbx", 1)
        clock.t += 10
    with pytest.raises(GraphError) as err:
        throttle.admit_send("app", "mbx", 1)
    assert err.value.headers["Retry-After"] == "30"  # first send at t0 leaves the window at t0+60
    clock.t += 30
    throttle.admit_send("app", "mbx", 1)


def test_throttle_never_answers_429_for_recipients() -> None:
    """Exchange enforces the rolling recipient limit by accepting the send and NDR-ing it (5.1.90), not with a
    429 (REFERENCE: sending limits): the throttle lets it through; tests/test_emulator_ndr.py covers the NDR."""
    clock = FakeClock()
    limits = GraphLimits()
    limits.update({"recipients_per_window": 10})
    throttle = Throttle(limits, clock)
    throttle.admit_send("app", "mbx", 8)
    throttle.admit_send("app", "mbx", 3)  # over the budget: accepted here, bounced by graph_ndr


def test_limits_update_validates() -> None:
    limits = GraphLimits()
    with pytest.raises(ValueError):
        limits.update({"no_such_limit": 1})
    with pytest.raises(ValueError):
        limits.update({"max_concurrency": 1.5})
    limits.update({"message_window_s": 2})
    assert limits.message_window_s == 2.0


def test_upload_session_in_order_chunks() -> None:
    data = bytes(range(256)) * 40  # 10,240 bytes
    session = UploadSession(
        "mbx", "msg", "app", "f.bin", "application/octet-stream", len(data), expires_at=2e9, cap=4096
    )
    assert not session.put(f"bytes 0-4095/{len(data)}", "4096", data[:4096], 1e9)
    assert session.next_expected() == ["4096"]
    with pytest.raises(GraphError) as err:  # overlap
        session.put(f"bytes 0-99/{len(data)}", "100", data[:100], 1e9)
    assert err.value.status == 416 and err.value.extra["nextExpectedRanges"] == ["4096-"]
    with pytest.raises(GraphError) as err:  # wrong total
        session.put("bytes 4096-5000/99999", "905", data[4096:5001], 1e9)
    assert err.value.status == 400
    assert session.put(f"bytes 4096-{len(data) - 1}/{len(data)}", str(len(data) - 4096), data[4096:], 1e9)
    assert session.sha256 == hashlib.sha256(data).hexdigest()
    assert session.content == data[:4096]  # capped


def test_upload_session_refuses_big_chunks_and_expiry() -> None:
    size = MAX_CHUNK_BYTES + 10
    session = UploadSession("mbx", "msg", "app", "f", "x", size, expires_at=100.0, cap=0)
    with pytest.raises(GraphError) as err:
        session.put(f"bytes 0-{MAX_CHUNK_BYTES}/{size}", str(MAX_CHUNK_BYTES + 1), b"\0" * (MAX_CHUNK_BYTES + 1), 1.0)
    assert err.value.status == 400
    with pytest.raises(GraphError) as err:
        session.put(f"bytes 0-9/{size}", "10", b"\0" * 10, 100.0)
    assert err.value.status == 401


def test_attachment_item_validation() -> None:
    spec = parse_attachment_item({"AttachmentItem": {"attachmentType": "file", "name": "a", "size": 3 * 1024 * 1024}})
    assert spec["size"] == 3 * 1024 * 1024 and spec["contentType"] == "application/octet-stream"
    with pytest.raises(GraphError):
        parse_attachment_item({"AttachmentItem": {"name": "a", "size": 151 * 1024 * 1024}})
    with pytest.raises(GraphError) as small:  # Graph "attach large files", Errors section
        parse_attachment_item({"AttachmentItem": {"name": "a", "size": 5}})
    assert small.value.code == "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize"


@pytest.mark.parametrize(
    "text",
    [
        f"singleValueExtendedProperties/Any(ep: ep/id eq '{PROP}' and ep/value eq 'k''1')",
        f"singleValueExtendedProperties/any(x:x/value eq 'k''1' and x/id eq '{PROP}')",
        f"singleValueExtendedProperties/Any(ep: (ep/id eq '{PROP}') and (ep/value eq 'k''1'))",
    ],
)
def test_filter_forms(text: str) -> None:
    flt = parse_filter(text)
    assert flt.prop_id == PROP and flt.value == "k'1"
    assert flt.matches([{"id": PROP.lower(), "value": "k'1"}])
    assert not flt.matches([{"id": PROP, "value": "k1"}])
    assert flt.matches([{"id": PROP, "value": "K'1"}]), "Graph compares the value case-insensitively"


@pytest.mark.parametrize(
    "text",
    [
        "subject eq 'x'",
        f"singleValueExtendedProperties/Any(ep: ep/id eq '{PROP}' or ep/value eq 'k')",
        f"singleValueExtendedProperties/Any(ep: other/id eq '{PROP}')",
        "singleValueExtendedProperties/Any(ep: ep/value eq 'k')",
    ],
)
def test_filter_rejects_other_forms(text: str) -> None:
    with pytest.raises(GraphError) as err:
        parse_filter(text)
    assert err.value.status == 400


def test_expand_and_list_query() -> None:
    exp = parse_expand(f"singleValueExtendedProperties($filter=id eq '{PROP}'),attachments")
    assert exp.props and exp.prop_id == PROP and exp.attachments
    assert exp.props_for([{"id": PROP, "value": "v"}, {"id": "String 0x1234", "value": "w"}]) == [
        {"id": PROP, "value": "v"}
    ]
    query = parse_list_query({"$select": "id,subject", "$top": "5"})
    assert query.select == ["id", "subject"] and query.top == 5
    with pytest.raises(GraphError):
        parse_list_query({"$search": "x"})
