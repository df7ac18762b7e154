"""Drafts, extended-property lookup, attachments and upload sessions on the emulated Graph."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from urllib.parse import quote

from tests import emulator_graph_support as support
from tests.emulator_graph_support import PROP_ID, GraphKit, rcpt, unique

RW = ("Mail.Send", "Mail.ReadWrite")
MIB = 1024 * 1024

graph_kit = support.graph_kit
graph_limits = support.graph_limits


def create_draft(kit: GraphKit, token: str, key: str, **extra: object) -> dict:
    message = {
        "subject": f"draft {key}",
        "body": {"contentType": "text", "content": "see attached"},
        "toRecipients": [rcpt("client@partner.example")],
        "singleValueExtendedProperties": [{"id": PROP_ID, "value": key}],
        **extra,
    }
    resp = kit.call("POST", "/v1.0/me/messages", token, json=message)
    assert resp.status_code == 201, resp.text
    return resp.json()


def lookup(kit: GraphKit, token: str, folder: str, key: str) -> list[dict]:
    flt = f"singleValueExtendedProperties/Any(ep: ep/id eq '{PROP_ID}' and ep/value eq '{key}')"
    params = {
        "$filter": flt,
        "$select": "id,subject,isDraft",
        "$expand": f"singleValueExtendedProperties($filter=id eq '{PROP_ID}')",
    }
    path = f"/v1.0/me/mailFolders/{folder}/messages" if folder else "/v1.0/me/messages"
    resp = kit.call("GET", path, token, params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()["value"]


def test_draft_lookup_by_extended_property(graph_kit: GraphKit) -> None:
    token = graph_kit.token("alice", *RW)
    key, other = unique(), unique()
    draft = create_draft(graph_kit, token, key)
    create_draft(graph_kit, token, other)
    assert draft["isDraft"] is True and draft["id"].startswith("AAMk")
    for folder in ("drafts", "Drafts", None):
        [found] = lookup(graph_kit, token, folder, key)
        assert found["id"] == draft["id"] and found["subject"] == f"draft {key}"
        assert found["singleValueExtendedProperties"] == [{"id": PROP_ID, "value": key}]
        assert "body" not in found  # $select honoured
    assert lookup(graph_kit, token, "sentitems", key) == []
    assert lookup(graph_kit, token, "drafts", "no-such-key") == []
    bad = graph_kit.call("GET", "/v1.0/me/messages", token, params={"$filter": "subject eq 'x'"})
    assert bad.status_code == 400
    got = graph_kit.call("GET", f"/v1.0/me/messages/{quote(draft['id'])}", token)
    assert got.status_code == 200 and got.json()["id"] == draft["id"]


def test_draft_endpoints_need_mail_readwrite(graph_kit: GraphKit) -> None:
    send_only = graph_kit.token("alice", "Mail.Send")
    resp = graph_kit.call("POST", "/v1.0/me/messages", send_only, json={"subject": "x"})
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "ErrorAccessDenied"
    resp = graph_kit.call("GET", "/v1.0/me/messages", send_only)
    assert resp.status_code == 403
    draft = create_draft(graph_kit, graph_kit.token("alice", *RW), unique())
    resp = graph_kit.call(
        "POST",
        f"/v1.0/me/messages/{draft['id']}/attachments/createUploadSession",
        send_only,
        json={"AttachmentItem": {"attachmentType": "file", "name": "a", "size": 10}},
    )
    assert resp.status_code == 403


def test_small_attachment_then_send(graph_kit: GraphKit, emulator_admin) -> None:
    token = graph_kit.token("alice", *RW)
    key = unique()
    draft = create_draft(graph_kit, token, key)
    data = os.urandom(1000)
    resp = graph_kit.call(
        "POST",
        f"/v1.0/me/messages/{draft['id']}/attachments",
        token,
        json={
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "small.bin",
            "contentType": "application/octet-stream",
            "contentBytes": base64.b64encode(data).decode(),
        },
    )
    assert resp.status_code == 201 and resp.json()["size"] == 1000
    assert graph_kit.call("POST", f"/v1.0/me/messages/{draft['id']}/send", token).status_code == 202
    [sent] = emulator_admin.sent_items(graph_kit.addr("alice"), key=key)
    assert sent["attachments"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert emulator_admin.drafts(graph_kit.addr("alice"), key=key) == []


def test_upload_session_10_mib_in_4_mib_chunks_then_send(graph_kit: GraphKit, emulator_admin) -> None:
    token = graph_kit.token("alice", *RW)
    key = unique()
    draft = create_draft(graph_kit, token, key)
    data = os.urandom(10 * MIB)
    resp = graph_kit.call(
        "POST",
        f"/v1.0/me/messages/{draft['id']}/attachments/createUploadSession",
        token,
        json={
            "AttachmentItem": {
                "attachmentType": "file",
                "name": "big.bin",
                "size": len(data),
                "contentType": "application/octet-stream",
            }
        },
    )
    assert resp.status_code == 201, resp.text
    session = resp.json()
    assert session["nextExpectedRanges"] == ["0-"] and session["expirationDateTime"]
    url = session["uploadUrl"]
    assert url.startswith(graph_kit.base + "/")

    def put(start: int, end: int, auth: str | None = None, body: bytes | None = None) -> object:
        headers = {"Content-Range": f"bytes {start}-{end}/{len(data)}", "Content-Type": "application/octet-stream"}
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        return graph_kit.http.put(
            url, data=data[start : end + 1] if body is None else body, headers=headers, timeout=60
        )

    refused = put(0, 4 * MIB - 1, auth=token)  # the pre-authenticated URL refuses a bearer token
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "InvalidAudience"
    too_big = put(0, 4 * MIB)  # 4 MiB + 1 byte
    assert too_big.status_code == 400
    first = put(0, 4 * MIB - 1)
    assert first.status_code == 200 and first.json()["nextExpectedRanges"] == [str(4 * MIB)]
    overlap = put(4 * MIB - 10, 8 * MIB - 11)
    assert overlap.status_code == 416 and overlap.json()["nextExpectedRanges"] == [f"{4 * MIB}-"]
    assert put(4 * MIB, 8 * MIB - 1).status_code == 200
    last = put(8 * MIB, len(data) - 1)
    assert last.status_code == 201 and "Attachments('" in last.headers["Location"]

    sent = graph_kit.call("POST", f"/v1.0/me/messages/{draft['id']}/send", token)
    assert sent.status_code == 202
    assert graph_kit.call("GET", f"/v1.0/me/messages/{draft['id']}", token).status_code == 404
    [found] = lookup(graph_kit, token, "sentitems", key)
    assert found["id"] != draft["id"] and found["isDraft"] is False  # ids change on move
    [item] = emulator_admin.sent_items(graph_kit.addr("alice"), key=key)
    [att] = item["attachments"]
    assert att["size"] == len(data) and att["viaUploadSession"] is True
    assert att["sha256"] == hashlib.sha256(data).hexdigest()
    assert att["contentStored"] <= 1 * MIB  # memory stays bounded
    # a second send of the same (now moved) draft is refused
    assert graph_kit.call("POST", f"/v1.0/me/messages/{draft['id']}/send", token).status_code == 404
    assert emulator_admin.deliveries(key=key)["count"] == 1


def test_shared_mailbox_draft_send_on_behalf(graph_kit: GraphKit, emulator_admin) -> None:
    token = graph_kit.token("bob", "Mail.Send", "Mail.Send.Shared", "Mail.ReadWrite")
    key = unique()
    draft = create_draft(graph_kit, token, key, **{"from": rcpt(graph_kit.addr("team"))})
    assert graph_kit.call("POST", f"/v1.0/me/messages/{draft['id']}/send", token).status_code == 202
    [copy] = emulator_admin.sent_items(graph_kit.addr("team"), key=key)
    assert copy["sender"]["emailAddress"]["address"] == graph_kit.addr("bob")
    assert copy["from"]["emailAddress"]["address"] == graph_kit.addr("team")


def test_concurrent_sends_of_one_draft_deliver_once(graph_kit: GraphKit, emulator_admin) -> None:
    import threading

    token = graph_kit.token("alice", *RW)
    key = unique()
    draft = create_draft(graph_kit, token, key, internetMessageHeaders=[{"name": "x-mailbridge-id", "value": key}])
    barrier = threading.Barrier(3)
    codes: list[int] = []

    def send() -> None:
        session = graph_kit.tenant.http()
        barrier.wait()
        resp = session.post(
            f"{graph_kit.base}/v1.0/me/messages/{draft['id']}/send",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        codes.append(resp.status_code)
        session.close()

    threads = [threading.Thread(target=send) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [202, 404, 404]
    assert emulator_admin.deliveries(key=key)["count"] == 1


# --- issue 14: what Graph refuses, and transport taking its time ----------------------------------------


def test_more_than_five_internet_headers_are_refused_on_send_and_on_draft_creation(graph_kit: GraphKit) -> None:
    token = graph_kit.token("alice", *RW)
    five = [{"name": f"x-h{i}", "value": "v"} for i in range(5)]
    ok = graph_kit.send(token, graph_kit.simple(unique(), internetMessageHeaders=five))
    assert ok.status_code == 202, ok.text
    for headers in (five + [{"name": "x-h5", "value": "v"}], []):  # six; and an empty collection (#2208)
        sent = graph_kit.send(token, graph_kit.simple(unique(), internetMessageHeaders=headers))
        draft = graph_kit.call(
            "POST", "/v1.0/me/messages", token, json={"subject": "d", "internetMessageHeaders": headers}
        )
        for resp in (sent, draft):
            assert resp.status_code == 400, resp.text
            assert resp.json()["error"]["code"] == "InvalidInternetMessageHeaderCollection"


def test_an_upload_session_for_a_file_under_3_mib_is_refused(graph_kit: GraphKit) -> None:
    token = graph_kit.token("alice", *RW)
    draft = create_draft(graph_kit, token, unique())
    path = f"/v1.0/me/messages/{draft['id']}/attachments/createUploadSession"
    for size, status in ((3 * MIB - 1, 400), (3 * MIB, 201)):
        item = {"AttachmentItem": {"attachmentType": "file", "name": "f.bin", "size": size}}
        resp = graph_kit.call("POST", path, token, json=item)
        assert resp.status_code == status, resp.text
        if status == 400:
            assert resp.json()["error"]["code"] == "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize"


def test_the_4_mib_request_limit_counts_bytes_not_characters(graph_kit: GraphKit) -> None:
    token = graph_kit.token("alice", *RW)
    headers = {"Content-Type": "application/json; charset=utf-8"}
    for chars, status in ((1_500_000, 202), (2_500_000, 413)):  # 'é' is 2 bytes in UTF-8; both under 4 Mi chars
        message = graph_kit.simple(unique(), body={"contentType": "text", "content": "é" * chars})
        body = json.dumps({"message": message}, ensure_ascii=False).encode("utf-8")
        assert len(body.decode("utf-8")) < 4 * MIB
        resp = graph_kit.call("POST", "/v1.0/me/sendMail", token, data=body, headers=headers)
        assert resp.status_code == status, resp.text[:200]
    assert resp.json()["error"]["code"] == "RequestEntityTooLarge"


def test_transport_delay_keeps_a_sent_draft_in_drafts_then_moves_it_with_a_new_id(
    graph_kit: GraphKit, emulator_admin, graph_limits, emulator
) -> None:
    graph_limits.transport_delay_s = 30.0
    token = graph_kit.token("alice", *RW)
    key = unique()
    draft = create_draft(graph_kit, token, key)
    assert graph_kit.call("POST", f"/v1.0/me/messages/{draft['id']}/send", token).status_code == 202
    # In transit: still in Drafts, under its old id, looking like an unsent draft (the conservative view).
    [in_transit] = lookup(graph_kit, token, "drafts", key)
    assert in_transit["id"] == draft["id"] and in_transit["isDraft"] is True
    assert lookup(graph_kit, token, "sentitems", key) == []
    assert emulator_admin.deliveries(key=key)["count"] == 0
    graph_limits.transit_shows_submitted = 1
    [shown] = lookup(graph_kit, token, "", key)
    assert shown["isDraft"] is False
    emulator.state.clock.advance(31)
    [sent] = lookup(graph_kit, token, "sentitems", key)
    assert sent["id"] != draft["id"] and lookup(graph_kit, token, "drafts", key) == []
    assert emulator_admin.deliveries(key=key)["count"] == 1


def test_a_second_send_of_an_item_in_transit_is_delivered_twice(
    graph_kit: GraphKit, emulator_admin, graph_limits, emulator
):
    graph_limits.transport_delay_s = 30.0
    token = graph_kit.token("alice", *RW)
    key = unique()
    draft = create_draft(graph_kit, token, key)
    for _ in range(2):
        assert graph_kit.call("POST", f"/v1.0/me/messages/{draft['id']}/send", token).status_code == 202
    emulator.state.clock.advance(31)
    assert emulator_admin.deliveries(key=key)["count"] == 2
    assert len(lookup(graph_kit, token, "sentitems", key)) == 2
    # sendMail goes through Drafts as well.
    mail_key = unique()
    assert graph_kit.send(token, graph_kit.simple(mail_key)).status_code == 202
    assert emulator_admin.drafts(graph_kit.addr("alice"), key=mail_key) != []
    emulator.state.clock.advance(31)
    assert emulator_admin.deliveries(key=mail_key)["count"] == 1
    assert emulator_admin.drafts(graph_kit.addr("alice"), key=mail_key) == []
