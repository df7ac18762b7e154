"""Outlook attachment upload sessions (large attachments, 3-150 MB), as pure Python.

Modelled on Graph's "Attach large files to Outlook messages" walkthrough:
- a session for a file under 3 MB is refused: 400 `ErrorAttachmentSizeShouldNotBeLessThanMinimumSize`
  (the walkthrough's Errors section); such files take one `POST .../attachments` each;
- `createUploadSession` answers 201 with an opaque, pre-authenticated `uploadUrl`,
  `expirationDateTime` and `nextExpectedRanges: ["0-"]`;
- each `PUT` carries `Content-Range: bytes {start}-{end}/{total}` and `Content-Length`; bytes
  must arrive in order; intermediate answers are 200 with `nextExpectedRanges: ["<next>"]`;
- the final `PUT` answers 201 Created, empty body, `Location` naming the new attachment;
- `DELETE` on the URL cancels the session: 204 (the walkthrough's "Cancel the upload session");
- `GET` on the URL answers the session's `nextExpectedRanges` (documented for driveItem upload sessions and
  what Graph's SDK upload task does to resume; not in the Outlook walkthrough, so unconfirmed there);
- `isInline` and `contentId` of the `attachmentItem` (attachmentItem resource) carry over to the attachment;
- the docs say not to send `Authorization` on the PUT; real Outlook answers such a PUT 401
  `InvalidAudience` (the Graph token's audience is not the upload host's) - the route does that.

Policy choices (not documented by Microsoft, chosen to catch client bugs): a chunk larger
than 4 MiB is refused with 400; a chunk that does not start exactly at the next expected
byte (overlap, gap or a replay) is refused with 416 and the current `nextExpectedRanges`,
so a client that lost a response can resynchronise.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from emulator.graph_message import MAX_ATTACHMENT_BYTES, MAX_INLINE_ATTACHMENT_BYTES, MAX_REQUEST_BYTES, GraphError

MAX_CHUNK_BYTES = MAX_REQUEST_BYTES  # 4,194,304 bytes per PUT
# Smaller files are refused (ErrorAttachmentSizeShouldNotBeLessThanMinimumSize). "3 MB" is not said more
# exactly; the emulator takes the stricter reading, 3 MiB, the same bound as its inline limit.
MIN_UPLOAD_BYTES = MAX_INLINE_ATTACHMENT_BYTES
_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+)\s*$", re.IGNORECASE)


def parse_attachment_item(body: Any) -> dict[str, Any]:
    """Validate the `{"AttachmentItem": {...}}` body of createUploadSession."""
    if not isinstance(body, dict):
        raise GraphError(400, "RequestBodyRead", "The request body must be a JSON object.")
    item = body.get("AttachmentItem", body.get("attachmentItem"))
    if not isinstance(item, dict):
        raise GraphError(400, "RequestBodyRead", "The parameter 'AttachmentItem' is missing.")
    if str(item.get("attachmentType", "file")).lower() != "file":
        raise GraphError(400, "RequestBodyRead", "Only attachmentType 'file' is supported.")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise GraphError(400, "ErrorInvalidAttachmentName", "AttachmentItem needs a 'name'.")
    size = item.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise GraphError(400, "RequestBodyRead", "AttachmentItem needs a positive integer 'size'.")
    if size < MIN_UPLOAD_BYTES:
        # Graph "attach large files", Errors: files under 3 MB take one POST on `attachments`.
        raise GraphError(
            400,
            "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
            f"The attachment size {size} is less than the minimum size of {MIN_UPLOAD_BYTES} bytes for an "
            "upload session. Attach files under 3 MB with a single POST to the attachments collection.",
        )
    if size > MAX_ATTACHMENT_BYTES:
        raise GraphError(
            400,
            "ErrorAttachmentSizeLimitExceeded",
            f"The attachment size {size} exceeds the maximum of {MAX_ATTACHMENT_BYTES} bytes.",
        )
    content_type = item.get("contentType") or "application/octet-stream"
    if not isinstance(content_type, str):
        raise GraphError(400, "RequestBodyRead", "'contentType' must be a string.")
    content_id = item.get("contentId")
    if content_id is not None and not isinstance(content_id, str):
        raise GraphError(400, "RequestBodyRead", "'contentId' must be a string.")
    return {
        "name": name,
        "size": size,
        "contentType": content_type,
        "isInline": bool(item.get("isInline", False)),
        "contentId": content_id,
    }


@dataclass
class UploadSession:
    """One in-progress upload: bytes are hashed as they arrive, kept only up to `cap`."""

    mailbox_oid: str
    message_id: str
    app_id: str
    name: str
    content_type: str
    size: int
    expires_at: float
    cap: int
    is_inline: bool = False
    content_id: str | None = None
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    received: int = 0
    done: bool = False
    _hasher: Any = field(default_factory=hashlib.sha256, repr=False)
    _buffer: bytearray = field(default_factory=bytearray, repr=False)

    def next_expected(self) -> list[str]:
        """Graph's `nextExpectedRanges` after the first PUT (start offset of the next range)."""
        return [str(self.received)]

    def check_alive(self, now: float) -> None:
        """Raise the error a finished or expired session's URL answers."""
        if self.done:
            raise GraphError(404, "ErrorItemNotFound", "The upload session has already completed.")
        if now >= self.expires_at:
            raise GraphError(401, "InvalidAuthenticationToken", "The upload session's token has expired.")

    def put(self, content_range: str | None, content_length: str | None, body: bytes, now: float) -> bool:
        """Accept one chunk; True when the upload is complete. Raises GraphError otherwise."""
        self.check_alive(now)
        match = _RANGE_RE.match(content_range or "")
        if not match:
            raise GraphError(
                400,
                "InvalidRequest",
                "The Content-Range header is missing or malformed; expected 'bytes {start}-{end}/{total}'.",
            )
        start, end, total = (int(g) for g in match.groups())
        if total != self.size:
            raise GraphError(
                400, "InvalidRequest", f"Content-Range total {total} does not match the session size {self.size}."
            )
        if end < start or end >= total:
            raise GraphError(400, "InvalidRequest", f"Content-Range {start}-{end} is not a valid range.")
        length = end - start + 1
        if length > MAX_CHUNK_BYTES:
            raise GraphError(
                400,
                "InvalidRequest",
                f"The range is {length} bytes; at most {MAX_CHUNK_BYTES} bytes may be uploaded per request.",
            )
        if content_length is not None and content_length.strip() != str(length):
            raise GraphError(
                400,
                "InvalidRequest",
                f"Content-Length {content_length} does not match the Content-Range length {length}.",
            )
        if len(body) != length:
            raise GraphError(
                400, "InvalidRequest", f"The request body has {len(body)} bytes; Content-Range announces {length}."
            )
        if start != self.received:
            raise GraphError(
                416,
                "InvalidRange",
                f"The range must start at byte {self.received}; got {start}. Bytes must be "
                "uploaded in order without overlap.",
                extra={"nextExpectedRanges": [f"{self.received}-"]},
            )
        self._hasher.update(body)
        room = self.cap - len(self._buffer)
        if room > 0:
            self._buffer += body[:room]
        self.received += length
        if self.received == self.size:
            self.done = True
        return self.done

    @property
    def sha256(self) -> str:
        """Hex sha256 of the bytes received so far."""
        return self._hasher.hexdigest()

    @property
    def content(self) -> bytes:
        """Stored bytes (at most `cap`)."""
        return bytes(self._buffer)
