"""End-to-end tests of the emulated Graph sendMail over real HTTPS (strict CA session)."""

from __future__ import annotations

import base64
import hashlib

from tests import emulator_graph_support as support
from tests.emulator_graph_support import PROP_ID, GraphKit, rcpt, unique

graph_kit = support.graph_kit
graph_limits = support.graph_limits


def test_me_profile_needs_user_read(graph_kit: GraphKit) -> None:
    resp = graph_kit.call("GET", "/v1.0/me", graph_kit.token("alice", "User.Read"))
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == graph_kit.oid("alice") and body["mail"] == graph_kit.addr("alice")
    assert body["userPrincipalName"] == graph_kit.tenant.users["alice"]["upn"]
    denied = graph_kit.call("GET", "/v1.0/me", graph_kit.token("alice", "Mail.Send"))
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "Authorization_RequestDenied"


def test_send_mail_stores_every_field(graph_kit: GraphKit, emulator_admin) -> None:
    key = unique()
    pdf = b"%PDF-1.4 test" * 100
    message = {
        "subject": "Quarterly report",
        "body": {"contentType": "HTML", "content": "<p>Hello <b>Bob</b></p>"},
        "toRecipients": [rcpt("bob@partner.example", "Bob")],
        "ccRecipients": [rcpt("cc@partner.example")],
        "bccRecipients": [rcpt("bcc@partner.example")],
        "replyTo": [rcpt("replies@partner.example")],
        "importance": "high",
        "internetMessageHeaders": [{"name": "x-mailbridge-id", "value": key}],
        "singleValueExtendedProperties": [{"id": PROP_ID, "value": key}],
        "attachments": [
            {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": "r.pdf",
                "contentType": "application/pdf",
                "contentBytes": base64.b64encode(pdf).decode(),
            }
        ],
    }
    before = emulator_admin.counters("graph.")
    resp = graph_kit.send(graph_kit.token("alice"), message, headers={"client-request-id": "cr-123"})
    assert resp.status_code == 202 and resp.content == b""
    assert resp.headers["client-request-id"] == "cr-123" and resp.headers["request-id"]

    [item] = emulator_admin.sent_items(graph_kit.addr("alice"), key=key)
    assert item["subject"] == "Quarterly report"
    assert item["body"] == {"contentType": "html", "content": "<p>Hello <b>Bob</b></p>"}
    assert item["toRecipients"] == [rcpt("bob@partner.example", "Bob")]
    assert [r["emailAddress"]["address"] for r in item["ccRecipients"]] == ["cc@partner.example"]
    assert [r["emailAddress"]["address"] for r in item["bccRecipients"]] == ["bcc@partner.example"]
    assert [r["emailAddress"]["address"] for r in item["replyTo"]] == ["replies@partner.example"]
    assert item["importance"] == "high"
    assert item["internetMessageHeaders"] == [{"name": "x-mailbridge-id", "value": key}]
    assert item["singleValueExtendedProperties"] == [{"id": PROP_ID, "value": key}]
    assert item["from"]["emailAddress"]["address"] == graph_kit.addr("alice")
    assert item["sender"] == item["from"]
    assert item["sentDateTime"] and item["id"]
    [att] = item["attachments"]
    assert (att["name"], att["contentType"], att["size"]) == ("r.pdf", "application/pdf", len(pdf))
    assert att["sha256"] == hashlib.sha256(pdf).hexdigest()

    log = emulator_admin.deliveries(key=key)
    assert log["count"] == 1 and log["counts_by_key"] == {key: 1}
    assert log["value"][0]["recipients"] == 3 and log["value"][0]["savedToSentItems"] is True
    after = emulator_admin.counters("graph.")
    assert after["graph.messages_sent"] - before.get("graph.messages_sent", 0) >= 1
    assert after["graph.recipients"] - before.get("graph.recipients", 0) >= 3


def test_save_to_sent_items_false_is_delivered_only(graph_kit: GraphKit, emulator_admin) -> None:
    key = unique()
    msg = graph_kit.simple(internetMessageHeaders=[{"name": "X-Mailbridge-Id", "value": key}])
    assert graph_kit.send(graph_kit.token("alice"), msg, save=False).status_code == 202
    assert emulator_admin.sent_items(graph_kit.addr("alice"), key=key) == []
    delivered = emulator_admin.delivered(graph_kit.addr("alice"))
    assert delivered["counts_by_key"] == {key: 1}
    assert delivered["value"][-1]["savedToSentItems"] is False


def test_send_as_on_behalf_and_denied(graph_kit: GraphKit, emulator_admin) -> None:
    team = graph_kit.addr("team")
    shared = ("Mail.Send", "Mail.Send.Shared")
    # alice has Send As: from = sender = team; copies in alice's and team's Sent Items
    key = unique()
    resp = graph_kit.send(graph_kit.token("alice", *shared), graph_kit.simple(key, **{"from": rcpt(team)}))
    assert resp.status_code == 202
    [copy] = [m for m in emulator_admin.sent_items(team) if m["subject"] == key]
    assert copy["from"]["emailAddress"]["address"] == team
    assert copy["sender"]["emailAddress"]["address"] == team
    assert any(m["subject"] == key for m in emulator_admin.sent_items(graph_kit.addr("alice")))
    # bob has Send on Behalf: from = team, sender = bob
    key = unique()
    assert (
        graph_kit.send(graph_kit.token("bob", *shared), graph_kit.simple(key, **{"from": rcpt(team)})).status_code
        == 202
    )
    [copy] = [m for m in emulator_admin.sent_items(team) if m["subject"] == key]
    assert copy["from"]["emailAddress"]["address"] == team
    assert copy["sender"]["emailAddress"]["address"] == graph_kit.addr("bob")
    # carol has no rights on team
    resp = graph_kit.send(graph_kit.token("carol", *shared), graph_kit.simple(**{"from": rcpt(team)}))
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "ErrorSendAsDenied"
    # from another mailbox without Mail.Send.Shared: the permission is missing
    resp = graph_kit.send(graph_kit.token("alice"), graph_kit.simple(**{"from": rcpt(team)}))
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "ErrorAccessDenied"
    # an address outside the organisation
    resp = graph_kit.send(
        graph_kit.token("alice", *shared), graph_kit.simple(**{"from": rcpt("ceo@elsewhere.example")})
    )
    assert resp.json()["error"]["code"] == "ErrorSendAsDenied"


def test_users_send_mail_rights(graph_kit: GraphKit, emulator_admin) -> None:
    team = graph_kit.addr("team")
    shared = ("Mail.Send", "Mail.Send.Shared")
    key = unique()
    resp = graph_kit.send(graph_kit.token("alice", *shared), graph_kit.simple(key), user=team)
    assert resp.status_code == 202
    [copy] = [m for m in emulator_admin.sent_items(team) if m["subject"] == key]
    assert copy["from"]["emailAddress"]["address"] == team
    assert not any(m["subject"] == key for m in emulator_admin.sent_items(graph_kit.addr("alice")))
    # by object id works as well; bob sends on behalf
    resp = graph_kit.send(graph_kit.token("bob", *shared), graph_kit.simple(), user=graph_kit.oid("team"))
    assert resp.status_code == 202
    # carol has no Full Access
    resp = graph_kit.send(graph_kit.token("carol", *shared), graph_kit.simple(), user=team)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "ErrorAccessDenied"
    # Mail.Send alone does not reach other mailboxes
    resp = graph_kit.send(graph_kit.token("alice"), graph_kit.simple(), user=team)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "ErrorAccessDenied"
    # Full Access without Send As / on Behalf
    emulator_admin.update_user(team, full_access=[graph_kit.oid("carol")])
    resp = graph_kit.send(graph_kit.token("carol", *shared), graph_kit.simple(), user=team)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "ErrorSendAsDenied"
    # unknown user
    resp = graph_kit.send(graph_kit.token("alice", *shared), graph_kit.simple(), user="nobody@x.example")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "ErrorInvalidUser"


def test_app_only_token(graph_kit: GraphKit) -> None:
    token = graph_kit.app_token("Mail.Send")
    assert graph_kit.send(token, graph_kit.simple(), user=graph_kit.addr("bob")).status_code == 202
    resp = graph_kit.send(token, graph_kit.simple())
    assert resp.status_code == 400 and "delegated" in resp.json()["error"]["message"]


def test_missing_scope_is_403_with_graph_error_shape(graph_kit: GraphKit) -> None:
    resp = graph_kit.send(
        graph_kit.token("alice", "Mail.Read"), graph_kit.simple(), headers={"client-request-id": "abc"}
    )
    assert resp.status_code == 403
    error = resp.json()["error"]
    assert error["code"] == "ErrorAccessDenied"
    assert error["message"] == "Access is denied. Check credentials and try again."
    assert error["innerError"]["client-request-id"] == "abc"
    assert error["innerError"]["request-id"] == resp.headers["request-id"]
    assert error["innerError"]["date"]


def test_bad_missing_and_expired_tokens_are_401(graph_kit: GraphKit, emulator_admin) -> None:
    for token in (None, "garbage", graph_kit.token("alice", audience="https://vault.azure.net")):
        resp = graph_kit.send(token, graph_kit.simple())  # type: ignore[arg-type]
        assert resp.status_code == 401, token
        assert resp.json()["error"]["code"] == "InvalidAuthenticationToken"
        assert resp.headers["request-id"]
    short = graph_kit.token("alice", lifetime_s=60)
    assert graph_kit.send(short, graph_kit.simple()).status_code == 202
    emulator_admin.advance_clock(61)
    resp = graph_kit.send(short, graph_kit.simple())
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_recipient_validation(graph_kit: GraphKit) -> None:
    token = graph_kit.token("alice")
    many = [rcpt(f"user{i}@partner.example") for i in range(501)]
    resp = graph_kit.send(token, graph_kit.simple(toRecipients=many))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "ErrorExceededMaxRecipientLimit"
    assert graph_kit.send(token, graph_kit.simple(toRecipients=many[:500])).status_code == 202
    for bad in ([rcpt("no-at-sign")], [], [rcpt("a@b.example\r\nBcc: x@y.example")]):
        resp = graph_kit.send(token, graph_kit.simple(toRecipients=bad))
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "ErrorInvalidRecipients"


def test_request_body_limit_is_exactly_4_mib(graph_kit: GraphKit, emulator_admin) -> None:
    token = graph_kit.token("alice")
    limit = 4 * 1024 * 1024

    def body_of_size(size: int) -> bytes:
        head = (
            b'{"message":{"subject":"big","toRecipients":[{"emailAddress":{"address":"a@b.example"}}],'
            b'"body":{"contentType":"text","content":"'
        )
        tail = b'"}}}'
        return head + b"x" * (size - len(head) - len(tail)) + tail

    headers = {"Content-Type": "application/json"}
    at_limit = graph_kit.call("POST", "/v1.0/me/sendMail", token, data=body_of_size(limit), headers=headers)
    assert at_limit.status_code == 202
    over = graph_kit.call("POST", "/v1.0/me/sendMail", token, data=body_of_size(limit + 1), headers=headers)
    assert over.status_code == 413 and over.json()["error"]["code"] == "RequestEntityTooLarge"


def test_internet_message_headers_must_start_with_x(graph_kit: GraphKit, emulator_admin) -> None:
    token = graph_kit.token("alice")
    resp = graph_kit.send(token, graph_kit.simple(internetMessageHeaders=[{"name": "Priority", "value": "1"}]))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "InvalidInternetMessageHeader"
    key = unique()
    ok = graph_kit.send(token, graph_kit.simple(key, internetMessageHeaders=[{"name": "X-Custom", "value": "1"}]))
    assert ok.status_code == 202


def test_paths_are_case_insensitive_and_typos_rejected(graph_kit: GraphKit) -> None:
    token = graph_kit.token("alice")
    resp = graph_kit.call("POST", "/V1.0/ME/SENDMAIL", token, json={"message": graph_kit.simple()})
    assert resp.status_code == 202
    resp = graph_kit.send(token, {**graph_kit.simple(), "toRecipient": [rcpt("a@b.example")]})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "RequestBodyRead"
    resp = graph_kit.call("POST", "/v1.0/me/sendMail", token, json={"subject": "no message wrapper"})
    assert resp.status_code == 400


def test_token_from_real_msal_flow_sends(graph_kit: GraphKit, emulator_admin) -> None:
    result = graph_kit.tenant.sign_in("bob", scopes=("Mail.Send",))
    assert "access_token" in result, result
    key = unique()
    assert graph_kit.send(result["access_token"], graph_kit.simple(key)).status_code == 202
    assert [m["subject"] for m in emulator_admin.sent_items(graph_kit.addr("bob"))] == [key]


def test_mailbox_viewer_escapes_and_sandboxes(graph_kit: GraphKit) -> None:
    key = unique()
    evil = "<script>alert(1)</script><img src=https://tracker.example/p.gif>"
    msg = graph_kit.simple(f"{key}<script>x</script>", body={"contentType": "html", "content": evil})
    assert graph_kit.send(graph_kit.token("alice"), msg).status_code == 202
    index = graph_kit.http.get(f"{graph_kit.base}/_emulator/ui/mailboxes", timeout=30)
    assert index.status_code == 200 and graph_kit.addr("alice") in index.text
    box = graph_kit.http.get(f"{graph_kit.base}/_emulator/ui/mailboxes/{graph_kit.addr('alice')}", timeout=30)
    assert key in box.text and "<script>x</script>" not in box.text
    link = box.text.split("/messages/", 1)[1].split("'", 1)[0]
    page = graph_kit.http.get(
        f"{graph_kit.base}/_emulator/ui/mailboxes/{graph_kit.addr('alice')}/messages/{link}", timeout=30
    )
    assert page.status_code == 200
    assert "<iframe sandbox=''" in page.text and "<script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
