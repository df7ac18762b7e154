"""shared/base/telemetry.py: one outcome line per final send / refresh / connect, parseable and never carrying mail
content; and the send pipeline really logs it once per message (end to end through the queue function)."""

from __future__ import annotations

import logging
import re

import pytest

from shared.base import telemetry
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)

LOGGER = "shared.base.telemetry"


def outcome_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.getMessage().startswith(telemetry.PREFIX + " ")]


def parse_kv(message: str) -> dict[str, str]:
    """What KQL's `parse-kv message ... with (pair_delimiter=" ", kv_delimiter="=")` makes of the line."""
    body = message.removeprefix(telemetry.PREFIX + " ")
    return dict(pair.split("=", 1) for pair in body.split(" "))


def test_one_line_with_every_dimension_in_message_and_extras(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    telemetry.log_outcome(
        "send",
        "sent",
        message_id="order-4711:confirmation",
        connection_id="c3f0",
        duration_ms=412.6,
        graph_request_id="0f6e-11aa",
    )
    (record,) = outcome_records(caplog)
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        "mailbridge.outcome event=send outcome=sent code=- message_id=order-4711:confirmation "
        "connection_id=c3f0 duration_ms=413 graph_request_id=0f6e-11aa"
    )
    expected = {
        "event": "send",
        "outcome": "sent",
        "code": "-",
        "message_id": "order-4711:confirmation",
        "connection_id": "c3f0",
        "duration_ms": "413",
        "graph_request_id": "0f6e-11aa",
    }
    assert parse_kv(record.getMessage()) == expected
    # The OpenTelemetry exporter turns these record attributes into customDimensions.
    assert {name: getattr(record, name) for name in telemetry.FIELDS} == expected


def test_failures_are_warnings_and_carry_their_code(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    telemetry.log_outcome("refresh", "reauth_required", connection_id="c1", code="reauth_required")
    telemetry.log_outcome("connect", "failed", code="admin_consent_required")
    telemetry.log_outcome("connect", "connected", connection_id="c2")
    levels = [(parse_kv(r.getMessage())["outcome"], r.levelno) for r in outcome_records(caplog)]
    assert levels == [("reauth_required", logging.WARNING), ("failed", logging.WARNING), ("connected", logging.INFO)]
    assert parse_kv(outcome_records(caplog)[1].getMessage())["connection_id"] == "-"


@pytest.mark.parametrize(
    "value",
    [
        "ada@example.com",  # an address
        "Your invoice 42",  # a subject (spaces)
        "<p>Dear Ada</p>",  # a body
        "https://login.microsoftonline.com/x?code=abc",  # a URL with a code
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + "a" * 300,  # a token (long)
        "a=b",  # would break key=value parsing
        "line\nbreak",
        "",
        True,
        3.5,
        {"address": "x"},
    ],
)
def test_anything_but_a_plain_identifier_is_replaced(caplog, value):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    fields = telemetry.log_outcome("send", "failed", message_id=value, connection_id=value, code=value)
    assert fields["message_id"] == fields["connection_id"] == fields["code"] == "?"
    (record,) = outcome_records(caplog)
    text = record.getMessage() + repr(record.__dict__)
    if isinstance(value, str) and len(value) > 1:
        assert value not in text
    assert re.fullmatch(r"mailbridge\.outcome( [a-z_]+=[A-Za-z0-9._:?-]+){7}", record.getMessage())


def test_unknown_event_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown telemetry event"):
        telemetry.log_outcome("sned", "sent")


def test_every_final_send_logs_exactly_one_outcome_without_mail_content(send_kit, caplog):
    """Through the queue function: a sent, a rejected (schema) and an unparseable message each log one line
    with their ids, status and code; no address, subject or body appears in any of them."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    kit = send_kit()
    cid = kit.connect("alice")
    good = kit.message(cid, subject="Quarterly numbers", to=["ada@example.com"])
    bad = kit.message(cid, to=[], subject="Nobody to send to")
    with kit.listener():
        kit.put(good)
        kit.put(bad)
        kit.put("not json at all")
        records = kit.wait_final([(cid, good["id"]), (cid, bad["id"])])
    assert records[(cid, good["id"])].status == "sent"
    kit.wait_until(lambda: len([r for r in outcome_records(caplog) if "code=invalid_json" in r.getMessage()]) == 1)
    lines = [parse_kv(r.getMessage()) for r in outcome_records(caplog)]
    by_id = {line["message_id"]: line for line in lines if line["message_id"] in (good["id"], bad["id"])}
    assert [line["message_id"] for line in lines].count(good["id"]) == 1, "an outcome is logged once"
    assert by_id[good["id"]] | {"duration_ms": "*", "graph_request_id": "*"} == {
        "event": "send",
        "outcome": "sent",
        "code": "-",
        "message_id": good["id"],
        "connection_id": cid,
        "duration_ms": "*",
        "graph_request_id": "*",
    }
    assert by_id[good["id"]]["graph_request_id"] == records[(cid, good["id"])].graph_request_id
    assert int(by_id[good["id"]]["duration_ms"]) >= 0
    assert (by_id[bad["id"]]["outcome"], by_id[bad["id"]]["code"]) == ("rejected", "invalid_message")
    (unparsed,) = [line for line in lines if line["code"] == "invalid_json"]
    assert unparsed["outcome"] == "rejected" and unparsed["message_id"].startswith("queue-")
    text = "\n".join(r.getMessage() + repr(r.__dict__) for r in outcome_records(caplog))
    for content in ("ada@example.com", "someone@example.com", "Quarterly numbers", "Nobody to send to", "Plain body"):
        assert content not in text


def test_keep_alive_logs_one_refresh_outcome_per_due_connection(mailbridge, emulator, caplog):
    """A sweep over two due connections, one of them revoked (password reset): one `refreshed` and one
    `reauth_required` line, with their connection ids and durations."""
    from shared.tokens.refresh import KeepAlive

    caplog.set_level(logging.INFO, logger=LOGGER)
    mb = mailbridge(users=("alice", "bob"))
    mb.services.clock = emulator.state.clock.now
    alive = mb.connect("alice")["connection_id"]
    revoked = mb.connect("bob")["connection_id"]
    mb.admin.password_reset(mb.kit.users["bob"]["upn"])
    emulator.state.clock.advance(61 * 86400)
    mb.services.token_key.reset_clients()  # azure-identity's cached tokens live on real time
    report = KeepAlive(mb.services).sweep()
    assert (report.refreshed, report.reauth_required) == (1, 1)
    lines = {line["connection_id"]: line for line in map(parse_kv, (r.getMessage() for r in outcome_records(caplog)))}
    assert lines[alive]["event"] == "refresh" and lines[alive]["outcome"] == "refreshed" and lines[alive]["code"] == "-"
    assert (lines[revoked]["outcome"], lines[revoked]["code"]) == ("reauth_required", "reauth_required")
    assert all(int(lines[c]["duration_ms"]) >= 0 for c in (alive, revoked))
