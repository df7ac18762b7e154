"""Large attachments through an upload session that resumes (Graph "attach large files", issue 27).

``createUploadSession`` gets an ``AttachmentItem`` with ``isInline`` and ``contentId`` when the attachment has a
content id (attachmentItem resource), so a ``cid:`` image of 3 MB or more arrives inline, not as a loose file.

The bytes go up in ranges of :data:`shared.send.graph.UPLOAD_CHUNK_BYTES`, in order, without an Authorization
header. A PUT that Graph refuses before applying it (429, 503, another 5xx, a connection failure) does not
restart the draft: the session's ``nextExpectedRanges`` (the uploadSession resource; read with ``GET`` on the
upload URL, which Graph's SDK upload task uses to resume, or from a 416's body) says where to continue, within the
session's lifetime, and only the bytes from there are sent again. After :data:`MAX_RESUMES` refusals of one
session the error is raised as before (the sender reschedules; the draft starts over).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import requests

from shared.base import errors
from shared.send.graph import UPLOAD_TIMEOUT, GraphClient, _segment, retry_after_seconds

logger = logging.getLogger(__name__)

MAX_RESUMES = 5
MAX_RESUME_WAIT_S = 30.0  # a longer Retry-After is the sender's to wait (a reschedule), not this worker's


def upload(
    graph: GraphClient,
    token: str,
    draft_id: str,
    att: Any,
    size: int,
    chunks: Iterable[bytes],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """createUploadSession for ``att`` (``size`` bytes) on the draft, then PUT ``chunks`` in order, resuming
    from ``nextExpectedRanges`` after a refused PUT."""
    item: dict[str, Any] = {"attachmentType": "file", "name": att.name, "size": size, "contentType": att.content_type}
    if att.content_id:
        item |= {"isInline": True, "contentId": att.content_id}
    session = graph.call(
        "POST",
        f"{graph.base}/me/messages/{_segment(draft_id)}/attachments/createUploadSession",
        token,
        json={"AttachmentItem": item},
        changes_state=False,
    )
    assert session.body is not None
    url = str(session.body["uploadUrl"])
    offset, resumes = 0, 0
    for chunk in chunks:
        start, end = offset, offset + len(chunk)  # this chunk holds bytes [start, end)
        while offset < end:
            try:
                _put(graph, url, chunk[offset - start :], offset, size)
                offset = end
            except errors.TransientError as exc:  # refused before it was applied (429, 503, 5xx, no connection)
                resumes += 1
                if resumes > MAX_RESUMES:
                    raise
                wait = float(exc.extra.get("retry_after") or 1.0)
                if wait > MAX_RESUME_WAIT_S:
                    raise
                sleep(wait)
                offset = _next_expected(graph, url, offset)
                if offset < start:  # the session lost bytes of an earlier chunk: they are gone from the stream
                    raise errors.TemporarilyUnavailable(
                        detail=f"the upload session wants byte {offset}, before this range ({start})"
                    ) from None
                logger.info("Upload of a draft attachment resumes at byte %d of %d", offset, size)
    if offset != size:
        raise errors.TemporarilyUnavailable(detail=f"attachment stream ended at {offset} of {size} bytes")


def _put(graph: GraphClient, url: str, data: bytes, offset: int, size: int) -> None:
    graph.call(
        "PUT",
        url,
        None,  # upload URLs are pre-authenticated and must not get a token
        data=data,
        headers={
            "Content-Range": f"bytes {offset}-{offset + len(data) - 1}/{size}",
            "Content-Type": "application/octet-stream",
        },
        changes_state=False,  # nothing is sent before the draft's /send
        timeout=UPLOAD_TIMEOUT,
    )


def _next_expected(graph: GraphClient, url: str, fallback: int) -> int:
    """The first byte the session expects (``nextExpectedRanges[0]``, ``"start-"`` or ``"start-end"``)."""
    try:
        resp = graph.session.get(url, timeout=UPLOAD_TIMEOUT, allow_redirects=False)
    except requests.RequestException:
        return fallback  # the same range again: Graph applies nothing of a refused PUT
    if resp.status_code != 200:
        wait = retry_after_seconds(resp.headers.get("Retry-After"), 0.0)
        raise errors.TemporarilyUnavailable(
            detail=f"upload session status {resp.status_code}", retry_after=wait or None
        )
    try:
        ranges = resp.json().get("nextExpectedRanges") or []
        return int(str(ranges[0]).split("-", 1)[0])
    except (ValueError, IndexError, AttributeError):
        return fallback
