"""Attachment and body content too large for a 64 KB queue message: blobs in ATTACHMENTS_CONTAINER.

``POST /api/messages`` moves content out of the message (largest first) until the queue message fits,
writing blobs under ``api/<connection id>/<message id>/``; the sender reads them back in ranges
and deletes ``api/`` blobs once the message reaches a final state. Producers that write the queue
directly may reference their own blobs in the same container (never an arbitrary URL: no SSRF).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

from azure.core.exceptions import ResourceNotFoundError

from shared import errors
from shared.mail import Attachment, SendMessage
from shared.storage import StorageClients

logger = logging.getLogger(__name__)

QUEUE_MESSAGE_BUDGET = 60 * 1024  # Storage queue messages are at most 64 KiB; keep headroom
API_PREFIX = "api/"


class AttachmentStore:
    def __init__(self, clients: StorageClients, container: str) -> None:
        self.clients = clients
        self.container_name = container

    @property
    def container(self):
        return self.clients.container(self.container_name)

    def put(self, msg: SendMessage, data: bytes, kind: str) -> str:
        name = f"{API_PREFIX}{msg.connection_id}/{msg.id}/{kind}-{uuid.uuid4().hex}"
        self.container.upload_blob(name, data, overwrite=True)
        return name

    def size(self, name: str) -> int:
        try:
            return int(self.container.get_blob_client(name).get_blob_properties().size)
        except ResourceNotFoundError:
            raise errors.InvalidMessage(f"Blob {name!r} does not exist in the attachments container.") from None

    def read(self, name: str) -> bytes:
        try:
            return self.container.download_blob(name).readall()
        except ResourceNotFoundError:
            raise errors.InvalidMessage(f"Blob {name!r} does not exist in the attachments container.") from None

    def chunks(self, name: str, size: int, chunk_bytes: int) -> Iterator[bytes]:
        """The blob in ranges of ``chunk_bytes``: a 150 MB attachment is never held in memory at once."""
        offset = 0
        while offset < size:
            length = min(chunk_bytes, size - offset)
            yield self.container.download_blob(name, offset=offset, length=length).readall()
            offset += length

    def measure(self, msg: SendMessage) -> None:
        """Set the size of every blob-backed part from the blob itself (never trust a declared size)."""
        for att in msg.attachments:
            if att.blob:
                att.size = self.size(att.blob)
        if msg.body.blob:
            msg.body.size = self.size(msg.body.blob)

    def body_text(self, msg: SendMessage) -> str:
        if msg.body.blob:
            return self.read(msg.body.blob).decode("utf-8")
        return msg.body.content or ""

    def content(self, att: Attachment) -> bytes:
        return self.read(att.blob) if att.blob else att.content()

    def chunks_of(self, att: Attachment, chunk_bytes: int) -> Iterator[bytes]:
        if att.blob:
            return self.chunks(att.blob, att.size or 0, chunk_bytes)
        raw = att.content()
        return (raw[i : i + chunk_bytes] for i in range(0, len(raw), chunk_bytes))

    def offload(self, msg: SendMessage) -> SendMessage:
        """Move attachment contents (then the body) to blobs until the message fits a queue message."""
        if len(msg.to_queue_json().encode()) <= QUEUE_MESSAGE_BUDGET:
            return msg
        inline = sorted(
            (i for i, a in enumerate(msg.attachments) if a.content_base64 is not None),
            key=lambda i: -(msg.attachments[i].size or 0),
        )
        for index in inline:
            att = msg.attachments[index]
            blob = self.put(msg, att.content(), f"att{index}")
            msg.attachments[index] = Attachment(
                name=att.name, content_type=att.content_type, blob=blob, size=att.size, content_id=att.content_id
            )
            if len(msg.to_queue_json().encode()) <= QUEUE_MESSAGE_BUDGET:
                return msg
        if msg.body.content is not None:
            raw = msg.body.content.encode("utf-8")
            msg.body = type(msg.body)(
                content_type=msg.body.content_type, blob=self.put(msg, raw, "body"), size=len(raw)
            )
        if len(msg.to_queue_json().encode()) > QUEUE_MESSAGE_BUDGET:
            raise errors.MessageTooLarge(detail="the message (recipients, headers) does not fit a 64 KB queue message")
        return msg

    def cleanup(self, msg: SendMessage) -> None:
        """Delete the blobs ``offload`` wrote for this message (producers' own blobs are left alone)."""
        names = [a.blob for a in msg.attachments if a.blob] + ([msg.body.blob] if msg.body.blob else [])
        for name in names:
            if name and name.startswith(f"{API_PREFIX}{msg.connection_id}/{msg.id}/"):
                try:
                    self.container.delete_blob(name)
                except ResourceNotFoundError:
                    pass
                except Exception:  # cleanup is best effort; a lifecycle rule catches leftovers
                    logger.warning("Could not delete attachment blob of message %s", msg.id, exc_info=True)
