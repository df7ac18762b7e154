"""Issue 27 on the emulated Graph: MIME sendMail and drafts, the headers a recipient receives (threading,
one-click unsubscribe, Message-ID), inline upload sessions that resume, and Outlook's upload budget.

Every assertion on headers reads what was *delivered* (`EmulatorAdmin.received`), not what was sent."""

from __future__ import annotations

import base64
import os
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

from tests import emulator_graph_support as support
from tests.emulator_graph_support import GraphKit, rcpt, unique

graph_kit = support.graph_kit
graph_limits = support.graph_limits

RW = ("Mail.Send", "Mail.ReadWrite")
MIB = 1024 * 1024
PARENT = "<parent-1@partner.example>"
THREAD = "<root-0@partner.example> <parent-1@partner.example>"
UNSUBSCRIBE = "<https://unsub.example/u/42>, <mailto:unsub@unsub.example?subject=42>"
ONE_CLICK = "List-Unsubscribe=One-Click"


def mime(
    kit: GraphKit, key: str, to: str, *, message_id: str | None = None, wrap: bool = True, text: str = "plain reply"
) -> bytes:
    """A reply with threading and one-click unsubscribe headers, base64-encoded as Graph wants it."""
    msg = EmailMessage()
    msg["From"] = kit.addr("alice")
    msg["To"] = to
    msg["Subject"] = f"Re: {key}"
    msg["In-Reply-To"] = PARENT
    msg["References"] = THREAD
    msg["List-Unsubscribe"] = UNSUBSCRIBE
    msg["List-Unsubscribe-Post"] = ONE_CLICK
    msg["X-Mailbridge-Id"] = key
    if message_id:
        msg["Message-ID"] = message_id
    msg.set_content(text)
    msg.add_alternative("<p>html reply <img src='cid:logo@mb'></p>", subtype="html")
    msg.get_payload()[1].add_related(
        b"\x89PNG-bytes", "image", "png", cid="<logo@mb>", filename="logo.png", disposition="inline"
    )
    encoded = base64.encodebytes(msg.as_bytes()) if wrap else base64.b64encode(msg.as_bytes())
    return encoded


def post_mime(kit: GraphKit, token: str, path: str, body: bytes) -> Any:
    return kit.call("POST", path, token, data=body, headers={"Content-Type": "text/plain"})


def received(admin: Any, address: str, key: str) -> list[dict[str, Any]]:
    return [m for m in admin.received(address) if m["headers"].get("x-mailbridge-id") == key or key in m["subject"]]


def sent_item_message_id(kit: GraphKit, token: str, key: str) -> str:
    resp = kit.call(
        "GET", "/v1.0/me/mailFolders/sentitems/messages", token, params={"$select": "subject,internetMessageId"}
    )
    assert resp.status_code == 200, resp.text
    [item] = [m for m in resp.json()["value"] if key in m["subject"]]
    got = kit.call("GET", f"/v1.0/me/messages/{quote(item['id'])}", token, params={"$select": "internetMessageId"})
    assert got.status_code == 200 and set(got.json()) >= {"internetMessageId"}
    return got.json()["internetMessageId"]


# --- 1. MIME sendMail and MIME drafts ------------------------------------------------------------------------


def test_mime_send_mail_delivers_threading_and_unsubscribe_headers(graph_kit: GraphKit, emulator_admin) -> None:
    token = graph_kit.token("alice", *RW)
    to = f"{unique('r')}@partner.example"
    for path in ("/v1.0/me/sendMail", f"/v1.0/users/{graph_kit.addr('alice')}/sendMail"):
        key = unique()
        resp = post_mime(graph_kit, token, path, mime(graph_kit, key, to, message_id=f"<{key}@client.example>"))
        assert resp.status_code == 202, resp.text
        [got] = received(emulator_admin, to, key)
        headers = got["headers"]
        assert headers["in-reply-to"] == PARENT and headers["references"] == THREAD
        assert headers["list-unsubscribe"] == UNSUBSCRIBE and headers["list-unsubscribe-post"] == ONE_CLICK
        # The client's Message-ID is not kept by default (MS-OXCMAIL: servers MAY overwrite it) ...
        assert headers["message-id"] != f"<{key}@client.example>" and headers["message-id"].startswith("<")
        # ... and Sent Items tells the sender which id was delivered.
        assert sent_item_message_id(graph_kit, token, key) == headers["message-id"] == got["internetMessageId"]
        [att] = got["attachments"]
        assert att["isInline"] is True and att["contentId"] == "logo@mb" and att["name"] == "logo.png"


def test_mime_message_id_kept_when_the_knob_says_so(graph_kit: GraphKit, graph_limits, emulator_admin) -> None:
    graph_limits.update({"keep_client_message_id": 1})
    token = graph_kit.token("alice")
    to, key = f"{unique('r')}@partner.example", unique()
    resp = post_mime(graph_kit, token, "/v1.0/me/sendMail", mime(graph_kit, key, to, message_id=f"<{key}@c.example>"))
    assert resp.status_code == 202, resp.text
    [got] = received(emulator_admin, to, key)
    assert got["headers"]["message-id"] == f"<{key}@c.example>"


def test_malformed_mime_is_refused_as_graph_does(graph_kit: GraphKit, emulator_admin) -> None:
    token = graph_kit.token("alice", *RW)
    to = f"{unique('r')}@partner.example"
    not_a_message = base64.b64encode(b"hello, this is no MIME message at all")
    unknown_charset = base64.b64encode(
        f"From: {graph_kit.addr('alice')}\r\nTo: {to}\r\n"
        "Content-Type: text/plain; charset=x-nope\r\n\r\nhi\r\n".encode()
    )  # unreadable MIME is malformed MIME: a 400, never a 500
    for body in (b"", b"!!! not base64 !!!", b"QUJD=", not_a_message, unknown_charset):
        for path in ("/v1.0/me/sendMail", "/v1.0/me/messages"):
            resp = post_mime(graph_kit, token, path, body)
            assert resp.status_code == 400, (path, body, resp.text)
            error = resp.json()["error"]
            assert error["code"] == "ErrorMimeContentInvalidBase64String"
            assert error["message"] == "Invalid base64 string for MIME content."
    assert emulator_admin.received(to) == []
    # Microsoft's own example wraps the base64 at 76 characters: line breaks are fine, so is one long line.
    for wrap in (True, False):
        resp = post_mime(graph_kit, token, "/v1.0/me/sendMail", mime(graph_kit, unique(), to, wrap=wrap))
        assert resp.status_code == 202, resp.text


def test_mime_draft_then_send(graph_kit: GraphKit, emulator_admin) -> None:
    token = graph_kit.token("alice", *RW)
    to, key = f"{unique('r')}@partner.example", unique()
    resp = post_mime(graph_kit, token, "/v1.0/me/messages", mime(graph_kit, key, to, message_id=f"<{key}@c.example>"))
    assert resp.status_code == 201, resp.text
    draft = resp.json()
    assert draft["isDraft"] is True and draft["subject"] == f"Re: {key}"
    assert draft["toRecipients"] == [rcpt(to, to)] and draft["internetMessageId"] == f"<{key}@c.example>"
    assert draft["body"]["contentType"] == "html"
    assert graph_kit.call("POST", f"/v1.0/me/messages/{draft['id']}/send", token).status_code == 202
    [got] = received(emulator_admin, to, key)
    assert got["headers"]["in-reply-to"] == PARENT and got["headers"]["list-unsubscribe-post"] == ONE_CLICK
    assert sent_item_message_id(graph_kit, token, key) == got["headers"]["message-id"]


def test_mime_bcc_is_delivered_but_shown_to_no_recipient(graph_kit: GraphKit, emulator_admin) -> None:
    """Create-message names "To", "CC", "BCC", "Subject" as the MIME headers Graph reads; MS-OXCMAIL 2.1.3.1.1.2:
    MIME writers MUST NOT copy Bcc recipients to the Bcc header of a message submitted to SMTP."""
    token = graph_kit.token("alice")
    to, blind, key = f"{unique('r')}@partner.example", f"{unique('b')}@partner.example", unique()
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Bcc"] = graph_kit.addr("alice"), f"Zoë Ünal <{to}>", blind
    msg["Subject"] = f"Grüße {key}"  # RFC 2047-encoded by the email package; Graph reads it decoded
    msg["X-Mailbridge-Id"] = key
    msg.set_content("hi")
    resp = post_mime(graph_kit, token, "/v1.0/me/sendMail", base64.b64encode(msg.as_bytes()))
    assert resp.status_code == 202, resp.text
    [seen] = received(emulator_admin, to, key)
    [hidden] = received(emulator_admin, blind, key)
    for got in (seen, hidden):
        assert got["subject"] == f"Grüße {key}" and got["to"] == [to]
        assert "bcc" not in got and "bcc" not in got["headers"]
        assert blind not in str(got["internetHeaders"])
    sent = emulator_admin.sent_items(graph_kit.addr("alice"))
    [copy] = [m for m in sent if key in m["subject"]]  # the sender's copy keeps its Bcc
    assert [r["emailAddress"]["address"] for r in copy["bccRecipients"]] == [blind]
    assert copy["toRecipients"][0]["emailAddress"]["name"] == "Zoë Ünal"


def test_mime_from_another_mailbox_needs_send_as(graph_kit: GraphKit, emulator_admin) -> None:
    """The MIME `From` is checked like a JSON `from` ("send mail from another user"; msgraph-sdk-php#1499 got 403
    ErrorSendAsDenied for a MIME sendMail)."""
    team, to = graph_kit.addr("team"), f"{unique('r')}@partner.example"
    shared = ("Mail.Send", "Mail.Send.Shared")

    def from_team(key: str) -> bytes:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"], msg["X-Mailbridge-Id"] = f"Team <{team}>", to, key, key
        msg.set_content("hi")
        return base64.b64encode(msg.as_bytes())

    resp = post_mime(graph_kit, graph_kit.token("carol", *shared), "/v1.0/me/sendMail", from_team(unique()))
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "ErrorSendAsDenied"
    resp = post_mime(graph_kit, graph_kit.token("alice"), "/v1.0/me/sendMail", from_team(unique()))
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "ErrorAccessDenied"  # no Mail.Send.Shared
    key = unique()
    resp = post_mime(graph_kit, graph_kit.token("alice", *shared), "/v1.0/me/sendMail", from_team(key))
    assert resp.status_code == 202, resp.text
    [got] = received(emulator_admin, to, key)
    assert got["from"] == got["sender"] == team


def test_mime_is_refused_on_a_folder_path(graph_kit: GraphKit, emulator_admin) -> None:
    """MIME creates a draft on `/me/messages` only (microsoft-graph-docs#16368: the same body on
    `/me/mailFolders/{id}/messages` fails); the JSON body still works there."""
    token = graph_kit.token("alice", *RW)
    to, key = f"{unique('r')}@partner.example", unique()
    for folder in ("drafts", "Drafts"):
        resp = post_mime(graph_kit, token, f"/v1.0/me/mailFolders/{folder}/messages", mime(graph_kit, key, to))
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "UnableToDeserializePostBody"
    assert emulator_admin.drafts(graph_kit.addr("alice"), key) == []
    resp = graph_kit.call("POST", "/v1.0/me/mailFolders/drafts/messages", token, json=graph_kit.simple(key))
    assert resp.status_code == 201, resp.text


def test_a_mime_body_over_4_mib_is_413(graph_kit: GraphKit) -> None:
    token = graph_kit.token("alice", *RW)
    body = mime(graph_kit, unique(), "r@partner.example", text="p" * (3 * MIB + 200_000))
    assert len(body) > 4 * MIB
    resp = post_mime(graph_kit, token, "/v1.0/me/sendMail", body)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "RequestEntityTooLarge"


# --- 2. JSON messages: x- headers only, extended properties, internetMessageId -------------------------------


def json_reply(kit: GraphKit, key: str, to: str, **extra: Any) -> dict[str, Any]:
    return kit.simple(
        key,
        to=to,
        singleValueExtendedProperties=[
            {"id": "String 0x1042", "value": PARENT},
            {"id": "String 0x1039", "value": THREAD},
            {"id": "String 0x1045", "value": UNSUBSCRIBE},
        ],
        **extra,
    )


def test_threading_headers_are_not_x_headers(graph_kit: GraphKit) -> None:
    token = graph_kit.token("alice")
    for name in ("In-Reply-To", "References", "List-Unsubscribe", "List-Unsubscribe-Post", "Message-ID"):
        headers = [{"name": name, "value": PARENT}]
        resp = graph_kit.send(token, graph_kit.simple(unique(), internetMessageHeaders=headers))
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "InvalidInternetMessageHeader"


def test_threading_extended_properties_are_rendered_only_when_the_knob_says_so(
    graph_kit: GraphKit, graph_limits, emulator_admin
) -> None:
    token = graph_kit.token("alice")
    to = f"{unique('r')}@partner.example"
    strict = unique()
    assert graph_kit.send(token, json_reply(graph_kit, strict, to)).status_code == 202
    [got] = received(emulator_admin, to, strict)
    assert got["headers"]["x-mailbridge-id"] == strict  # x- headers are delivered
    assert not {"in-reply-to", "references", "list-unsubscribe"} & set(got["headers"])  # #2210: ignored
    graph_limits.update({"render_threading_properties": 1})
    rendered = unique()
    assert graph_kit.send(token, json_reply(graph_kit, rendered, to)).status_code == 202
    [got] = received(emulator_admin, to, rendered)
    assert got["headers"]["in-reply-to"] == PARENT and got["headers"]["references"] == THREAD
    assert got["headers"]["list-unsubscribe"] == UNSUBSCRIBE
    assert "list-unsubscribe-post" not in got["headers"]  # no MAPI property carries it: MIME only


def test_internet_message_id_on_a_draft(graph_kit: GraphKit, graph_limits, emulator_admin) -> None:
    token = graph_kit.token("alice", *RW)
    to = f"{unique('r')}@partner.example"
    for keep in (0, 1):
        graph_limits.update({"keep_client_message_id": keep})
        key = unique()
        chosen = f"<{key}@client.example>"
        resp = graph_kit.call(
            "POST", "/v1.0/me/messages", token, json=json_reply(graph_kit, key, to, internetMessageId=chosen)
        )
        assert resp.status_code == 201 and resp.json()["internetMessageId"] == chosen  # writable while a draft
        draft_id = resp.json()["id"]
        got = graph_kit.call(
            "GET", f"/v1.0/me/messages/{quote(draft_id)}", token, params={"$select": "internetMessageId"}
        )
        assert got.json()["internetMessageId"] == chosen
        assert graph_kit.call("POST", f"/v1.0/me/messages/{draft_id}/send", token).status_code == 202
        [delivered] = received(emulator_admin, to, key)
        assert (delivered["headers"]["message-id"] == chosen) is bool(keep)
        assert sent_item_message_id(graph_kit, token, key) == delivered["headers"]["message-id"]
    # A server-assigned draft id survives the send (the id a client may read back and rely on).
    key = unique()
    draft = graph_kit.call("POST", "/v1.0/me/messages", token, json=graph_kit.simple(key, to=to)).json()
    assert graph_kit.call("POST", f"/v1.0/me/messages/{draft['id']}/send", token).status_code == 202
    [delivered] = received(emulator_admin, to, key)
    assert delivered["headers"]["message-id"] == draft["internetMessageId"]


# --- 3. Upload sessions: inline attachments, resuming after 503/429, ranges ----------------------------------


def test_inline_upload_session_resumes_after_faults(graph_kit: GraphKit, emulator_admin) -> None:
    token = graph_kit.token("alice", *RW)
    to, key = f"{unique('r')}@partner.example", unique()
    draft = graph_kit.call("POST", "/v1.0/me/messages", token, json=graph_kit.simple(key, to=to)).json()
    data = os.urandom(3 * MIB + 4096)
    item = {"attachmentType": "file", "name": "logo.png", "size": len(data), "contentType": "image/png"}
    item |= {"isInline": True, "contentId": "logo@mb"}
    path = f"/v1.0/me/messages/{draft['id']}/attachments/createUploadSession"
    created = graph_kit.call("POST", path, token, json={"AttachmentItem": item})
    assert created.status_code == 201 and created.json()["nextExpectedRanges"] == ["0-"]
    url = created.json()["uploadUrl"]

    def put(start: int, end: int) -> Any:
        headers = {"Content-Range": f"bytes {start}-{end}/{len(data)}", "Content-Type": "application/octet-stream"}
        return graph_kit.http.put(url, data=data[start : end + 1], headers=headers, timeout=60)

    def expected() -> list[str]:
        status = graph_kit.http.get(url, timeout=30)
        assert status.status_code == 200, status.text
        return status.json()["nextExpectedRanges"]

    half = 2 * MIB
    first = put(0, half - 1)
    assert first.status_code == 200 and first.json()["nextExpectedRanges"] == [str(half)]
    for kind in ("503", "429"):  # refused before it is applied: the session does not move
        emulator_admin.add_fault("graph.uploadChunk", kind, count=1, retry_after=2)
        refused = put(half, len(data) - 1)
        assert refused.status_code == int(kind)
        assert expected() == [str(half)]
    gap = put(half + 10, len(data) - 1)
    overlap = put(half - 10, len(data) - 1)
    for resp in (gap, overlap):
        assert resp.status_code == 416 and resp.json()["nextExpectedRanges"] == [f"{half}-"]
    last = put(half, len(data) - 1)
    assert last.status_code == 201 and "Attachments('" in last.headers["Location"]
    [att] = graph_kit.call("GET", f"/v1.0/me/messages/{draft['id']}/attachments", token).json()["value"]
    assert att["isInline"] is True and att["contentId"] == "logo@mb" and att["size"] == len(data)
    assert graph_kit.http.get(url, timeout=30).status_code == 404  # a finished session is gone
    assert graph_kit.call("POST", f"/v1.0/me/messages/{draft['id']}/send", token).status_code == 202
    [got] = received(emulator_admin, to, key)
    assert got["attachments"][0]["isInline"] is True and got["attachments"][0]["contentId"] == "logo@mb"


def test_upload_session_cancel_and_expiry(graph_kit: GraphKit, graph_limits, emulator) -> None:
    token = graph_kit.token("alice", *RW, lifetime_s=7200)
    draft = graph_kit.call("POST", "/v1.0/me/messages", token, json=graph_kit.simple(unique())).json()
    path = f"/v1.0/me/messages/{draft['id']}/attachments/createUploadSession"
    item = {"AttachmentItem": {"attachmentType": "file", "name": "f.bin", "size": 3 * MIB}}
    url = graph_kit.call("POST", path, token, json=item).json()["uploadUrl"]
    assert graph_kit.http.delete(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 401
    assert graph_kit.http.delete(url, timeout=30).status_code == 204
    assert graph_kit.http.get(url, timeout=30).status_code == 404
    graph_limits.update({"upload_session_lifetime_s": 60})
    url = graph_kit.call("POST", path, token, json=item).json()["uploadUrl"]
    emulator.state.clock.advance(61)
    body = b"x" * MIB
    resp = graph_kit.http.put(url, data=body, headers={"Content-Range": f"bytes 0-{MIB - 1}/{3 * MIB}"}, timeout=30)
    assert resp.status_code == 401 and graph_kit.http.get(url, timeout=30).status_code == 401


# --- 4. Outlook's upload budget: 150 MB of POST/PUT/PATCH per 5 minutes per app + mailbox ---------------------


def test_upload_budget_counts_post_bodies_and_upload_puts(graph_kit: GraphKit, graph_limits, emulator) -> None:
    assert graph_limits.upload_bytes_per_window == 150_000_000 and graph_limits.upload_window_s == 300
    graph_limits.update({"upload_bytes_per_window": 3_000_000, "upload_window_s": 10})
    token = graph_kit.token("alice", *RW)
    attachment = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": "a.bin",
        "contentBytes": base64.b64encode(os.urandom(1_000_000)).decode(),
    }
    big = graph_kit.simple(unique(), attachments=[attachment])  # a ~1.33 MB request body
    assert graph_kit.send(token, big).status_code == 202
    assert graph_kit.send(token, big).status_code == 202
    refused = graph_kit.send(token, big)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "ApplicationThrottled" and 1 <= int(refused.headers["Retry-After"]) <= 10
    # Per app + mailbox: bob's budget is his own.
    assert graph_kit.send(graph_kit.token("bob"), big).status_code == 202
    # Upload-session PUTs draw on the same budget.
    emulator.state.clock.advance(11)
    draft = graph_kit.call("POST", "/v1.0/me/messages", token, json=graph_kit.simple(unique())).json()
    item = {"AttachmentItem": {"attachmentType": "file", "name": "f.bin", "size": 4 * MIB}}
    path = f"/v1.0/me/messages/{draft['id']}/attachments/createUploadSession"
    url = graph_kit.call("POST", path, token, json=item).json()["uploadUrl"]
    chunk = os.urandom(2 * MIB)
    ok = graph_kit.http.put(url, data=chunk, headers={"Content-Range": f"bytes 0-{2 * MIB - 1}/{4 * MIB}"}, timeout=60)
    assert ok.status_code == 200, ok.text
    over = graph_kit.send(token, big)
    assert over.status_code == 429
    emulator.state.clock.advance(11)
    assert graph_kit.send(token, big).status_code == 202
