"""The outgoing log: a connection's messages, newest first (``GET /api/messages?connection_id=...``).

Alloy Navigator's admins read "outgoing notifications" newest first. Delivery records are keyed by the
client's message id, so next to each record its partition holds an index row whose RowKey sorts newest
first (shared/send/deliveries.py ``log_key``). The index row of a message sent from its claim holds its final
record (the send's final write); a waiting message's index row holds its id. A page is one range query over
index rows plus a point read of each waiting message's record: cost grows with the page, never with the
connection's history. A message in flight on its claim is listed from its final state on. With a
``status`` filter a page may hold fewer rows than ``limit`` (at most ``5 x limit`` index rows are examined
per call); the continuation token then resumes where it stopped.
"""

from __future__ import annotations

import base64
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from shared.base import errors
from shared.base.formats import is_safe_key
from shared.send.deliveries import FINAL, LOG_PREFIX, STATUSES, Delivery, log_bound

if TYPE_CHECKING:
    from shared.send.deliveries import DeliveryStore
    from shared.tokens.store import ConnectionStore

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_EXAMINE_FACTOR = 5
_KEY_RE = re.compile(r"^~t[0-9]{13}-[A-Za-z0-9._:-]{1,128}$")


def _encode(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _decode(token: str) -> str:
    try:
        key = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        key = ""
    if not _KEY_RE.fullmatch(key):  # not match: its ``$`` passes a trailing newline
        raise errors.InvalidRequest("continuation is not a token this API returned.")
    return key


def _since(raw: str) -> float:
    """``since`` as epoch seconds: an ISO 8601 UTC time (``2026-12-01T10:00:00Z``) or epoch seconds."""
    try:
        if re.fullmatch(r"[0-9]{1,12}(\.[0-9]+)?", raw):
            return float(raw)
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise errors.InvalidRequest("since must be an ISO 8601 time with a zone (e.g. 2026-12-01T10:00:00Z).")
    return parsed.timestamp()


class OutgoingLogServices(Protocol):
    """What the outgoing log uses of the composition root (shared.services.Services provides it)."""

    connections: ConnectionStore
    deliveries: DeliveryStore


class OutgoingLog:
    def __init__(self, services: OutgoingLogServices) -> None:
        self.s = services

    def page(self, params: dict[str, str]) -> dict[str, Any]:
        connection_id = params.get("connection_id")
        if not connection_id:
            raise errors.InvalidRequest("connection_id query parameter is required.")
        if not is_safe_key(connection_id):
            raise errors.UnknownConnection()
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            raise errors.InvalidRequest(f"status must be one of {sorted(STATUSES)}.")
        try:
            limit = int(params.get("limit") or DEFAULT_LIMIT)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            raise errors.InvalidRequest(f"limit must be an integer from 1 to {MAX_LIMIT}.")
        after = _decode(params["continuation"]) if params.get("continuation") else LOG_PREFIX
        upper = (log_bound(_since(params["since"])) + "~") if params.get("since") else LOG_PREFIX + "~"
        # 404 for an unknown connection (or one of another user_ref, when given), not an empty page
        self.s.connections.get(connection_id, user_ref=params.get("user_ref"))
        rows = self.s.deliveries.table.query_entities(
            "PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi",
            parameters={"pk": connection_id, "lo": after, "hi": upper},
            results_per_page=min(MAX_LIMIT, limit * 2),
        )
        found: list[Delivery] = []
        examined, last_key, more = 0, None, False
        batch: list[tuple[str, Any]] = []
        with ThreadPoolExecutor(max_workers=8) as pool:
            for row in rows:
                if len(found) >= limit or examined >= limit * _EXAMINE_FACTOR:
                    more = True
                    break
                batch.append((row["RowKey"], row))
                examined += 1
                if len(batch) < limit - len(found):
                    continue
                last_key = self._take(pool, connection_id, batch, status, found, limit) or last_key
                batch = []
            if batch:
                last_key = self._take(pool, connection_id, batch, status, found, limit) or last_key
                more = more or len(found) >= limit
        return {
            "connection_id": connection_id,
            "messages": [r.public_view() for r in found],
            "continuation": _encode(last_key) if more and last_key else None,
            "as_of": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def _take(self, pool, connection_id: str, batch, status, found: list[Delivery], limit: int) -> str | None:
        """The records of ``batch``: an index row holding a final record is it; the others are read (in
        parallel). Keeps the matching ones in order; returns the key of the last index row consumed (a page may
        stop inside a batch)."""

        def read(row: Any) -> Delivery | None:
            if row.get("status") in FINAL:
                return Delivery.from_entity(row)
            return self.s.deliveries.get(connection_id, row["message_id"])

        records = list(pool.map(lambda item: read(item[1]), batch))
        last = None
        for (key, _), record in zip(batch, records, strict=True):
            if len(found) >= limit:
                break
            last = key
            if record is not None and (status is None or record.status == status):
                found.append(record)
        return last
