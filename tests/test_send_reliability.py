"""Sending when things go wrong: duplicates, ambiguous 5xx, throttling, dead grants, bad messages, logs."""

from __future__ import annotations

import base64
import json
import logging

from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)


def _count(kit, name: str) -> int:
    return kit.mb.admin.counters(name).get(name, 0)


def _deliveries(kit, mid: str) -> int:
    return kit.mb.admin.deliveries(key=mid)["count"]


def test_the_same_id_enqueued_three_times_is_sent_once(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    kit.services.sender.busy_recheck_s = 0.5
    msg = kit.message(cid)
    with kit.listener() as listener:
        for _ in range(3):
            kit.put(msg)
        kit.wait_final([(cid, msg["id"])])
        kit.wait_until(lambda: kit.queue_length() == 0 and listener.processed >= 3)
    rec = kit.record(cid, msg["id"])
    assert rec.status == "sent" and rec.attempts == 1
    assert _deliveries(kit, msg["id"]) == 1
    assert len(kit.events_for(msg["id"])) == 1, "one event per message, not per copy"
    assert listener.failed == 0


def test_504_after_accept_is_recorded_unknown_and_not_resent(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    kit.mb.admin.add_fault("graph.sendMail", "504_after", count=1)
    msg = kit.message(cid)
    with kit.listener() as listener:
        kit.put(msg)
        rec = kit.wait_final([(cid, msg["id"])])[(cid, msg["id"])]
        kit.wait_until(lambda: kit.queue_length() == 0)
    assert rec.status == "unknown" and rec.error_code == "outcome_unknown" and rec.attempts == 1
    assert rec.graph_request_id, "the request-id of the ambiguous call is kept for Microsoft support"
    assert _deliveries(kit, msg["id"]) == 1, "Graph did send it; we did not send it again"
    (event,) = kit.events_for(msg["id"])
    assert event["type"] == "mailbridge.message.unknown"
    assert listener.failed == 0


def test_opting_in_to_resend_after_an_ambiguous_failure_sends_again(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    kit.mb.admin.add_fault("graph.sendMail", "504_after", count=1)
    msg = kit.message(cid, on_ambiguous="resend")
    with kit.listener():
        kit.put(msg)
        rec = kit.wait_final([(cid, msg["id"])])[(cid, msg["id"])]
    assert rec.status == "sent" and rec.attempts == 2
    assert _deliveries(kit, msg["id"]) == 2, "the producer chose a possible duplicate over a possible loss"


def test_draft_mode_resolves_a_504_after_accept_by_the_extended_property(send_kit):
    kit = send_kit(ENABLE_MAIL_READWRITE="true")
    cid = kit.connect("alice")
    kit.mb.admin.add_fault("graph.send", "504_after", count=1)
    msg = kit.message(cid)
    with kit.listener():
        kit.put(msg)
        rec = kit.wait_final([(cid, msg["id"])])[(cid, msg["id"])]
    assert rec.status == "sent" and rec.mode == "draft" and rec.attempts == 1
    assert _deliveries(kit, msg["id"]) == 1
    assert kit.mb.admin.drafts(kit.address("alice"), key=msg["id"]) == []


def test_draft_mode_sends_the_existing_draft_after_a_503(send_kit):
    kit = send_kit(ENABLE_MAIL_READWRITE="true")
    cid = kit.connect("alice")
    kit.mb.admin.add_fault("graph.send", "503", count=1, retry_after=1)
    created = _count(kit, "calls.graph.createMessage")
    msg = kit.message(cid)
    with kit.listener():
        kit.put(msg)
        rec = kit.wait_final([(cid, msg["id"])])[(cid, msg["id"])]
    assert rec.status == "sent" and rec.attempts == 2 and rec.reschedules == 1
    assert _count(kit, "calls.graph.createMessage") - created == 1, "the retry reused the draft"
    assert _deliveries(kit, msg["id"]) == 1


def test_429s_are_waited_out_with_a_visibility_delay_and_the_mail_is_sent(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    kit.mb.admin.add_fault("graph.sendMail", "429", count=2, retry_after=1)
    msg = kit.message(cid)
    with kit.listener() as listener:
        kit.put(msg)
        rec = kit.wait_final([(cid, msg["id"])])[(cid, msg["id"])]
    assert rec.status == "sent" and rec.attempts == 3 and rec.reschedules == 2
    assert rec.error_code is None, "a final success clears the transient error"
    assert _deliveries(kit, msg["id"]) == 1
    assert listener.failed == 0 and listener.poisoned == 0, "throttling never burns the dequeue count"


def test_an_expired_connection_turns_reauth_required_and_its_messages_fail(send_kit, emulator):
    kit = send_kit()
    # Short-lived access tokens, so the first send must redeem the refresh token the reset has killed.
    emulator.state.entra.settings.access_token_lifetime_s = 120
    cid = kit.connect("alice")
    kit.mb.admin.password_reset(kit.mb.kit.users["alice"]["upn"])
    sends = _count(kit, "calls.graph.sendMail")
    first, second = kit.message(cid), kit.message(cid)
    with kit.listener() as listener:
        kit.put(first)
        kit.wait_final([(cid, first["id"])])
        kit.put(second)
        recs = kit.wait_final([(cid, first["id"]), (cid, second["id"])])
    for rec in recs.values():
        assert rec.status == "failed" and rec.error_code == "reauth_required", rec
    assert "50173" in (recs[(cid, first["id"])].error_detail or "")
    assert kit.services.connections.get(cid).status == "reauth_required"
    events = kit.events()
    (conn_event,) = [e for e in events if e["type"] == "mailbridge.connection.reauth_required"]
    assert conn_event["data"]["connection_id"] == cid and conn_event["data"]["user_ref"] == "ref-alice"
    failed = [e for e in events if e["type"] == "mailbridge.message.failed"]
    assert {e["data"]["message_id"] for e in failed} == {first["id"], second["id"]}
    assert _count(kit, "calls.graph.sendMail") == sends and listener.failed == 0


def test_bad_messages_are_rejected_once_with_a_reason_and_an_event(send_kit):
    kit = send_kit(MAX_MESSAGE_BYTES="65536")
    cid = kit.connect("alice")
    container = kit.services.storage.container(kit.mb.env["ATTACHMENTS_CONTAINER"])
    container.upload_blob("producer/big.bin", b"x" * 100_000)
    ok = kit.message
    cases = {
        "no-json": ("this is not json", "invalid_json"),
        "broken": ('{"id": "broken", ', "invalid_json"),
        # json.loads recursed into a RecursionError: retried to the poison queue instead of rejected (issue 23)
        "deep": ("[" * 60_000, "invalid_json"),
        "deep-b64": (
            base64.b64encode(('{"id": "d", "a": ' + "[" * 20_000 + "]" * 20_000 + "}").encode()).decode(),
            "invalid_json",
        ),
        "array": ("[1, 2]", "invalid_message"),
        "schema": (json.dumps({**ok(cid, id="b-schema"), "colour": "red"}), "invalid_message"),
        "noid": (json.dumps({k: v for k, v in ok(cid).items() if k != "id"}), "invalid_message"),
        "conn": (json.dumps(ok("c" + "9" * 31, id="b-conn")), "unknown_connection"),
        "crlf": (json.dumps(ok(cid, id="b-crlf", subject="Hi\r\nBcc: all@example.com")), "header_injection"),
        "addr": (json.dumps(ok(cid, id="b-addr", to=["a@example.com\nBcc: x@example.com"])), "header_injection"),
        "hdr": (json.dumps(ok(cid, id="b-hdr", headers={"Received": "x"})), "invalid_header"),
        "many": (
            json.dumps(ok(cid, id="b-many", bcc=[f"r{i}@example.com" for i in range(501)])),
            "too_many_recipients",
        ),
        "large": (
            json.dumps(ok(cid, id="b-large", attachments=[{"name": "big.bin", "blob": "producer/big.bin"}])),
            "message_too_large",
        ),
    }
    sends = _count(kit, "calls.graph.sendMail")
    with kit.listener() as listener:
        for text, _ in cases.values():
            kit.put(text)
        kit.wait_until(
            lambda: len([e for e in kit.events() if e["type"] == "mailbridge.message.rejected"]) >= len(cases)
        )
        kit.wait_until(lambda: kit.queue_length() == 0)
    rejected = [e for e in kit.events() if e["type"] == "mailbridge.message.rejected"]
    codes = sorted(e["data"]["error"]["code"] for e in rejected)
    assert codes == sorted(code for _, code in cases.values())
    by_id = {e["data"]["message_id"]: e["data"] for e in rejected}
    assert by_id["b-schema"]["error"]["field"] == "colour" and by_id["b-crlf"]["error"]["field"] == "subject"
    assert by_id["b-conn"]["connection_id"] == "c" + "9" * 31
    unreadable = [d for mid, d in by_id.items() if mid.startswith("queue-")]
    assert len(unreadable) == 6, "messages without a readable id are keyed by their queue message id"
    for data in by_id.values():
        rec = kit.record(data["connection_id"], data["message_id"])
        assert rec is not None and rec.status == "rejected" and rec.attempts == 0
    assert listener.failed == 0 and listener.poisoned == 0, "never retried five times"
    assert kit.queue_length(kit.mb.env["OUTBOUND_QUEUE"] + "-poison") == 0
    assert _count(kit, "calls.graph.sendMail") == sends


def test_no_token_or_mail_body_in_the_logs(send_kit, caplog):
    caplog.set_level(logging.DEBUG)
    kit = send_kit()
    cid = kit.connect("alice")
    secret_body = "BODY-0f3a9 the quarterly numbers are confidential"
    msgs = [kit.message(cid, body={"content_type": "text", "content": secret_body}, subject="SUBJ-77c1 private")]
    msgs.append(kit.message(cid, subject="Hi\nBcc: x@example.com", body={"content": secret_body}))  # rejected
    with kit.listener():
        for m in msgs:
            kit.put(m)
        kit.wait_final([(cid, m["id"]) for m in msgs])
    token = kit.services.tokens._memory[cid].token
    assert len(token) > 100
    text = caplog.text
    assert msgs[0]["id"] in text, "logs do name the message id"
    for secret in (token, secret_body, "BODY-0f3a9", "SUBJ-77c1"):
        assert secret not in text
