"""Messages that thread, carry List-Unsubscribe or ask for a Message-ID: sent as MIME (issue 27).

Graph's JSON message takes only ``x-`` internet headers (the message resource: "name them starting with x-"), and
extended properties such as PidTagInReplyToId (0x1042), PidTagInternetReferences (0x1039) and PidTagListUnsubscribe
(0x1045) were reported ignored on send (msgraph-sdk-dotnet#2210, #2320). A MIME message carries its headers as
written (learn.microsoft.com/graph/outlook-send-mime-message; MS-OXCMAIL maps In-Reply-To, References and
List-Unsubscribe onto those properties and writes them back out), so a message with ``in_reply_to``,
``references``, ``list_unsubscribe`` or ``internet_message_id`` (``SendMessage.is_composed``) is built here with
the standard library's ``email`` package (never hand-formatted headers) and sent base64-encoded with
``Content-Type: text/plain``:

- **draft path** (a connection with Mail.ReadWrite): ``POST /me/messages`` with the MIME creates the draft
  (user-post-messages, Example 3) holding the body and the attachments that fit; larger ones follow by
  ``POST .../attachments`` or upload sessions, then ``/send``. The draft's ``internetMessageId`` is in the 201
  answer and a server-assigned one is kept through the send (MS-OXCMAIL: "Once set, the value ... SHOULD remain
  constant"), so it is the delivered Message-ID at no extra call. A Message-ID the producer asked for may be
  replaced at submission (MS-OXCMAIL 2.1.3.2.11: "Servers MAY overwrite"), so it is read back from the sent
  item after the send;
- **sendMail path** (Mail.Send only): ``POST /me/sendMail`` (``/users/{from}/sendMail`` for send-as) with the
  MIME (user-sendmail, Example 4). Always saved to Sent Items. The connection cannot read its mailbox, so the
  delivered Message-ID cannot be known: the record says null (docs/sending.md).

Both requests are limited to 4 MB (413 otherwise): base64 of a MIME message whose attachments are base64 already
costs ~1.8 bytes per attachment byte, so :func:`fit` moves attachments out of the MIME (largest first) until it
fits; a draft then gets them as the plan says (their own POST, or an upload session from 3 MB).

Draft lookups after a crash or an ambiguous ``/send`` use the ``x-mailbridge-id`` header, which Exchange stores as
a named property of the PS_INTERNET_HEADERS set (MIME readers copy header fields into PS_INTERNET_HEADERS
properties: e.g. PidNameCrossReference; MS-OXPROPS): :data:`HEADER_KEY_PROPERTY`, filterable like any
single-value extended property (singlevaluelegacyextendedproperty-get). A MIME draft cannot carry our own
MailbridgeId property (no JSON in the request, and no PATCH is made).
"""

from __future__ import annotations

import base64
import functools
from email import policy
from email.message import EmailMessage
from email.utils import formataddr
from typing import Any

from shared.base import errors
from shared.send.graph import IDEMPOTENCY_HEADER, GraphClient, user_segment
from shared.send.limits import GRAPH_REQUEST_LIMIT, INLINE_ATTACHMENT_LIMIT, REQUEST_MARGIN
from shared.send.mail import ATTACH, INLINE, UPLOAD, Attachment, SendMessage

# Exchange's PS_INTERNET_HEADERS property set: an internet header x-name is the named property `Name x-name`.
PS_INTERNET_HEADERS = "{00020386-0000-0000-C000-000000000046}"
HEADER_KEY_PROPERTY = f"String {PS_INTERNET_HEADERS} Name {IDEMPOTENCY_HEADER}"
# SMTP line ends; headers fold only past RFC 5322's 998 characters, so an unsubscribe URL (at most 900) or a
# msg-id is never cut or RFC 2047-encoded; References fold between msg-ids.
MIME_POLICY = policy.SMTP.clone(max_line_length=998)
MIME_LIMIT = GRAPH_REQUEST_LIMIT - REQUEST_MARGIN


def build(msg: SendMessage, body: str, inline: list[tuple[Attachment, bytes]]) -> bytes:
    """The RFC 5322 message for ``msg`` with the attachments in ``inline`` (the rest reach a draft apart)."""
    mime = EmailMessage(policy=MIME_POLICY)
    if msg.from_ is not None:  # send as / on behalf: Exchange checks the right as for a JSON `from`
        mime["From"] = _address(msg.from_)
    for name, people in (("To", msg.to), ("Cc", msg.cc), ("Bcc", msg.bcc), ("Reply-To", msg.reply_to)):
        if people:
            mime[name] = ", ".join(_address(a) for a in people)
    mime["Subject"] = msg.subject
    if msg.internet_message_id:
        mime["Message-ID"] = msg.internet_message_id
    if msg.in_reply_to:
        mime["In-Reply-To"] = msg.in_reply_to
    if msg.references:
        mime["References"] = " ".join(msg.references)
    if msg.list_unsubscribe is not None:
        mime["List-Unsubscribe"] = msg.list_unsubscribe.header()
        if msg.list_unsubscribe.one_click:
            mime["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if msg.importance != "normal":
        mime["Importance"] = msg.importance  # MS-OXCMAIL: Importance header <-> PidTagImportance
    mime[IDEMPOTENCY_HEADER] = msg.id
    for name, value in msg.headers.items():
        mime[name] = value
    html = msg.body.content_type == "html"
    mime.set_content(body, subtype="html" if html else "plain", charset="utf-8")
    for att, raw in inline:  # cid: images next to the HTML they are shown in (multipart/related)
        if html and att.content_id:
            maintype, _, subtype = att.content_type.partition("/")
            mime.add_related(raw, maintype, subtype, cid=f"<{att.content_id}>", filename=att.name, disposition="inline")
    for att, raw in inline:
        if not (html and att.content_id):
            _attach(mime, att, raw)
    return mime.as_bytes()


def _address(addr: Any) -> str:
    return formataddr((addr.name or "", addr.address))


def _attach(mime: EmailMessage, att: Attachment, raw: bytes) -> None:
    maintype, _, subtype = att.content_type.partition("/")
    if att.content_id:  # an inline part outside HTML (a text body): still addressable by its Content-ID
        # The package quotes the name as a parameter (a '"' in it stays in the name, never ends the parameter).
        cid = f"<{att.content_id}>"
        mime.add_attachment(raw, maintype=maintype, subtype=subtype, filename=att.name, disposition="inline", cid=cid)
    else:
        mime.add_attachment(raw, maintype=maintype, subtype=subtype, filename=att.name)


def encoded_size(raw_size: int) -> int:
    """Bytes of the base64 request body for a MIME message of ``raw_size`` bytes."""
    return (raw_size + 2) // 3 * 4


def fit(msg: SendMessage, body: str, plan: list[str], content: Any, *, drafts: bool) -> list[str]:
    """The attachment plan for the MIME request: INLINE attachments stay in the MIME while its base64 fits Graph's
    4 MB; the largest move out (ATTACH under 3 MB, else UPLOAD), which needs the draft path (``drafts``).
    ``content(att)`` gives an attachment's bytes."""
    plan = list(plan)
    read = functools.cache(lambda i: content(msg.attachments[i]))  # once each (a blob is a Storage request)
    while True:
        ways = enumerate(zip(msg.attachments, plan, strict=True))
        inline = [(a, read(i)) for i, (a, way) in ways if way == INLINE]
        size = encoded_size(len(build(msg, body, inline)))
        if size <= MIME_LIMIT:
            break
        if not inline:
            raise errors.MessageTooLarge(detail=f"the MIME message needs {size} bytes; one Graph request takes 4 MB")
        index = max((i for i, way in enumerate(plan) if way == INLINE), key=lambda i: msg.attachments[i].size or 0)
        plan[index] = UPLOAD if (msg.attachments[index].size or 0) >= INLINE_ATTACHMENT_LIMIT else ATTACH
    if any(way != INLINE for way in plan) and not drafts:
        raise errors.AttachmentsTooLarge(
            detail="as MIME (threading or unsubscribe headers) these attachments need more than one 4 MB request: "
            "that needs ENABLE_MAIL_READWRITE=true and a connection holding Mail.ReadWrite"
        )
    return plan


def plan(msg: SendMessage, body: str, ways: list[str], attachments: Any, deliveries: Any, settings: Any) -> list[str]:
    """For the sender's plan: a composed message's attachment plan refitted to its MIME request (:func:`fit`; the
    draft path needs ENABLE_MAIL_READWRITE, the sender checks the connection's scope), its ``internet_message_id``
    reserved within the connection (a Message-ID names one message). Other messages: ``ways`` unchanged."""
    if not msg.is_composed():
        return ways
    content = lambda att: attachments.content(msg, att)  # noqa: E731
    ways = fit(msg, body, ways, content, drafts=settings.enable_mail_readwrite)
    if msg.internet_message_id:
        deliveries.reserve_internet_message_id(msg.connection_id, msg.internet_message_id, msg.id)
    return ways


def send_mail(
    graph: GraphClient, token: str, mailbox: str | None, msg: SendMessage, body: str, inline: list[tuple[Any, bytes]]
) -> str | None:
    """The sendMail path: MIME for a composed message (the only way its threading and unsubscribe headers reach
    the recipient), Graph's JSON message otherwise. Graph's request id."""
    if msg.is_composed():
        return send_mime(graph, token, mailbox, build(msg, body, inline))
    message = graph.build_message(msg, body, inline, with_property=False)
    return graph.send_mail(token, mailbox, message, msg.save_to_sent_items).request_id


def _post_mime(graph: GraphClient, token: str, path: str, mime: bytes, **kwargs: Any):
    """POST ``mime`` the way Graph takes a MIME message: the base64 of its bytes as ``text/plain``."""
    headers = {"Content-Type": "text/plain"}
    return graph.call("POST", f"{graph.base}{path}", token, data=base64.b64encode(mime), headers=headers, **kwargs)


def send_mime(graph: GraphClient, token: str, mailbox: str | None, mime: bytes) -> str | None:
    """``POST /me/sendMail`` (``mailbox`` None) or ``/users/{mailbox}/sendMail`` with the MIME: 202, nothing back."""
    prefix = "/me" if mailbox is None else f"/users/{user_segment(mailbox)}"
    return _post_mime(graph, token, f"{prefix}/sendMail", mime).request_id


def create_draft(graph: GraphClient, token: str, mime: bytes) -> tuple[str, str | None]:
    """``POST /me/messages`` with the MIME: the draft's id and its ``internetMessageId``."""
    # An orphan draft is harmless: retries find it by its x-mailbridge-id header.
    resp = _post_mime(graph, token, "/me/messages", mime, changes_state=False)
    assert resp.body is not None
    return str(resp.body["id"]), resp.body.get("internetMessageId")


def key_property(msg: SendMessage) -> str | None:
    """The property a draft of ``msg`` is found by: the header's for MIME drafts, None for our own (JSON)."""
    return HEADER_KEY_PROPERTY if msg.is_composed() else None
