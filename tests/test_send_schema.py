"""The published schema is the runtime's rules (issue 14 item 5): messages generated from
docs/schema/send-v1.json (hypothesis-jsonschema) are accepted by shared.send.mail.parse_message, and hand-made
violations are refused by both, the runtime with its stable code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator

from shared.base import errors
from shared.send.mail import MAX_RECIPIENTS, MAX_REFERENCES_BYTES, parse_message
from shared.send.mail_headers import InvalidMessageId

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "schema" / "send-v1.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
VALID = {"id": "order-42:v1", "connection_id": "c123", "to": [{"address": "ada@example.com"}]}


def test_the_base_message_is_valid_for_both():
    assert VALIDATOR.is_valid(VALID) and parse_message(VALID).id == VALID["id"]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
@given(from_schema(SCHEMA))
def test_the_runtime_accepts_every_message_the_schema_accepts(data):
    assert VALIDATOR.is_valid(data)
    try:
        parse_message(data)
    except errors.TooManyRecipients:
        # A rule JSON Schema cannot state: to + cc + bcc together (each list alone is capped).
        assert sum(len(data.get(k, [])) for k in ("to", "cc", "bcc")) > MAX_RECIPIENTS
    except InvalidMessageId:
        # The other one: the references together at most 8 KB (each msg-id alone is capped).
        assert len(" ".join(data.get("references", []))) > MAX_REFERENCES_BYTES
    except errors.InvalidMessage as refused:
        # And a composed message's (sent as MIME, shared.send.mail_headers.check_composed): no "=?" in a value of
        # its headers, ASCII addresses, content ids that fit <id>.
        composer_fields = ("in_reply_to", "references", "list_unsubscribe", "internet_message_id")
        composed = any(data.get(key) for key in composer_fields)
        assert composed and refused.code in ("header_injection", "invalid_message"), refused


def _att(**fields):
    return {"attachments": [{"name": "a.txt", **fields}]}


VIOLATIONS = [
    ("id with a space", {"id": "has space"}, "invalid_message"),
    ("id too long", {"id": "x" * 129}, "invalid_message"),
    ("connection id path", {"connection_id": "../etc"}, "invalid_message"),
    ("no recipients", {"to": []}, "invalid_message"),
    ("501 recipients", {"to": [{"address": f"r{i}@example.com"} for i in range(501)]}, "too_many_recipients"),
    ("not an address", {"to": [{"address": "not-an-address"}]}, "invalid_message"),
    ("CR/LF in a name", {"to": [{"address": "a@example.com", "name": "A\r\nBcc: x@y.z"}]}, "header_injection"),
    ("CR/LF in the subject", {"subject": "a\nb"}, "header_injection"),
    ("five headers", {"headers": {f"x-h{i}": "v" for i in range(5)}}, "too_many_headers"),
    ("header not x-", {"headers": {"Subject": "x"}}, "invalid_header"),
    ("reserved header", {"headers": {"X-MailBridge-Trace": "x"}}, "invalid_header"),
    ("CR/LF in a header value", {"headers": {"x-a": "1\r\nBcc: x@y.z"}}, "header_injection"),
    ("CR/LF in a header name", {"headers": {"x-a\nb": "1"}}, "header_injection"),
    ("header value too long", {"headers": {"x-a": "v" * 999}}, "invalid_header"),
    ("CR/LF in an attachment name", _att(name="a\nb", content_base64="aGk="), "header_injection"),
    ("attachment with both sources", _att(content_base64="aGk=", blob="x"), "invalid_message"),
    ("attachment with no source", _att(), "invalid_message"),
    ("attachment not base64", _att(content_base64="***"), "invalid_message"),
    ("attachment content type", _att(content_base64="aGk=", content_type="pdf"), "invalid_message"),
    ("body content and blob", {"body": {"content": "x", "blob": "b"}}, "invalid_message"),
    ("blob name climbing out (issue 23)", _att(blob="api/c/m/../../../../x/y"), "invalid_blob_name"),
    ("blob name with an empty segment", {"body": {"blob": "a//b"}}, "invalid_blob_name"),
    ("blob name percent-encoded", _att(blob="%2e%2e/x"), "invalid_blob_name"),
    ("callback queue with --", {"callback": {"queue": "my--events"}}, "invalid_message"),
    ("metadata key too long", {"metadata": {"k" * 65: "v"}}, "invalid_message"),
    ("unknown field", {"too": [{"address": "a@example.com"}]}, "invalid_message"),
    ("in_reply_to without brackets", {"in_reply_to": "parent@partner.example"}, "invalid_message_id"),
    ("in_reply_to with two @", {"in_reply_to": "<a@b@c>"}, "invalid_message_id"),
    ("in_reply_to with a space", {"in_reply_to": "<a b@c>"}, "invalid_message_id"),
    ("CR/LF in in_reply_to", {"in_reply_to": "<a@b>\r\nBcc: x@y.z"}, "header_injection"),
    ("a reference that is no msg-id", {"references": ["<a@b>", "c@d"]}, "invalid_message_id"),
    ("51 references", {"references": [f"<r{i}@partner.example>" for i in range(51)]}, "invalid_message_id"),
    ("an encoded word in in_reply_to", {"in_reply_to": "<=?utf-8?q?a=0D=0AX=3A_1?=@b>"}, "header_injection"),
    ("an encoded word in a reference", {"references": ["<a@b>", "<x=?us-ascii?q?a?=@b>"]}, "header_injection"),
    ("internet_message_id too long", {"internet_message_id": f"<{'a' * 250}@b>"}, "invalid_message_id"),
    ("unsubscribe over http", {"list_unsubscribe": {"urls": ["http://u.example/x"]}}, "invalid_list_unsubscribe"),
    ("unsubscribe javascript:", {"list_unsubscribe": {"urls": ["javascript:alert(1)"]}}, "invalid_list_unsubscribe"),
    (
        "unsubscribe URL closing <>",
        {"list_unsubscribe": {"urls": ["https://u.example/>,<https://evil"]}},
        "invalid_list_unsubscribe",
    ),
    (
        "one_click with mailto only",
        {"list_unsubscribe": {"urls": ["mailto:u@u.example"], "one_click": True}},
        "invalid_list_unsubscribe",
    ),
    ("unsubscribe without urls", {"list_unsubscribe": {"urls": []}}, "invalid_message"),
]


def test_references_over_8_kb_together_are_refused_by_the_runtime():
    refs = [f"<{'r' * 200}{i}@partner.example>" for i in range(45)]  # each valid, 45 x ~218 bytes > 8 KB
    assert VALIDATOR.is_valid({**VALID, "references": refs})  # the one rule the schema cannot state
    with pytest.raises(InvalidMessageId):
        parse_message({**VALID, "references": refs})


def test_composer_fields_valid_for_both():
    data = {
        **VALID,
        "in_reply_to": "<CAF=x+y_z@mail.gmail.com>",
        "references": ["<root.1@partner.example>", "<CAF=x+y_z@mail.gmail.com>"],
        "list_unsubscribe": {
            "urls": ["https://u.example/u?t=1&l=a%20b", "mailto:u@u.example?subject=stop"],
            "one_click": True,
        },
        "internet_message_id": "<order-4711.1@mail.contoso.com>",
    }
    assert VALIDATOR.is_valid(data)
    assert parse_message(data).is_composed()


@pytest.mark.parametrize(("change", "code"), [v[1:] for v in VIOLATIONS], ids=[v[0] for v in VIOLATIONS])
def test_hand_made_violations_are_refused_by_the_schema_and_the_runtime(change, code):
    data = {**VALID, **change}
    assert not VALIDATOR.is_valid(data), "the published schema must refuse it too"
    with pytest.raises(errors.InvalidMessage) as refused:
        parse_message(data)
    assert refused.value.code == code
