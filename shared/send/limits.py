"""Does this message fit? The checks made before anything is sent (the callback queue, send-as, what a MIME
message cannot honour, MAX_MESSAGE_BYTES) and how each attachment reaches Graph: ``check_limits(msg, settings,
*request_sizes) -> plan``, one of INLINE, ATTACH or UPLOAD per attachment (shared/send/mail.py holds the message
model; the sizes come from shared/send/graph.py). Graph's limits: one request under ~4 MB, upload sessions from 3 MB
to 150 MB (REFERENCE.md, "attach large files")."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from shared.base import errors
from shared.send.mail import ATTACH, INLINE, UPLOAD, UPN_PATTERN, SendMessage

if TYPE_CHECKING:
    from shared.base.settings import Settings

INLINE_ATTACHMENT_LIMIT = 3 * 1024 * 1024  # Graph: under 3 MB one POST (inline); 3 MB and up an upload session
UPLOAD_ATTACHMENT_LIMIT = 150 * 1024 * 1024  # Graph upload sessions: up to 150 MB
GRAPH_REQUEST_LIMIT = 4 * 1024 * 1024  # Graph refuses request bodies over ~4 MB (413): bytes of UTF-8 JSON
REQUEST_MARGIN = 1024  # JSON punctuation a request may add around what request sizes measure
# A message that uploads less than this is not counted against Graph's upload limit (shared/pacing/uploads.py):
# the common message costs the upload budget no Storage call. 30 such messages a minute stay under ~150 MB / 5 min.
UPLOAD_COUNT_MIN_BYTES = 1_000_000

_UPN_RE = re.compile(UPN_PATTERN)


def attachment_plan(
    sizes: list[int], base_bytes: int, large_attachments: bool, overheads: list[int] | None = None
) -> list[str]:
    """How each attachment reaches Graph: INLINE, ATTACH or UPLOAD (Graph "attach large files").

    ``base_bytes`` is the size of the Graph request without attachments (bytes of its UTF-8 JSON); an inline
    attachment adds its base64 plus ``overheads[i]`` (its JSON wrapper). Files of 3 MB and up take an upload
    session (Graph refuses a session for anything smaller); smaller ones ride inline while the one request
    stays under 4 MB, and the largest of the rest get a ``POST /messages/{id}/attachments`` each. Anything
    but all-inline needs large-attachment mode (draft + Mail.ReadWrite).
    """
    overheads = overheads if overheads is not None else [REQUEST_MARGIN] * len(sizes)
    if any(size > UPLOAD_ATTACHMENT_LIMIT for size in sizes):
        raise errors.AttachmentsTooLarge("An attachment is larger than 150 MB, Graph's upload limit.")
    limit = GRAPH_REQUEST_LIMIT - REQUEST_MARGIN
    if base_bytes > limit:
        raise errors.MessageTooLarge(detail=f"the body needs {base_bytes} bytes; one Graph request takes 4 MB")
    plan = [UPLOAD if size >= INLINE_ATTACHMENT_LIMIT else INLINE for size in sizes]
    costs = [_b64(size) + extra for size, extra in zip(sizes, overheads, strict=True)]
    total = base_bytes + sum(cost for cost, way in zip(costs, plan, strict=True) if way == INLINE)
    for index in sorted(range(len(sizes)), key=lambda i: -sizes[i]):  # largest first out of the request
        if total <= limit:
            break
        if plan[index] == INLINE:
            plan[index] = ATTACH
            total -= costs[index]
    for index, way in enumerate(plan):
        if way == ATTACH and costs[index] > limit:
            raise errors.AttachmentsTooLarge(
                detail=f"attachment {index} ({sizes[index]} bytes) is just under 3 MB: too large for one Graph "
                "request once base64-encoded, and below the 3 MB upload-session minimum"
            )
    if any(way != INLINE for way in plan) and not large_attachments:
        raise errors.AttachmentsTooLarge(
            detail="attachments of 3 MB or more (or over ~3 MB together) need ENABLE_MAIL_READWRITE=true"
        )
    return plan


def upload_bytes(msg: SendMessage, plan: list[str], body: str) -> int:
    """Request bytes a send of ``msg`` uploads to its mailbox (Graph's "150 MB upload (PATCH, POST, PUT) in a
    5-minute period", learn.microsoft.com/graph/throttling-limits): upload-session files as they are, the body and
    the other attachments base64-sized (an upper bound for JSON and MIME alike); 0 under UPLOAD_COUNT_MIN_BYTES."""
    sizes = [a.size or 0 for a in msg.attachments]
    files = sum(size if way == UPLOAD else _b64(size) + REQUEST_MARGIN for size, way in zip(sizes, plan, strict=True))
    total = files + _b64(len(body.encode("utf-8"))) + 4 * REQUEST_MARGIN
    return total if total >= UPLOAD_COUNT_MIN_BYTES else 0


def _b64(size: int) -> int:
    return (size + 2) // 3 * 4


def check_limits(
    msg: SendMessage, settings: Settings, base_bytes: int, overheads: list[int] | None = None
) -> list[str]:
    """Setting-dependent checks; returns the attachment plan (see :func:`attachment_plan`; ``base_bytes`` and
    ``overheads`` come from :func:`shared.send.graph.request_sizes`)."""
    if msg.callback is not None and msg.callback.queue not in settings.allowed_callback_queues:
        # Decided before anything is sent: the queue is the operator's to open (CALLBACK_QUEUES), not the producer's.
        raise errors.CallbackQueueNotAllowed(field="callback.queue")
    if msg.from_ is not None and not settings.enable_shared_mailboxes:
        raise errors.SendAsNotEnabled(field="from")
    if msg.from_ is not None and settings.send_as_endpoint == "users" and not _UPN_RE.match(msg.from_.address):
        raise errors.InvalidMessage(
            "Invalid message: from.address: with SEND_AS_ENDPOINT=users 'from' names the mailbox in the Graph URL, so "
            "it must be a user principal name (letters, digits and ' . - _ ! # ^ ~ before the @).",
            field="from.address",
            reason="not a user principal name",
        )
    if msg.is_composed() and not msg.save_to_sent_items:
        # Its headers reach Graph only as MIME (shared/send/composer.py), and Graph saves every MIME sendMail (the
        # body is the base64 MIME alone: no saveToSentItems, microsoft-graph-docs#18698) and every draft /send
        # (message-send): refused rather than sent with a Sent Items copy the producer said not to keep.
        raise errors.InvalidMessage(
            "Invalid message: save_to_sent_items: false cannot be honoured with in_reply_to, references, "
            "list_unsubscribe or internet_message_id: Graph takes those only in a MIME message, and saves every MIME "
            "message it sends to Sent Items.",
            field="save_to_sent_items",
            reason="a MIME send is always saved to Sent Items",
        )
    total = msg.total_bytes()
    if total > settings.max_message_bytes:
        raise errors.MessageTooLarge(
            f"The message is {total} bytes; the limit is {settings.max_message_bytes} (MAX_MESSAGE_BYTES).",
            field="$",
        )
    sizes = [a.size or 0 for a in msg.attachments]
    return attachment_plan(sizes, base_bytes, settings.enable_mail_readwrite, overheads)
