"""Draft mode: the idempotent way to send (and the only way for attachments over one Graph request).

The draft carries our idempotency key as an extended property, so after an ambiguous outcome or a crash the
next attempt can look the key up and know what happened (docs/sending.md). Transport is asynchronous: after
Graph accepts ``/send`` the item stays in Drafts, seconds to minutes, before it moves to Sent Items with a
new id ("things to know about send mail"), and whether an in-transit item still looks like an unsent draft
is not documented. So a draft whose ``/send`` may have reached Graph is never sent again: ``phase`` records
whether that can have happened.

``record.phase``: ``""`` no ``/send`` yet (a draft found is incomplete or unsent: deleted and rebuilt);
``draft_ready`` the draft is complete and Graph refused its ``/send`` before applying it (429/503/401:
sent on the next attempt); ``send_requested`` a ``/send`` may have been applied (only :func:`lookup`
decides, never a resend).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from shared.base import errors
from shared.send import composer, uploads
from shared.send.attachments import AttachmentStore
from shared.send.deliveries import Delivery, DeliveryStore
from shared.send.graph import UPLOAD_CHUNK_BYTES, GraphClient
from shared.send.mail import ATTACH, INLINE, UPLOAD, SendMessage

logger = logging.getLogger(__name__)

DRAFT_READY = "draft_ready"
SEND_REQUESTED = "send_requested"
TRANSIT_GRACE_S = 600.0  # how long after an ambiguous /send we keep looking for the item before `unknown`
MIN_RECHECK_S = 2.0


@dataclass
class Lookup:
    """What the mailbox holds for one idempotency key."""

    submitted: bool = False  # an item outside Drafts state (Sent Items), or marked sent: Graph accepted it
    drafts: list[str] = field(default_factory=list)  # ids of items that look like unsent drafts
    internet_message_id: str | None = None  # of the submitted item: what its recipients received


def lookup(graph: GraphClient, token: str, key: str, prop: str | None = None) -> Lookup:
    """Every item carrying ``key`` (in ``prop``: our property by default), in any folder; ``isDraft`` false or a
    ``sentDateTime`` proves a send."""
    found = Lookup()
    for item in graph.find_by_key(token, key, prop):
        if item.get("isDraft") is False or item.get("sentDateTime"):
            found.submitted = True
            found.internet_message_id = item.get("internetMessageId") or found.internet_message_id
        else:
            found.drafts.append(str(item["id"]))
    return found


def recheck_delay(sent_at: float, now: float, grace_s: float = TRANSIT_GRACE_S) -> float | None:
    """When to look again for a draft whose ``/send`` was ambiguous, or None once the grace period is over.
    Intervals grow with the time since the send (2 s, 4 s, 8 s ...), so a quick transport is seen quickly."""
    elapsed = max(0.0, now - sent_at)
    if elapsed >= grace_s:
        return None
    return min(grace_s - elapsed, max(MIN_RECHECK_S, elapsed))


def send_via_draft(
    graph: GraphClient,
    attachments: AttachmentStore,
    deliveries: DeliveryStore,
    msg: SendMessage,
    token: str,
    record: Delivery,
    plan: list[str],
    body: str,
) -> str | None:
    """Draft carrying our idempotency property -> attachments (per ``plan``) -> send. ``record.phase`` is never
    ``send_requested`` here (the sender resolves those by :func:`lookup`)."""
    draft_id = None
    prop = composer.key_property(msg)
    if record.attempts > 1:  # an earlier attempt may have created the draft
        found = lookup(graph, token, msg.id, prop)
        if found.submitted:  # belt and braces: the phase says no /send reached Graph
            return None
        if record.phase == DRAFT_READY and found.drafts:
            draft_id, stale = found.drafts[0], found.drafts[1:]
        else:
            stale = found.drafts  # incomplete (an attempt died before /send): start over
        for old in stale:
            graph.delete_message(token, old)
    created = draft_id is None
    if created:
        inline = [
            (a, attachments.content(msg, a)) for a, way in zip(msg.attachments, plan, strict=True) if way == INLINE
        ]
        if msg.is_composed():  # threading / unsubscribe headers / a Message-ID: MIME (shared/send/composer.py)
            draft_id, record.internet_message_id = composer.create_draft(
                graph, token, composer.build(msg, body, inline)
            )
        else:
            message = graph.build_message(msg, body, inline, with_property=True)
            draft_id, created_resp = graph.create_draft(token, message)
            record.internet_message_id = (created_resp.body or {}).get("internetMessageId")
    try:
        if created:
            _attach(graph, attachments, msg, token, draft_id, plan)
        record.phase = SEND_REQUESTED
        deliveries.update(record)
        request_id = graph.send_draft(token, draft_id).request_id
    except errors.TransientError:  # nothing was applied: the complete draft is sent on the next attempt
        if record.phase == SEND_REQUESTED:
            record.phase = DRAFT_READY
        raise
    except errors.OutcomeUnknown:
        raise
    except errors.SendError as exc:
        if record.phase == SEND_REQUESTED and exc.extra.get("graph_status") == 404:  # someone else sent it
            raise errors.OutcomeUnknown(detail="the draft was gone at send") from None
        _discard(graph, token, draft_id, msg.id)
        raise
    except errors.MailbridgeError:  # refused for good (an input error, ...): no orphan draft
        _discard(graph, token, draft_id, msg.id)
        raise
    if msg.internet_message_id:  # a Message-ID the producer chose may be replaced at submission: read it back
        _read_back(graph, token, msg, record, prop)
    return request_id


def _read_back(graph: GraphClient, token: str, msg: SendMessage, record: Delivery, prop: str | None) -> None:
    """The sent item's ``internetMessageId`` (the Sent Items copy's equals the delivered Message-ID); an item still
    in transit keeps the draft's until it is submitted, so the record keeps that (docs/sending.md)."""
    try:
        found = lookup(graph, token, msg.id, prop)
    except errors.MailbridgeError as exc:
        logger.warning("Message %s: sent, its Message-ID could not be read back: %s", msg.id, exc.code)
        return
    if found.internet_message_id:
        record.internet_message_id = found.internet_message_id


def _attach(
    graph: GraphClient, attachments: AttachmentStore, msg: SendMessage, token: str, draft_id: str, plan: list[str]
) -> None:
    for att, way in zip(msg.attachments, plan, strict=True):
        if way == ATTACH:
            graph.add_attachment(token, draft_id, att, attachments.content(msg, att))
        elif way == UPLOAD:
            chunks = attachments.chunks_of(msg, att, UPLOAD_CHUNK_BYTES)
            uploads.upload(graph, token, draft_id, att, att.size or 0, chunks)


def submitted(graph: GraphClient, token: str, msg: SendMessage, record: Delivery) -> bool:
    """Was ``msg``'s draft submitted (an ambiguous ``/send`` applied)? If so the record takes the sent item's
    ``internetMessageId`` (what its recipients received)."""
    found = lookup(graph, token, msg.id, composer.key_property(msg))
    if found.submitted:
        record.internet_message_id = found.internet_message_id or record.internet_message_id
    return found.submitted


def discard_unsent(graph: GraphClient, token: str, msg: SendMessage) -> None:
    """Delete every unsent draft of ``msg``: a message whose last attempt failed before its /send was applied
    (nothing of it was sent, and nothing will retry it) leaves none in the user's Drafts."""
    key = msg.id
    try:
        found = lookup(graph, token, key, composer.key_property(msg))
    except errors.MailbridgeError as exc:
        logger.warning("Message %s: could not look up its drafts after its last attempt: %s", key, exc.code)
        return
    if not found.submitted:
        for draft_id in found.drafts:
            _discard(graph, token, draft_id, key)


def _discard(graph: GraphClient, token: str, draft_id: str, key: str) -> None:
    """Delete the draft of a message that failed for good (Graph refused the send itself, or an attachment)."""
    try:
        graph.delete_message(token, draft_id)
    except errors.MailbridgeError as exc:
        logger.warning("Message %s: could not delete its draft after a permanent failure: %s", key, exc.code)
