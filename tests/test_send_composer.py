"""The composer (issue 27) end to end: replies that thread and one-click unsubscribe on the sendMail and the draft
path (send-as too), the delivered Message-ID in the record and the event with Exchange keeping or replacing a
client's, a 3.5 MB cid: logo through an upload session arriving inline, an upload that resumes after a 503.

Every header assertion reads what the recipient received (EmulatorAdmin.received), not what Mailbridge sent."""

from __future__ import annotations

import base64
import hashlib
import os
import time
import uuid
from typing import Any

import pytest

from shared.base import errors
from shared.send import composer
from shared.send.graph import GraphClient
from shared.send.mail import Attachment
from shared.send.uploads import upload
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)

PARENT = "<parent-1@partner.example>"
ROOT = "<root-0@partner.example>"
UNSUBSCRIBE = {"urls": ["https://unsub.example/u/42?l=a%2Cb", "mailto:unsub@unsub.example?subject=42"]}
MIB = 1024 * 1024
RW = {"ENABLE_MAIL_READWRITE": "true"}


def _to() -> str:
    return f"r-{uuid.uuid4().hex[:10]}@partner.example"


def _reply(kit: Any, cid: str, to: str, **fields: Any) -> dict[str, Any]:
    return kit.message(
        cid,
        to=[to],
        subject="Re: your question",
        in_reply_to=PARENT,
        references=[ROOT, PARENT],
        list_unsubscribe={**UNSUBSCRIBE, "one_click": True},
        **fields,
    )


def _send(kit: Any, msg: dict[str, Any]) -> Any:
    outcome = kit.services.sender.process(msg, f"q-{msg['id']}")
    assert outcome.status in ("sent", "failed", "rejected", "unknown"), outcome
    rec = kit.record(msg["connection_id"], msg["id"])
    assert rec is not None
    return rec


def _delivered(kit: Any, to: str, key: str) -> dict[str, Any]:
    [got] = [m for m in kit.mb.admin.received(to) if m["headers"].get("x-mailbridge-id") == key]
    return got


def _assert_threaded(got: dict[str, Any]) -> None:
    headers = got["headers"]
    assert headers["in-reply-to"] == PARENT
    assert headers["references"] == f"{ROOT} {PARENT}"
    unsubscribe = "<https://unsub.example/u/42?l=a%2Cb>, <mailto:unsub@unsub.example?subject=42>"
    assert headers["list-unsubscribe"] == unsubscribe
    assert headers["list-unsubscribe-post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize("send_as", [None, "me", "users"])
def test_a_reply_threads_on_the_sendmail_path(send_kit, send_as):
    settings = {"ENABLE_SHARED_MAILBOXES": "true", "SEND_AS_ENDPOINT": send_as} if send_as else {}
    kit = send_kit(**settings)
    cid = kit.connect("alice")
    extra: dict[str, Any] = {}
    if send_as:
        alice = kit.mb.kit.users["alice"]["oid"]
        kit.mb.kit.add_user("team", is_shared=True, send_as=[alice], full_access=[alice])
        extra["from"] = {"address": kit.address("team"), "name": "Team"}
    to = _to()
    msg = _reply(kit, cid, to, headers={"x-order": "4711"}, importance="high", **extra)
    rec = _send(kit, msg)
    assert rec.status == "sent" and rec.mode == "sendMail", rec
    got = _delivered(kit, to, msg["id"])
    _assert_threaded(got)
    assert got["headers"]["x-order"] == "4711" and got["subject"] == "Re: your question"
    if send_as:
        assert got["from"].lower() == kit.address("team").lower()
    # A Mail.Send-only connection cannot read its mailbox: the delivered Message-ID cannot be known (docs/sending.md).
    assert rec.internet_message_id is None


@pytest.mark.parametrize("keep", [0, 1])
@pytest.mark.parametrize("asked", [False, True])
def test_a_reply_threads_on_the_draft_path_and_reports_the_delivered_message_id(send_kit, keep, asked):
    kit = send_kit(**RW)
    kit.mb.admin.graph_limits(keep_client_message_id=keep)
    cid = kit.connect("alice")
    to = _to()
    chosen = f"<{uuid.uuid4().hex}@mail.contoso.example>"
    msg = _reply(kit, cid, to, **({"internet_message_id": chosen} if asked else {}))
    rec = _send(kit, msg)
    assert rec.status == "sent" and rec.mode == "draft", rec
    got = _delivered(kit, to, msg["id"])
    _assert_threaded(got)
    delivered = got["headers"]["message-id"]
    assert rec.internet_message_id == delivered == got["internetMessageId"]
    if asked:
        assert (delivered == chosen) is bool(keep)  # Exchange may replace a client's Message-ID (MS-OXCMAIL)
    (event,) = kit.events_for(msg["id"])
    assert event["data"]["internet_message_id"] == delivered
    view = kit.mb.json(
        kit.mb.http("get_message", params={"connection_id": cid}, route_params={"message_id": msg["id"]})
    )
    assert view["internet_message_id"] == delivered


def test_a_reply_threads_on_the_draft_path_as_a_shared_mailbox(send_kit):
    kit = send_kit(ENABLE_SHARED_MAILBOXES="true", **RW)
    alice = kit.mb.kit.users["alice"]["oid"]
    kit.mb.kit.add_user("team", is_shared=True, send_as=[alice], full_access=[alice])
    cid = kit.connect("alice")
    to = _to()
    msg = _reply(kit, cid, to, **{"from": kit.address("team")})
    rec = _send(kit, msg)
    assert rec.status == "sent" and rec.mode == "draft", rec
    got = _delivered(kit, to, msg["id"])
    _assert_threaded(got)
    assert got["from"].lower() == kit.address("team").lower()
    assert rec.internet_message_id == got["headers"]["message-id"]


@pytest.mark.parametrize("settings", [{}, RW])
def test_a_composed_messages_bcc_is_delivered_and_hidden(send_kit, settings):
    """The composer writes Bcc into the MIME (Graph reads "To", "CC", "BCC", "Subject" from it: user-post-messages);
    Exchange delivers to it and keeps it out of what recipients get (MS-OXCMAIL 2.1.3.1.1.2). Non-ASCII subject and
    names travel RFC 2047-encoded and arrive as written."""
    kit = send_kit(**settings)
    cid = kit.connect("alice")
    to, blind = _to(), _to()
    msg = {**_reply(kit, cid, to, bcc=[blind]), "subject": "Re: Grüße", "to": [{"address": to, "name": "Zoë Ünal"}]}
    rec = _send(kit, msg)
    assert rec.status == "sent" and rec.mode == ("draft" if settings else "sendMail"), rec
    for address in (to, blind):
        got = _delivered(kit, address, msg["id"])
        _assert_threaded(got)
        assert got["subject"] == "Re: Grüße" and got["to"] == [to] and blind not in str(got["internetHeaders"])
    [copy] = [m for m in kit.mb.admin.sent_items(kit.address("alice")) if m["subject"] == "Re: Grüße"]
    assert [r["emailAddress"]["address"] for r in copy["bccRecipients"]] == [blind]
    assert copy["toRecipients"][0]["emailAddress"]["name"] == "Zoë Ünal"


def test_a_two_step_sequence_replies_to_the_reported_message_id(send_kit):
    kit = send_kit(**RW)
    cid = kit.connect("alice")
    to = _to()
    first = kit.message(cid, to=[to], subject="Step 1")
    one = _send(kit, first)
    assert one.status == "sent" and one.internet_message_id == _delivered(kit, to, first["id"])["headers"]["message-id"]
    second = kit.message(
        cid, to=[to], subject="Re: Step 1", in_reply_to=one.internet_message_id, references=[one.internet_message_id]
    )
    two = _send(kit, second)
    got = _delivered(kit, to, second["id"])
    assert two.status == "sent" and got["headers"]["in-reply-to"] == one.internet_message_id
    assert got["headers"]["references"] == one.internet_message_id


def test_an_internet_message_id_names_one_message_per_connection(send_kit):
    kit = send_kit(**RW)
    cid = kit.connect("alice")
    chosen = f"<{uuid.uuid4().hex}@mail.contoso.example>"
    first = _send(kit, kit.message(cid, internet_message_id=chosen))
    again = _send(kit, kit.message(cid, internet_message_id=chosen))
    assert first.status == "sent"
    assert again.status == "rejected" and again.error_code == "duplicate_internet_message_id"
    assert again.error_field == "internet_message_id"
    bad = kit.mb.http("enqueue_message", "POST", body=kit.message(cid, in_reply_to="parent@partner.example"))
    assert bad.status_code == 400 and kit.mb.json(bad)["error"]["code"] == "invalid_message_id"
    bad = kit.mb.http("enqueue_message", "POST", body=kit.message(cid, list_unsubscribe={"urls": ["http://x.example"]}))
    assert bad.status_code == 400 and kit.mb.json(bad)["error"]["code"] == "invalid_list_unsubscribe"


@pytest.mark.parametrize("settings", [{}, RW])
def test_save_to_sent_items_false_is_refused_for_a_composed_message(send_kit, settings):
    """Graph takes threading, unsubscribe and Message-ID headers only as MIME, and saves every MIME send (user-sendmail:
    the body is the base64 MIME alone, no saveToSentItems; microsoft-graph-docs#18698) and every draft /send
    (message-send): the false cannot be honoured, so the message is refused, never sent with a Sent Items copy."""
    kit = send_kit(**settings)
    cid = kit.connect("alice")
    to = _to()
    msg = _reply(kit, cid, to, save_to_sent_items=False)
    resp = kit.mb.http("enqueue_message", "POST", body=msg)
    assert resp.status_code == 400, kit.mb.json(resp)
    error = kit.mb.json(resp)["error"]
    assert error["code"] == "invalid_message" and error["field"] == "save_to_sent_items"
    rec = _send(kit, msg)  # a queue producer's message: the same refusal, recorded
    assert rec.status == "rejected" and rec.error_code == "invalid_message", rec
    assert rec.error_field == "save_to_sent_items" and rec.attempts <= 1
    assert kit.mb.admin.received(to) == []
    assert not [m for m in kit.mb.admin.sent_items(kit.address("alice")) if m["subject"] == "Re: your question"]
    plain = _send(kit, kit.message(cid, to=[to], subject="plain", save_to_sent_items=False))  # JSON sendMail: honoured
    assert plain.status == "sent" and plain.mode == "sendMail", plain
    assert [m["subject"] for m in kit.mb.admin.received(to)] == ["plain"]
    assert not [m for m in kit.mb.admin.sent_items(kit.address("alice")) if m["subject"] == "plain"]


def test_graphs_refusals_of_a_mime_request_are_final(send_kit):
    """Malformed MIME is 400 ErrorMimeContentInvalidBase64String (user-sendmail, user-post-messages), a MIME request
    over 4 MB 413 (user-post-messages): permanent errors with stable codes (the sender records them ``failed``),
    never transient (retried) nor ambiguous (looked up)."""
    kit = send_kit(**RW)
    cid = kit.connect("alice")
    graph: GraphClient = kit.services.graph
    token = kit.services.tokens.access_token(kit.services.connections.recent(cid))
    for call in (
        lambda mime: composer.send_mime(graph, token, None, mime),
        lambda m: composer.create_draft(graph, token, m),
    ):
        with pytest.raises(errors.SendError) as bad:
            call(b"no header block, so no MIME message")
        assert type(bad.value) is errors.SendError and bad.value.code == "send_failed"
        assert bad.value.extra["graph_code"] == "ErrorMimeContentInvalidBase64String"
        assert not bad.value.transient
        with pytest.raises(errors.MessageTooLarge) as big:
            call(b"To: a@partner.example\r\nSubject: big\r\n\r\n" + b"x" * (3 * MIB + 100_000))
        assert big.value.code == "message_too_large" and big.value.extra["graph_status"] == 413
    assert kit.mb.admin.drafts(kit.address("alice")) == []


def _logo_message(kit: Any, cid: str, to: str, logo: bytes) -> dict[str, Any]:
    return kit.message(
        cid,
        to=[to],
        subject="Newsletter",
        body={"content_type": "html", "content": "<p>Hello <img src='cid:logo@mb'></p>"},
        list_unsubscribe={"urls": ["https://unsub.example/n"], "one_click": True},
        attachments=[
            {
                "name": "logo.png",
                "content_type": "image/png",
                "content_id": "logo@mb",
                "content_base64": base64.b64encode(logo).decode(),
            },
        ],
    )


def test_a_3_5_mb_cid_logo_arrives_inline_through_an_upload_session(send_kit):
    kit = send_kit(**RW)
    cid = kit.connect("alice")
    to = _to()
    logo = os.urandom(3 * MIB + MIB // 2)
    before = kit.mb.admin.counters("calls.graph.")
    rec = _send(kit, _logo_message(kit, cid, to, logo))
    assert rec.status == "sent" and rec.mode == "draft", rec
    after = kit.mb.admin.counters("calls.graph.")
    assert after.get("calls.graph.createUploadSession", 0) - before.get("calls.graph.createUploadSession", 0) == 1
    got = _delivered(kit, to, rec.message_id)
    [att] = got["attachments"]
    assert att["isInline"] is True and att["contentId"] == "logo@mb" and att["size"] == len(logo)
    assert att["sha256"] == hashlib.sha256(logo).hexdigest()
    assert got["headers"]["list-unsubscribe-post"] == "List-Unsubscribe=One-Click"


def test_an_upload_interrupted_by_a_503_resumes_without_restarting_the_draft(send_kit):
    kit = send_kit(**RW)
    cid = kit.connect("alice")
    to = _to()
    logo = os.urandom(10 * MIB)  # three ranges of at most 3.75 MiB
    kit.mb.admin.add_fault("graph.uploadChunk", "503", count=1, retry_after=1)
    before = kit.mb.admin.counters("calls.graph.")
    rec = _send(kit, _logo_message(kit, cid, to, logo))
    assert rec.status == "sent" and rec.attempts == 1, rec
    delta = {k: v - before.get(k, 0) for k, v in kit.mb.admin.counters("calls.graph.").items()}
    assert delta["calls.graph.createMessage"] == 1 and delta["calls.graph.createUploadSession"] == 1
    assert delta["calls.graph.uploadChunk"] == 3 + 1  # the refused range once more, nothing else
    [att] = _delivered(kit, to, rec.message_id)["attachments"]
    assert att["sha256"] == hashlib.sha256(logo).hexdigest()


def test_a_refused_middle_range_is_sent_again_from_next_expected_ranges_only(send_kit):
    """Drive the upload directly: the 503 lands on the second range; the first is never sent twice."""
    kit = send_kit(**RW)
    cid = kit.connect("alice")
    graph: GraphClient = kit.services.graph
    token = kit.services.tokens.access_token(kit.services.connections.recent(cid))
    draft = graph.call("POST", f"{graph.base}/me/messages", token, json={"subject": "resume"}, changes_state=False)
    data = os.urandom(9 * MIB)
    chunk = 3 * MIB + 768 * 1024  # 12 x 320 KiB
    sent: list[tuple[int, int]] = []
    admin = kit.mb.admin

    def chunks():
        for start in range(0, len(data), chunk):
            if start == chunk:
                admin.add_fault("graph.uploadChunk", "503", count=1, retry_after=1)
            yield data[start : start + chunk]

    def record(resp, *args, **kwargs):
        if resp.request.method == "PUT":
            sent.append((int(resp.request.headers["Content-Range"].split()[1].split("-")[0]), resp.status_code))

    graph.session.hooks["response"].append(record)
    try:
        att = Attachment(name="f.bin", content_base64=base64.b64encode(b"x").decode(), content_id=None)
        upload(graph, token, str(draft.body["id"]), att, len(data), chunks(), sleep=lambda s: None)
    finally:
        graph.session.hooks["response"].remove(record)
    assert sent == [(0, 200), (chunk, 503), (chunk, 200), (2 * chunk, 201)]


# Graph's upload limit, scaled down by 10 (the emulator's knob and MAILBOX_UPLOAD_* alike): 150 MB / 5 min and six
# 40 MB messages become 15 MB / 10 s and six 4 MB messages. The full size (scale 1, 300 s: over five minutes and
# 240 MB of uploads) runs with COMPOSER_FULL_SIZE=1.
FULL_SIZE = pytest.mark.skipif(not os.environ.get("COMPOSER_FULL_SIZE"), reason="set COMPOSER_FULL_SIZE=1")


@pytest.mark.parametrize(
    ("scale", "window_s"),
    [(10, 10), pytest.param(1, 300, marks=[pytest.mark.slow, FULL_SIZE, pytest.mark.timeout(1200)])],
)
def test_six_large_messages_to_one_mailbox_stay_within_graphs_upload_limit(send_kit, scale, window_s):
    budget, size = 150_000_000 // scale, 40_000_000 // scale
    kit = send_kit(
        MAILBOX_UPLOAD_BYTES_PER_WINDOW=str(budget),
        MAILBOX_UPLOAD_WINDOW_SECONDS=str(window_s),
        MAX_MESSAGE_BYTES=str(2 * size),  # 40 MB is over the 25 MB default
        **RW,
    )
    # An admin raised the mailbox's send size to Exchange Online's 150 MB maximum (the default is 35 MB).
    kit.mb.admin.graph_limits(upload_bytes_per_window=budget, upload_window_s=window_s, max_message_bytes=150 * MIB)
    cid = kit.connect("alice")
    to = _to()
    pending = [
        kit.message(
            cid,
            to=[to],
            subject=f"Report {n}",
            attachments=[{"name": f"r{n}.bin", "content_base64": base64.b64encode(os.urandom(size)).decode()}],
        )
        for n in range(6)
    ]
    before = kit.mb.admin.graph_stats()["throttled"].get("IncomingBytes", 0)
    paced = 0
    for _ in range(400):  # bounded: each round sends or paces every pending message once
        waits = []
        for msg in list(pending):
            outcome = kit.services.sender.process(msg, f"q-{msg['id']}")
            if outcome.status == "queued":
                waits.append(outcome.delay)
                paced += kit.record(cid, msg["id"]).reason == "upload_rate"
            else:
                assert outcome.status == "sent", outcome
                pending.remove(msg)
        if not pending:
            break
        time.sleep(min(max(min(waits), 0.2), 10.0))
    assert not pending
    assert kit.mb.admin.graph_stats()["throttled"].get("IncomingBytes", 0) - before == 0  # 0 x 429
    assert paced >= 1  # three fit in the window; the fourth waited for the first to leave it
    got = [m for m in kit.mb.admin.received(to) if m["subject"].startswith("Report ")]
    assert len(got) == 6 and all(m["attachments"][0]["size"] == size for m in got)
