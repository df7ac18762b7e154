"""The parking lot: queue messages that must wait longer than PARK_AFTER_SECONDS (scheduled sends, daily-limit
holds, long pacing waits), kept out of the trigger queue until they are due.

Why: Flex Consumption scales a queue trigger on the queue's length (target-based scaling: desired instances =
queue length / target executions per instance, learn.microsoft.com/azure/azure-functions/
functions-target-based-scaling), and Azure Storage's ApproximateMessagesCount counts invisible messages too. A
wait put back on the queue with a visibility delay is one more message voting for an instance that finds nothing
to do; 5,000 held messages would ask for hundreds. Parked, the trigger queue holds only due work and short waits.

Table ``parkedmessages``: PartitionKey = the due time's minute (``bucket``: minutes since the epoch, ten digits,
so key order is time order), RowKey = due time in ms + a random suffix, ``due`` (Edm.Double) and the queue
message's text as UTF-8 in Edm.Binary chunks (``m0``, ``m1``: a binary property holds at most 64 KiB, a queue
message up to 64 KiB; a string property would hold only 32K UTF-16 characters). Rows are deleted once moved, so
the keys up to now's bucket hold only rows that are due (or due later within the current minute).

The mover (:meth:`ParkingLot.move_due`, the timer in blueprints/parking.py, one instance at a time by the
Functions host's timer lock) reads the due rows oldest first, enqueues each on the outbound queue, then deletes
it (ETag-guarded). At least once: a mover that dies between the two leaves the row, and the next run enqueues it
again. A second copy is harmless: the delivery row is the message's idempotency record (shared/send/ledger.py),
so a copy finds it ``sending`` (backs off) or final (acknowledged, not sent again). Never early: only rows with
``due <= now`` move, and the sender checks ``send_at`` again on every copy (shared/send/schedule.py).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from shared.base.settings import PARKED_TABLE, Settings
from shared.base.storage import StorageClients

logger = logging.getLogger(__name__)

PARK_AFTER_SECONDS = 30.0  # a wait up to this long stays a visibility delay on the queue; longer ones park
BUCKET_SECONDS = 60  # one partition per minute of due time
CHUNK_BYTES = 32 * 1024  # Edm.Binary properties hold at most 64 KiB; a queue message is at most 64 KiB
MOVE_MAX_ROWS = 2000  # per run of the mover (a backlog that came due at once moves over several runs)
MOVE_RUN_SECONDS = 20.0  # the mover stops reading after this long (host.json functionTimeout is 10 minutes)
MOVE_CONCURRENCY = 8  # enqueue + delete pairs in flight
MESSAGE_TTL_SECONDS = 7 * 86400
NO_CONTENT = "return-no-content"  # Insert Entity's Prefer header: 204 instead of the entity echoed back


def bucket(due: float) -> str:
    """The partition of a due time: its minute since the epoch, zero-padded (key order = time order)."""
    return f"{int(due) // BUCKET_SECONDS:010d}"


@dataclass
class MoveReport:
    moved: int = 0
    lost_race: int = 0  # rows another mover (or a retry) moved or deleted first: their copy is on the queue
    more: bool = False  # stopped at MOVE_MAX_ROWS or MOVE_RUN_SECONDS with due rows left

    def as_dict(self) -> dict[str, int | bool]:
        return {"moved": self.moved, "lost_race": self.lost_race, "more": self.more}


class ParkingLot:
    """Park a queue message until a due time; move due ones back to the outbound queue."""

    def __init__(self, settings: Settings, storage: StorageClients) -> None:
        self.settings = settings
        self.storage = storage

    @property
    def table(self):
        return self.storage.table(PARKED_TABLE)

    def put(self, text: str, delay: float = 0.0) -> None:
        """``text`` on the outbound queue, invisible for ``delay`` seconds; a wait over PARK_AFTER_SECONDS parked."""
        if delay > PARK_AFTER_SECONDS:
            self.park(text, time.time() + delay)
            return
        visibility = math.ceil(delay) if delay > 0 else None
        self.storage.queue(self.settings.outbound_queue).send_message(
            text, visibility_timeout=visibility, time_to_live=MESSAGE_TTL_SECONDS
        )

    def park(self, text: str, due: float) -> None:
        """Keep ``text`` (a queue message) out of the queue until ``due`` (Unix time)."""
        self.table.create_entity(_entity(text, due), response_preference=NO_CONTENT)

    def park_many(self, items: list[tuple[str, float]]) -> None:
        """Park many messages at once: one entity-group transaction per partition and 100 rows (a bulk load, for
        the benches and tests; the send path parks one message at a time)."""
        by_bucket: dict[str, list[dict[str, object]]] = {}
        for text, due in items:
            by_bucket.setdefault(bucket(due), []).append(_entity(text, due))
        for rows in by_bucket.values():
            for i in range(0, len(rows), 100):
                self.table.submit_transaction([("create", row) for row in rows[i : i + 100]])

    def due_rows(self, now: float, limit: int) -> list[dict]:
        """Up to ``limit`` rows due at ``now``, oldest first (partitions up to now's minute only)."""
        rows = self.table.query_entities(
            "PartitionKey le @bucket and due le @now",
            parameters={"bucket": bucket(now), "now": float(now)},
            results_per_page=min(limit, 1000),
        )
        found: list[dict] = []
        for row in rows:
            found.append(row)
            if len(found) >= limit:
                break
        return found

    def move_due(
        self, now: float | None = None, max_rows: int = MOVE_MAX_ROWS, budget_seconds: float = MOVE_RUN_SECONDS
    ) -> MoveReport:
        """Enqueue every row due at ``now`` (default: the clock), then delete it; at most ``max_rows`` and about
        ``budget_seconds`` per call."""
        started = time.monotonic()
        report = MoveReport()
        rows = self.due_rows(time.time() if now is None else now, max_rows)
        report.more = len(rows) >= max_rows
        with ThreadPoolExecutor(MOVE_CONCURRENCY, thread_name_prefix="parking") as pool:
            for moved in pool.map(lambda row: self._move(row, started + budget_seconds), rows):
                if moved is None:
                    report.more = True
                elif moved:
                    report.moved += 1
                else:
                    report.lost_race += 1
        return report

    def _move(self, row: dict, deadline: float) -> bool | None:
        """One row back on the queue, then deleted. True: moved; False: someone deleted it first; None: left for
        the next run (out of time)."""
        if time.monotonic() > deadline:
            return None
        self.storage.queue(self.settings.outbound_queue).send_message(_text(row), time_to_live=MESSAGE_TTL_SECONDS)
        try:
            self.table.delete_entity(
                row["PartitionKey"],
                row["RowKey"],
                etag=row.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceNotFoundError, ResourceModifiedError):
            return False
        return True

    def count(self) -> int:
        """Rows parked, due or not (an operator's and the tests' view: reads the whole table)."""
        return sum(1 for _ in self.table.list_entities(select=["PartitionKey"]))


def _entity(text: str, due: float) -> dict[str, object]:
    data = text.encode("utf-8")
    entity: dict[str, object] = {
        "PartitionKey": bucket(due),
        "RowKey": f"{int(due * 1000):013d}-{uuid.uuid4().hex}",
        "due": float(due),
    }
    for i in range(0, max(1, len(data)), CHUNK_BYTES):
        entity[f"m{i // CHUNK_BYTES}"] = data[i : i + CHUNK_BYTES]
    return entity


def _text(row: dict) -> str:
    """The queue message a row holds (its chunks ``m0``, ``m1``, ... in order). A row this module did not write
    (a string property, bytes that are not UTF-8) still gives text: moved like any row, the sender rejects it
    (invalid_json) instead of every mover run raising on it while it stays parked."""
    chunks = []
    while f"m{len(chunks)}" in row:
        value = row[f"m{len(chunks)}"]
        chunks.append(bytes(value) if isinstance(value, bytes | bytearray) else str(value).encode("utf-8"))
    return b"".join(chunks).decode("utf-8", errors="replace")
