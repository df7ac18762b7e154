"""End-to-end sending through the queue function (devhost QueueListener), Azurite and the emulator."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest

from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)


def test_plain_text_mail_through_the_queue_arrives_in_sent_items(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    msg = kit.message(cid, subject="Invoice 42", body={"content_type": "text", "content": "Dear Ada, hello."})
    with kit.listener():
        kit.put(msg)
        rec = kit.wait_final([(cid, msg["id"])])[(cid, msg["id"])]
    assert rec.status == "sent" and rec.attempts == 1 and rec.mode == "sendMail"
    assert rec.graph_request_id, "Graph's request-id is recorded"
    (item,) = kit.mb.admin.sent_items(kit.address("alice"), key=msg["id"])
    assert item["subject"] == "Invoice 42"
    assert item["body"]["content"] == "Dear Ada, hello." and item["body"]["contentType"].lower() == "text"
    (event,) = kit.events_for(msg["id"])
    assert event["type"] == "mailbridge.message.sent" and event["data"]["graph_request_id"] == rec.graph_request_id


def test_every_field_arrives_including_base64_on_the_queue(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    pdf = b"%PDF-1.4 fake" * 1000
    msg = kit.message(
        cid,
        to=["ada@example.com", {"address": "bob@example.com", "name": "Bob B"}],
        cc=[{"address": "cc@example.com"}],
        bcc=[{"address": "hidden@example.com"}],
        reply_to=[{"address": "replies@example.com", "name": "Replies"}],
        subject="Quarterly report ✓",
        body={"content_type": "html", "content": "<p>Hi <b>all</b></p>"},
        headers={"x-customer-ref": "C-77", "X-Campaign": "q3"},
        importance="high",
        attachments=[
            {"name": "r.pdf", "content_type": "application/pdf", "content_base64": base64.b64encode(pdf).decode()}
        ],
        metadata={"order": "77"},
    )
    with kit.listener():
        kit.put(msg, b64=True)
        rec = kit.wait_final([(cid, msg["id"])])[(cid, msg["id"])]
    assert rec.status == "sent", rec
    (item,) = kit.mb.admin.sent_items(kit.address("alice"), key=msg["id"])
    addrs = lambda items: [(r["emailAddress"]["address"], r["emailAddress"].get("name")) for r in items]  # noqa: E731
    assert addrs(item["toRecipients"]) == [("ada@example.com", "ada@example.com"), ("bob@example.com", "Bob B")]
    assert addrs(item["ccRecipients"]) == [("cc@example.com", "cc@example.com")]
    assert addrs(item["bccRecipients"]) == [("hidden@example.com", "hidden@example.com")]
    assert addrs(item["replyTo"]) == [("replies@example.com", "Replies")]
    assert item["subject"] == "Quarterly report ✓" and item["importance"] == "high"
    assert item["body"]["contentType"].lower() == "html" and item["body"]["content"] == "<p>Hi <b>all</b></p>"
    headers = {h["name"]: h["value"] for h in item["internetMessageHeaders"]}
    assert headers == {"x-mailbridge-id": msg["id"], "x-customer-ref": "C-77", "X-Campaign": "q3"}
    (att,) = item["attachments"]
    assert (att["name"], att["contentType"], att["size"]) == ("r.pdf", "application/pdf", len(pdf))
    assert att["sha256"] == hashlib.sha256(pdf).hexdigest()
    (event,) = kit.events_for(msg["id"])
    assert event["data"]["metadata"] == {"order": "77"}


def _oid(kit, user: str) -> str:
    return kit.mb.kit.users[user]["oid"]


@pytest.mark.parametrize("endpoint", ["me", "users"])
def test_send_as_a_shared_mailbox_lands_in_its_sent_items(send_kit, endpoint):
    kit = send_kit(ENABLE_SHARED_MAILBOXES="true", SEND_AS_ENDPOINT=endpoint)
    alice = _oid(kit, "alice")
    kit.mb.kit.add_user("team", is_shared=True, send_as=[alice], full_access=[alice])
    cid = kit.connect("alice")
    team = kit.address("team")
    before = kit.mb.admin.counters("calls.graph.")
    msg = kit.message(cid, **{"from": {"address": team, "name": "Support Team"}})
    with kit.listener():
        kit.put(msg)
        rec = kit.wait_final([(cid, msg["id"])])[(cid, msg["id"])]
    assert rec.status == "sent", rec
    (item,) = kit.mb.admin.sent_items(team, key=msg["id"])
    assert item["from"]["emailAddress"]["address"].lower() == team.lower()
    assert item["sender"]["emailAddress"]["address"].lower() == team.lower()  # Send As, not on behalf
    after = kit.mb.admin.counters("calls.graph.")
    used = "calls.graph.userSendMail" if endpoint == "users" else "calls.graph.sendMail"
    assert after.get(used, 0) - before.get(used, 0) == 1


def test_send_as_without_rights_fails_once_with_send_as_denied(send_kit):
    kit = send_kit(ENABLE_SHARED_MAILBOXES="true")
    kit.mb.kit.add_user("team", is_shared=True)  # alice has no Send As / on Behalf right
    cid = kit.connect("alice")
    before = kit.mb.admin.counters("calls.graph.sendMail").get("calls.graph.sendMail", 0)
    msg = kit.message(cid, **{"from": kit.address("team")})
    with kit.listener() as listener:
        kit.put(msg)
        rec = kit.wait_final([(cid, msg["id"])])[(cid, msg["id"])]
    assert rec.status == "failed" and rec.error_code == "send_as_denied" and rec.attempts == 1
    assert "ErrorSendAsDenied" in (rec.error_detail or "") and rec.graph_request_id
    assert kit.mb.admin.counters("calls.graph.sendMail")["calls.graph.sendMail"] - before == 1, "no blind retries"
    assert listener.failed == 0
    (event,) = kit.events_for(msg["id"])
    assert event["type"] == "mailbridge.message.failed" and event["data"]["error"]["code"] == "send_as_denied"


def test_a_10_mb_attachment_goes_through_blob_and_an_upload_session(send_kit):
    kit = send_kit(ENABLE_MAIL_READWRITE="true")
    cid = kit.connect("alice")
    big = os.urandom(10 * 1024 * 1024)
    small = b"small file"
    msg = kit.message(
        cid,
        attachments=[
            {
                "name": "big.bin",
                "content_type": "application/octet-stream",
                "content_base64": base64.b64encode(big).decode(),
            },
            {"name": "note.txt", "content_type": "text/plain", "content_base64": base64.b64encode(small).decode()},
        ],
    )
    resp = kit.mb.http("enqueue_message", "POST", body=msg)
    assert resp.status_code == 202, resp.get_body()[:500]
    container = kit.services.storage.container(kit.mb.env["ATTACHMENTS_CONTAINER"])
    assert [b.name for b in container.list_blobs()], "the 10 MB attachment travels as a blob reference"
    before = kit.mb.admin.counters("calls.graph.")
    with kit.listener():
        rec = kit.wait_final([(cid, msg["id"])])[(cid, msg["id"])]
    assert rec.status == "sent" and rec.mode == "draft", rec
    (item,) = kit.mb.admin.sent_items(kit.address("alice"), key=msg["id"])
    atts = {a["name"]: a for a in item["attachments"]}
    assert atts["big.bin"]["size"] == len(big) and atts["big.bin"]["sha256"] == hashlib.sha256(big).hexdigest()
    assert atts["big.bin"]["viaUploadSession"] is True and atts["note.txt"]["viaUploadSession"] is False
    after = kit.mb.admin.counters("calls.graph.")
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta["calls.graph.uploadChunk"] == 3  # 10 MiB in chunks of at most 4 MiB
    assert delta["calls.graph.createMessage"] == 1 and delta["calls.graph.send"] == 1
    assert delta.get("calls.graph.sendMail", 0) == 0
    assert not list(container.list_blobs()), "blobs written by POST /api/messages are deleted once sent"


def test_large_attachment_without_mail_readwrite_is_refused_at_the_door(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    blob = base64.b64encode(os.urandom(3 * 1024 * 1024 + 1)).decode()
    resp = kit.mb.http(
        "enqueue_message", "POST", body=kit.message(cid, attachments=[{"name": "a", "content_base64": blob}])
    )
    assert resp.status_code == 413 and kit.mb.json(resp)["error"]["code"] == "attachments_too_large"


def test_http_enqueue_status_replay_and_conflicts(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    msg = kit.message(cid)
    resp = kit.mb.http("enqueue_message", "POST", body=msg)
    accepted = kit.mb.json(resp)
    assert resp.status_code == 202 and accepted["id"] == msg["id"] and accepted["status"] == "queued"
    assert resp.headers["Location"] == accepted["status_url"] and f"connection_id={cid}" in accepted["status_url"]
    route = {"message_id": msg["id"]}
    status = kit.mb.json(kit.mb.http("get_message", params={"connection_id": cid}, route_params=route))
    assert status["status"] == "queued" and status["attempts"] == 0
    with kit.listener():
        kit.wait_final([(cid, msg["id"])])
    status = kit.mb.json(kit.mb.http("get_message", params={"connection_id": cid}, route_params=route))
    assert status["status"] == "sent" and status["attempts"] == 1 and status["graph_request_id"]
    assert status["completed_at"] and status["error"] is None

    replay = kit.mb.http("enqueue_message", "POST", body=msg)
    assert replay.status_code == 200 and kit.mb.json(replay)["duplicate"] is True
    assert kit.mb.json(replay)["status"] == "sent"
    assert kit.queue_length() == 0, "a replayed id is not enqueued again"
    clash = kit.mb.http("enqueue_message", "POST", body={**msg, "subject": "something else"})
    assert clash.status_code == 409 and kit.mb.json(clash)["error"]["field"] == "id"

    bad = kit.mb.http("enqueue_message", "POST", body={**kit.message(cid), "subject": "a\r\nBcc: x@evil.example"})
    assert bad.status_code == 400 and kit.mb.json(bad)["error"]["code"] == "header_injection"
    unknown = kit.mb.http("enqueue_message", "POST", body=kit.message("c" + "0" * 31))
    assert unknown.status_code == 404 and kit.mb.json(unknown)["error"]["code"] == "unknown_connection"
    assert kit.mb.http("get_message", route_params=route).status_code == 400
    missing = kit.mb.http("get_message", params={"connection_id": cid}, route_params={"message_id": "nope"})
    assert missing.status_code == 404


def test_test_endpoint_sends_to_the_mailbox_itself(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    resp = kit.mb.http("send_test_message", "POST", route_params={"connection_id": cid})
    body = kit.mb.json(resp)
    assert resp.status_code == 200 and body["status"] == "sent", body
    (item,) = kit.mb.admin.sent_items(kit.address("alice"), key=body["id"])
    assert item["subject"] == "Mailbridge test message"
    assert [r["emailAddress"]["address"] for r in item["toRecipients"]] == [kit.address("alice")]
    unknown = kit.mb.http("send_test_message", "POST", route_params={"connection_id": "c" + "1" * 31})
    assert unknown.status_code == 404
