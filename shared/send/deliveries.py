"""Delivery records: one Table row per message (Alloy's "outgoing log"), and the idempotency guard.

PartitionKey = connection id, RowKey = the client's message id; next to each, in the same partition, an
outgoing-log index row (``~t<inverted time>-<message id>``) so ``GET /api/messages?connection_id=`` lists
newest first without scanning.

Two requests per sent email (issue 18): the claim inserts the row already ``sending``, and the final state of a
row stored ``sending`` is written *into its index row* (a full copy of the record, one upsert) instead of
replacing the row and inserting an index row apart; ``get`` reads a ``sending`` row's index row and returns
the final state it holds. One entity-group transaction for the row and its index row would also be one
request, but azure-core prepares and parses every batch on thread pools it builds per call, and it cost more
CPU than two single inserts (docs/benchmarks.md, B1). A row written ``queued`` (accepted over HTTP, paced,
rescheduled, or stopped before its claim) gets a plain index row (the message id) with its first write, so the
log lists waiting messages; that row is inserted marked ``unindexed`` and the mark is dropped by the first
write after the index row exists: a run that died between the two, or whose index insert failed, leaves the
mark and the row's next write inserts the index row first. A message in flight on its claim has no index row
until its final state (or a reschedule): the log shows it from then on. A message whose id or connection id
cannot be read is still recorded, under PartitionKey ``_unreadable`` and RowKey ``queue-<queue message
id>``. Rows move through::

    queued ──> sending ──> sent | failed | unknown
       │  ^       │
       │  └───────┘ (429/503 before anything was applied: back to queued, rescheduled)
       ├──> rejected (validation) / failed (reauth_required, attempts_exhausted)
       └──> canceled (DELETE /api/messages/{id}: ETag-guarded, only from queued; shared/send/intake.py)

``sending`` is written *before* Graph is called, with a lease: whoever inserts the row already ``sending``
(sendMail-only connections: the insert is the claim, one call) or changes ``queued`` to ``sending``
(ETag-guarded) owns the send; a duplicate of the same id sees the row and backs off or acknowledges. Final
states are never left again; the final write names its run (``finished_by``), whose redelivery re-publishes
the event.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.base.errors import MailbridgeError
from shared.base.formats import is_safe_key, iso
from shared.base.settings import DELIVERIES_TABLE
from shared.base.storage import StorageClients
from shared.send.mail_headers import DuplicateInternetMessageId

FINAL = frozenset({"sent", "failed", "unknown", "rejected", "canceled"})
STATUSES = frozenset({"queued", "sending"}) | FINAL
# Outgoing-log index rows share the record's partition: RowKey ``~t<13-digit inverted ms>-<message id>``,
# newest first in key order. '~' sorts after every character a message id may hold, so the index range
# never meets a record's RowKey (shared/send/outgoing_log.py reads it).
LOG_PREFIX = "~t"
_MAX_MS = 9_999_999_999_999


def log_key(created_at: float, message_id: str) -> str:
    return f"{LOG_PREFIX}{_MAX_MS - int(created_at * 1000):013d}-{message_id}"


def log_bound(ts: float) -> str:
    """The index key prefix of time ``ts`` (keys of records created at or after ``ts`` sort at or before it)."""
    return f"{LOG_PREFIX}{_MAX_MS - int(ts * 1000):013d}"


MESSAGE_ID_PREFIX = "~i"  # rows reserving a connection's internet_message_id values (sort before LOG_PREFIX)
UNREADABLE_PARTITION = "_unreadable"
# Insert Entity's ``Prefer: return-no-content``: 204 with the ETag, instead of 201 echoing the entity for the
# SDK to parse (learn.microsoft.com/rest/api/storageservices/setting-the-prefer-header-to-manage-response-echo-on-
# insert-operations).
NO_CONTENT = "return-no-content"

logger = logging.getLogger(__name__)


class RecordContended(Exception):
    """Someone else changed the row between our read and our write (ETag mismatch)."""


@dataclass
class Delivery:
    connection_id: str
    message_id: str
    status: str = "queued"
    attempts: int = 0  # Graph send attempts (requests that could have sent the mail)
    reschedules: int = 0  # times the message was put back on the queue with a delay
    waits: int = 0  # of them, waits for the mailbox's turn or daily budget (not counted against MAX_RESCHEDULES)
    created_at: float = 0.0
    updated_at: float = 0.0
    sending_at: float = 0.0
    completed_at: float = 0.0
    next_attempt_at: float = 0.0
    lease_until: float = 0.0  # while status is sending: the owner is working on it until then
    reason: str = ""  # while queued: why it waits (daily_limit, message_rate, throttled, ...)
    held_since: float = 0.0  # first time the mailbox's budget held it (its turn or its daily recipients)
    mode: str = ""  # sendMail | draft
    phase: str = ""  # draft mode: "" | send_requested
    mailbox: str = ""
    recipients: int = 0
    fingerprint: str = ""
    source: str = "queue"  # queue | http | test
    graph_request_id: str | None = None
    internet_message_id: str | None = None  # the Message-ID its recipients received (draft path; docs/sending.md)
    error_code: str | None = None
    error_message: str | None = None
    error_detail: str | None = None
    error_field: str | None = None
    event_emitted: bool = False  # set by the final write; the event is published right after it
    finished_by: str = ""  # the queue message (run) whose final write this is: its redelivery re-publishes
    callback_queue: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    unindexed: bool = False  # its outgoing-log index row may be missing: the next write inserts it first
    token_refreshed: bool = False  # Graph refused a token and a fresh one was forced for it: another 401 is final
    etag: str = field(default="", repr=False, compare=False)  # of the row as last read or written; not stored
    stored_status: str = field(default="", repr=False, compare=False)  # the row's own status as last read/written
    run: str = field(default="", repr=False, compare=False)  # not stored: the queue message being processed

    @property
    def retries(self) -> int:
        """Reschedules that count against MAX_RESCHEDULES (and the backoff): not the waits for the mailbox."""
        return max(0, self.reschedules - self.waits)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    def make_final(self, status: str, err: MailbridgeError | None, by: str) -> None:
        """The fields of a final write: ``status`` now, no lease or next attempt, the error (or none), the event
        marked published (it goes out right after the write), and who finished it (a run id, ``cancel``, ...)."""
        self.status, self.completed_at = status, time.time()
        self.lease_until = self.next_attempt_at = 0.0
        self.set_error(err)
        self.event_emitted, self.finished_by = True, by

    def set_error(self, err: MailbridgeError | None) -> None:
        if err is None:
            self.error_code = self.error_message = self.error_detail = self.error_field = None
            return
        self.error_code = err.code
        self.error_message = err.message
        self.error_detail = err.detail
        self.error_field = err.extra.get("field")
        self.graph_request_id = err.extra.get("graph_request_id") or self.graph_request_id

    def to_entity(self) -> dict[str, Any]:
        """The row: fields at their default are left out (``from_entity`` restores them; each property costs the
        SDK's serializer CPU on every write), ``status`` always stored. Rows of earlier versions carry every
        field, and no ``unindexed`` mark: they are indexed."""
        data = asdict(self)
        data["metadata"] = json.dumps(self.metadata)
        data.pop("etag")
        data.pop("run")
        data.pop("stored_status")
        data = {k: v for k, v in data.items() if v is not None and (k == "status" or v != _DEFAULTS[k])}
        return {"PartitionKey": self.connection_id, "RowKey": self.message_id, **data}

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> Delivery:
        known = set(cls.__dataclass_fields__)
        data = {k: v for k, v in entity.items() if k in known}
        data["metadata"] = json.loads(entity.get("metadata") or "{}")
        data["etag"] = entity.metadata["etag"]
        return cls(**data, stored_status=data.get("status", "queued"))

    def public_view(self) -> dict[str, Any]:
        """What ``GET /api/messages/{id}`` returns (no internal lease/phase fields)."""
        error = None
        if self.error_code:
            error = {"code": self.error_code, "message": self.error_message}
            if self.error_detail:
                error["detail"] = self.error_detail
            if self.error_field:
                error["field"] = self.error_field
        return {
            "id": self.message_id,
            "connection_id": self.connection_id,
            "status": self.status,
            "attempts": self.attempts,
            "reschedules": self.reschedules,
            "mode": self.mode or None,
            "recipients": self.recipients,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "sending_at": iso(self.sending_at),
            "completed_at": iso(self.completed_at),
            "next_attempt_at": iso(self.next_attempt_at) if self.status == "queued" else None,
            "reason": (self.reason or None) if self.status == "queued" else None,
            "graph_request_id": self.graph_request_id,
            "internet_message_id": self.internet_message_id,
            "error": error,
            "metadata": self.metadata,
        }


_DEFAULTS = {**asdict(Delivery("", "")), "metadata": "{}"}


class DeliveryStore:
    """The ``deliveries`` table."""

    def __init__(self, clients: StorageClients) -> None:
        self.clients = clients

    @property
    def table(self):
        return self.clients.table(DELIVERIES_TABLE)

    def get(self, connection_id: str, message_id: str) -> Delivery | None:
        if not (is_safe_key(connection_id) and is_safe_key(message_id)):
            return None
        try:
            entity = self.table.get_entity(connection_id, message_id)
        except ResourceNotFoundError:
            return None
        record = Delivery.from_entity(entity)
        if record.status == "sending":
            return self._final_of(record) or record
        return record

    def waiting(self, connection_id: str) -> list[Delivery]:
        """The connection's ``queued`` records (scheduled, paced, held): one partition query, index rows left out."""
        rows = self.table.query_entities(
            "PartitionKey eq @pk and RowKey lt @log and status eq 'queued'",
            parameters={"pk": connection_id, "log": MESSAGE_ID_PREFIX},
        )
        return [Delivery.from_entity(row) for row in rows]

    def _final_of(self, record: Delivery) -> Delivery | None:
        """The final state the run of a row stored ``sending`` wrote into its index row, or None (in flight, or
        its run died). The view keeps the row's ETag and stored status: it is never written again."""
        try:
            entity = self.table.get_entity(record.connection_id, log_key(record.created_at, record.message_id))
        except ResourceNotFoundError:
            return None
        if entity.get("status") not in FINAL:
            return None
        final = Delivery.from_entity(entity)
        final.etag, final.stored_status = record.etag, record.stored_status
        return final

    def create(self, record: Delivery) -> bool:
        """Insert the row (insert-if-absent: the id's guard), then, unless it is a claim (``sending``: its final
        state will be its index row), its plain index row; False when a row with these keys already exists
        (someone else owns the id)."""
        record.created_at = record.updated_at = record.created_at or time.time()
        record.unindexed = record.status != "sending"
        try:
            meta = self.table.create_entity(record.to_entity(), response_preference=NO_CONTENT)
        except ResourceExistsError:
            return False
        record.etag, record.stored_status = meta["etag"], record.status
        if record.unindexed:
            self._index(record)
        return True

    def _index(self, record: Delivery) -> None:
        """Insert the record's index row (its key comes from the stored ``created_at``, so a retry writes the same
        row); on success the record's next write drops its ``unindexed`` mark. A Storage failure is logged, not
        raised: the row itself is written, and its next write retries."""
        index = {
            "PartitionKey": record.connection_id,
            "RowKey": log_key(record.created_at, record.message_id),
            "message_id": record.message_id,
        }
        try:
            self.table.create_entity(index, response_preference=NO_CONTENT)
        except ResourceExistsError:
            pass
        except AzureError as exc:
            logger.warning(
                "Outgoing-log index row of message %s not written (%s): the row's next write retries",
                record.message_id,
                type(exc).__name__,
            )
            return
        record.unindexed = False

    def last_logged_at(self, connection_id: str) -> float | None:
        """When the connection's newest message was taken (its outgoing log's first index row), or None. This is
        the connection's ``last_used_at``: read when asked, so the send path writes nothing to the connection row
        for it (issue 18: the first send of an instance made a merge of one property)."""
        rows = self.table.query_entities(
            "PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi",
            parameters={"pk": connection_id, "lo": LOG_PREFIX, "hi": LOG_PREFIX + "~"},
            select=["RowKey"],
            results_per_page=1,
        )
        for row in rows:
            return (_MAX_MS - int(row["RowKey"][len(LOG_PREFIX) : len(LOG_PREFIX) + 13])) / 1000
        return None

    def update(self, record: Delivery, *, force: bool = False) -> None:
        """Replace the row if unchanged since we last saw it (``record.etag``), else RecordContended. The final
        state of a row stored ``sending`` goes into its index row instead (one upsert, no row write)."""
        record.updated_at = time.time()
        if record.is_final and record.stored_status == "sending":
            self._write_final(record)
            return
        if record.unindexed and record.status != "sending":
            self._index(record)
        condition = MatchConditions.Unconditionally if force else MatchConditions.IfNotModified
        try:
            meta = self.table.update_entity(
                record.to_entity(), mode="replace", etag=record.etag or None, match_condition=condition
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            raise RecordContended() from None
        record.etag, record.stored_status = meta["etag"], record.status

    def _write_final(self, record: Delivery) -> None:
        """The record in its final state, as its index row (insert or replace: a plain index row may be there).
        Unconditional, as a forced final write was: the run that owns the send writes the truth."""
        record.unindexed = False
        entity = record.to_entity()
        entity["RowKey"] = log_key(record.created_at, record.message_id)
        self.table.upsert_entity(entity, mode="replace")

    def reserve_internet_message_id(self, connection_id: str, internet_message_id: str, message_id: str) -> None:
        """Make ``internet_message_id`` this message's within the connection (a Message-ID names one message): a
        row ``~i<sha256>`` in the connection's partition, insert-if-absent; DuplicateInternetMessageId when another
        message id holds it. One request, for messages that ask for a Message-ID only; the row sorts before the
        outgoing log's ``~t`` range."""
        digest = hashlib.sha256(internet_message_id.encode("utf-8")).hexdigest()[:40]
        row = {"PartitionKey": connection_id, "RowKey": f"{MESSAGE_ID_PREFIX}{digest}", "message_id": message_id}
        try:
            self.table.create_entity(row, response_preference=NO_CONTENT)
            return
        except ResourceExistsError:
            pass
        held = self.table.get_entity(connection_id, row["RowKey"]).get("message_id")
        if held != message_id:
            raise DuplicateInternetMessageId(field="internet_message_id")

    def delete(self, connection_id: str, message_id: str) -> None:
        try:
            self.table.delete_entity(connection_id, message_id)
        except ResourceNotFoundError:
            pass
