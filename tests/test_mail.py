"""Unit tests of the mailbridge.send/v1 model (shared/send/mail.py) and the published JSON Schema."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from shared.base import errors
from shared.base.json_limits import decode_payload
from shared.base.settings import load_settings
from shared.send.graph import request_sizes
from shared.send.limits import attachment_plan, check_limits
from shared.send.mail import (
    ATTACH,
    INLINE,
    SCHEMA_ID,
    UPLOAD,
    parse_message,
    schema_text,
)

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "docs" / "schema" / "send-v1.json"
MB = 1024 * 1024


def ok(**fields):
    return {"id": "order-42:v1", "connection_id": "c123", "to": ["ada@example.com"], **fields}


def code_of(data) -> tuple[str, str | None]:
    with pytest.raises(errors.MailbridgeError) as info:
        parse_message(data)
    return info.value.code, info.value.extra.get("field")


def test_committed_schema_equals_the_generated_one():
    assert SCHEMA_FILE.read_text() == schema_text(), "run: python -m shared.send.mail > docs/schema/send-v1.json"
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["$id"] == SCHEMA_ID and schema["additionalProperties"] is False
    assert {"id", "connection_id"} <= set(schema["required"]) and "from" in schema["properties"]


def test_a_full_message_parses_and_normalises_bare_addresses():
    msg = parse_message(
        ok(
            schema="mailbridge.send/v1",
            cc=[{"address": "b@example.com", "name": "B"}],
            body={"content_type": "html", "content": "<p>x</p>"},
            headers={"x-ref": "1"},
            importance="high",
            attachments=[{"name": "a.txt", "content_type": "text/plain", "content_base64": "aGk="}],
            callback={"queue": "my-events"},
            on_ambiguous="resend",
            **{"from": "team@example.com"},
        )
    )
    assert msg.to[0].address == "ada@example.com" and msg.from_.address == "team@example.com"
    assert msg.attachments[0].size == 2 and msg.recipient_count() == 2
    again = parse_message(json.loads(msg.to_queue_json()))
    assert again == msg and again.fingerprint() == msg.fingerprint()
    assert parse_message(ok(subject="other")).fingerprint() != parse_message(ok()).fingerprint()


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        ([1], "invalid_message", "$"),
        ({"connection_id": "c1", "to": ["a@example.com"]}, "invalid_message", "id"),
        (ok(id="has space"), "invalid_message", "id"),
        (ok(id="x" * 129), "invalid_message", "id"),
        (ok(connection_id="../etc"), "invalid_message", "connection_id"),
        (ok(too=["a@example.com"]), "invalid_message", "too"),
        (ok(to=[]), "invalid_message", "$"),
        (ok(to=["not-an-address"]), "invalid_message", "to.0.address"),
        (ok(subject="a\nb"), "header_injection", "subject"),
        (ok(subject="a\rb"), "header_injection", "subject"),
        (ok(to=[{"address": "a@example.com", "name": "A\r\nBcc: x@y.z"}]), "header_injection", "to.0.name"),
        (ok(reply_to=["r@example.com\n"]), "header_injection", "reply_to.0.address"),
        (ok(headers={"x-a": "1\r\nBcc: x@y.z"}), "header_injection", "headers"),
        (ok(headers={"Subject": "x"}), "invalid_header", "headers"),
        (ok(headers={"x-mailbridge-id": "x"}), "invalid_header", "headers"),
        (ok(headers={"x-bad name": "x"}), "invalid_header", "headers"),
        (ok(bcc=[f"r{i}@example.com" for i in range(500)]), "too_many_recipients", "$"),
        (ok(importance="urgent"), "invalid_message", "importance"),
        (ok(attachments=[{"name": "a", "content_base64": "***"}]), "invalid_message", "attachments.0"),
        (ok(attachments=[{"name": "a", "content_base64": "aGk=", "blob": "x"}]), "invalid_message", "attachments.0"),
        (ok(attachments=[{"name": "a", "blob": "https://evil.example/x"}]), "invalid_blob_name", "attachments.0.blob"),
        (ok(attachments=[{"name": "a", "blob": "api/c/m/../../../../x/y"}]), "invalid_blob_name", "attachments.0.blob"),
        (ok(body={"blob": "a//b"}), "invalid_blob_name", "body.blob"),
        (ok(callback={"queue": "Bad_Queue"}), "invalid_message", "callback.queue"),
    ],
)
def test_rejections_have_stable_codes_and_name_the_field(data, code, field):
    assert code_of(data) == (code, field)


def test_exactly_500_recipients_is_fine():
    assert parse_message(ok(to=[f"r{i}@example.com" for i in range(500)])).recipient_count() == 500


def test_queue_payloads_may_be_plain_or_base64_json():
    text = json.dumps(ok())
    assert decode_payload(text) == decode_payload(base64.b64encode(text.encode())) == ok()
    assert decode_payload(text.encode()) == ok()
    for bad in ("hello", "{nope", base64.b64encode(b"not json").decode(), b"\xff\xfe"):
        with pytest.raises(errors.InvalidJson):
            decode_payload(bad)


def test_attachment_plan_inline_attach_upload_and_refusals():
    assert attachment_plan([100, 200], 1000, large_attachments=False) == [INLINE, INLINE]
    assert attachment_plan([3 * MB, 10], 0, large_attachments=True) == [UPLOAD, INLINE]
    # Two 2 MB files fit Graph's 3 MB rule each but not one 4 MB request together: the larger gets a POST of
    # its own. Never an upload session under 3 MB (Graph: ErrorAttachmentSizeShouldNotBeLessThanMinimumSize).
    assert attachment_plan([2 * MB, 2 * MB + 1], 0, large_attachments=True) == [INLINE, ATTACH]
    assert attachment_plan([3 * MB - 2048, 3 * MB - 2048], 0, large_attachments=True) == [ATTACH, INLINE]
    with pytest.raises(errors.AttachmentsTooLarge):
        attachment_plan([2 * MB, 2 * MB], 0, large_attachments=False)
    with pytest.raises(errors.AttachmentsTooLarge):
        attachment_plan([151 * MB], 0, large_attachments=True)
    with pytest.raises(errors.AttachmentsTooLarge):  # just under 3 MB: over one request once base64-encoded
        attachment_plan([3 * MB - 1], 0, large_attachments=True)
    with pytest.raises(errors.MessageTooLarge):  # the body alone must fit one request
        attachment_plan([], 4 * MB, large_attachments=True)


def _settings(**env):
    base = {
        "ENTRA_CLIENT_ID": "id",
        "ENTRA_CLIENT_SECRET": "s",
        "KEY_VAULT_URL": "https://v.vault.azure.net",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "PUBLIC_BASE_URL": "https://mb.example",
        "ALLOWED_RETURN_ORIGINS": "https://app.example",
        "TICKET_SIGNING_KEY": "k" * 40,
    }
    return load_settings({**base, **env})


def _limits(msg, settings):
    return check_limits(msg, settings, *request_sizes(msg, msg.body.content or ""))


def test_limits_that_depend_on_settings():
    big = base64.b64encode(b"x" * 70_000).decode()
    msg = parse_message(ok(attachments=[{"name": "a", "content_base64": big}]))
    with pytest.raises(errors.MessageTooLarge):
        _limits(msg, _settings(MAX_MESSAGE_BYTES="65536"))
    assert _limits(msg, _settings()) == [INLINE]
    with pytest.raises(errors.SendAsNotEnabled):
        _limits(parse_message(ok(**{"from": "t@example.com"})), _settings())
    assert _limits(parse_message(ok(**{"from": "t@example.com"})), _settings(ENABLE_SHARED_MAILBOXES="true")) == []


def test_request_size_counts_utf8_json_bytes_not_characters():
    ascii_body = parse_message(ok(body={"content": "a" * 1000}))
    base, _ = request_sizes(ascii_body, "a" * 1000)
    accented, _ = request_sizes(ascii_body, "é" * 1000)
    quoted, _ = request_sizes(ascii_body, '"' * 1000)
    assert accented - base == 1000, "UTF-8: 2 bytes per é, never 6 (\\u00e9)"
    assert quoted - base == 1000, 'JSON escapes count: \\" is 2 bytes'
