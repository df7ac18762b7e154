"""Attachment and body content too large for a 64 KB queue message: blobs in ATTACHMENTS_CONTAINER.

``POST /api/messages`` moves content out of the message (largest first) until the queue message fits,
writing blobs under ``api/<connection id>/<message id>/``; the sender reads them back in ranges
and deletes ``api/`` blobs once the message reaches a final state. Producers that write the queue
directly may reference their own blobs in the same container (never an arbitrary URL: no SSRF).

Where a name may point (issue 23): the SDK puts a name into the request URL percent-encoded, but ``.`` and
``/`` stay as they are, and URL clients remove ``.``/``..`` segments before sending (urllib3, RFC 3986 5.2.4),
so ``api/c/m/../../../../other/x`` would read or delete ``/other/x``: any container of the account. Before every
read, size, range or delete (:meth:`AttachmentStore.blob`) the name must be a :data:`shared.send.mail.BLOB_PATTERN`
name, must not lie under ``api/`` of another connection or message, and the URL path the request will carry
(normalised as urllib3 does) must be the container's path plus the name; otherwise the message is refused
with ``invalid_blob_name`` (recorded ``rejected``). ``cleanup`` deletes only this message's ``api/`` prefix.
"""

from __future__ import annotations

import logging
import posixpath
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import unquote

from azure.core.exceptions import ResourceNotFoundError
from urllib3.util import parse_url

from shared.base import errors
from shared.base.storage import StorageClients
from shared.send.mail import Attachment, SendMessage, is_blob_name

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient

logger = logging.getLogger(__name__)

QUEUE_MESSAGE_BUDGET = 60 * 1024  # Storage queue messages are at most 64 KiB; keep headroom
API_PREFIX = "api/"


def message_prefix(msg: SendMessage) -> str:
    """Where ``POST /api/messages`` puts the content of ``msg`` (and the only blobs ``cleanup`` deletes)."""
    return f"{API_PREFIX}{msg.connection_id}/{msg.id}/"


def sent_path(url: str) -> str:
    """The decoded path a request for ``url`` carries: dot segments removed as urllib3 does before sending."""
    return unquote(parse_url(url).path or "")


def _field(msg: SendMessage, name: str) -> str:
    for index, att in enumerate(msg.attachments):
        if att.blob == name:
            return f"attachments.{index}.blob"
    return "body.blob"


class AttachmentStore:
    def __init__(self, clients: StorageClients, container: str) -> None:
        self.clients = clients
        self.container_name = container

    @property
    def container(self):
        return self.clients.container(self.container_name)

    def blob(self, msg: SendMessage, name: str) -> BlobClient:
        """The client for blob ``name`` of ``msg``, once the request it sends is known to stay where the name
        says: in this container, and under ``api/`` only in this message's own prefix (module docstring)."""
        field = _field(msg, name)
        if not is_blob_name(name):
            raise errors.InvalidBlobName(detail=f"{name!r} is not a blob name", field=field)
        if name.startswith(API_PREFIX) and not name.startswith(message_prefix(msg)):
            raise errors.InvalidBlobName(
                detail=f"{name!r} lies under {API_PREFIX} of another message (this one's is {message_prefix(msg)})",
                field=field,
            )
        container = self.container
        client = container.get_blob_client(name)
        path = sent_path(client.url)
        if path != sent_path(container.url).rstrip("/") + "/" + name or posixpath.normpath(path) != path:
            raise errors.InvalidBlobName(detail=f"{name!r} does not stay in the attachments container", field=field)
        return client

    def put(self, msg: SendMessage, data: bytes, kind: str) -> str:
        """Write ``data`` under this message's own ``api/`` prefix; returns the blob name."""
        name = f"{message_prefix(msg)}{kind}-{uuid.uuid4().hex}"
        if not is_blob_name(name):  # an id ending in "." (or ".", "..") cannot name a folder
            raise errors.InvalidBlobName(
                detail="this message's content must go to blobs, and its id cannot name their folder "
                "(an id ending in '.'): use another id",
                field="id",
            )
        self.blob(msg, name).upload_blob(data, overwrite=True)
        return name

    def size(self, msg: SendMessage, name: str) -> int:
        client = self.blob(msg, name)
        try:
            return int(client.get_blob_properties().size)
        except ResourceNotFoundError:
            raise errors.InvalidMessage(
                f"Blob {name!r} does not exist in the attachments container.", field=_field(msg, name)
            ) from None

    def read(self, msg: SendMessage, name: str) -> bytes:
        client = self.blob(msg, name)
        try:
            return client.download_blob().readall()
        except ResourceNotFoundError:
            raise errors.InvalidMessage(
                f"Blob {name!r} does not exist in the attachments container.", field=_field(msg, name)
            ) from None

    def chunks(self, msg: SendMessage, name: str, size: int, chunk_bytes: int) -> Iterator[bytes]:
        """The blob in ranges of ``chunk_bytes``: a 150 MB attachment is never held in memory at once."""
        client = self.blob(msg, name)
        offset = 0
        while offset < size:
            length = min(chunk_bytes, size - offset)
            yield client.download_blob(offset=offset, length=length).readall()
            offset += length

    def measure(self, msg: SendMessage) -> None:
        """Set the size of every blob-backed part from the blob itself (never trust a declared size)."""
        for att in msg.attachments:
            if att.blob:
                att.size = self.size(msg, att.blob)
        if msg.body.blob:
            msg.body.size = self.size(msg, msg.body.blob)

    def body_text(self, msg: SendMessage) -> str:
        if msg.body.blob:
            return self.read(msg, msg.body.blob).decode("utf-8")
        return msg.body.content or ""

    def content(self, msg: SendMessage, att: Attachment) -> bytes:
        """The bytes of attachment ``att`` of ``msg`` (inline, or its blob)."""
        return self.read(msg, att.blob) if att.blob else att.content()

    def chunks_of(self, msg: SendMessage, att: Attachment, chunk_bytes: int) -> Iterator[bytes]:
        """Attachment ``att`` of ``msg`` in ranges of ``chunk_bytes`` (an upload session's chunks)."""
        if att.blob:
            return self.chunks(msg, att.blob, att.size or 0, chunk_bytes)
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
        """Delete the blobs ``offload`` wrote for this message: names under its own ``api/`` prefix that pass
        :meth:`blob` (producers' own blobs are left alone; nothing outside the prefix is ever deleted)."""
        names = [a.blob for a in msg.attachments if a.blob] + ([msg.body.blob] if msg.body.blob else [])
        for name in names:
            if not (name and name.startswith(message_prefix(msg))):
                continue
            try:
                self.blob(msg, name).delete_blob()
            except ResourceNotFoundError:
                pass
            except errors.InvalidBlobName:
                logger.warning("Message %s: a blob name failed the container check; not deleted", msg.id)
            except Exception:  # cleanup is best effort; a lifecycle rule catches leftovers
                logger.warning("Could not delete attachment blob of message %s", msg.id, exc_info=True)
