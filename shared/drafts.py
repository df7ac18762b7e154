"""Draft mode: the idempotent way to send (and the only way for attachments over 3 MB).

The draft carries our idempotency key as an extended property, so after an ambiguous outcome or a crash
the next attempt can look in Sent Items and Drafts and know what happened (docs/sending.md).
"""

from __future__ import annotations

from shared import errors
from shared.attachments import AttachmentStore
from shared.deliveries import Delivery, DeliveryStore
from shared.graph import UPLOAD_CHUNK_BYTES, GraphClient
from shared.mail import SendMessage


def send_via_draft(
    graph: GraphClient,
    attachments: AttachmentStore,
    deliveries: DeliveryStore,
    msg: SendMessage,
    token: str,
    record: Delivery,
    uploads: list[bool],
) -> str | None:
    """Draft carrying our idempotency property -> uploads -> send. Retries find the earlier draft."""
    draft_id = None
    if record.attempts > 1:  # an earlier attempt may have created or even sent the draft
        if graph.find_by_key(token, "sentitems", msg.id):
            return None
        drafts = graph.find_by_key(token, "drafts", msg.id)
        if drafts and record.phase == "send_requested":
            draft_id = drafts[0]  # complete draft whose send did not happen: send it now
        else:
            for stale in drafts:  # incomplete (upload interrupted): start over
                graph.delete_message(token, stale)
            if record.phase == "send_requested":
                raise errors.OutcomeUnknown(detail="the draft left Drafts but is not in Sent Items")
    if draft_id is None:
        inline = [(a, attachments.content(a)) for a, up in zip(msg.attachments, uploads, strict=True) if not up]
        message = graph.build_message(msg, attachments.body_text(msg), inline, with_property=True)
        draft_id, _ = graph.create_draft(token, message)
        for att, up in zip(msg.attachments, uploads, strict=True):
            if up:
                graph.upload_attachment(
                    token,
                    draft_id,
                    att.name,
                    att.content_type,
                    att.size or 0,
                    attachments.chunks_of(att, UPLOAD_CHUNK_BYTES),
                )
        record.phase = "send_requested"
        deliveries.update(record)
    try:
        resp = graph.send_draft(token, draft_id)
    except errors.SendError as exc:
        if exc.extra.get("graph_status") == 404:  # someone else sent this draft already
            raise errors.OutcomeUnknown(detail="the draft was gone at send") from None
        raise
    return resp.request_id
