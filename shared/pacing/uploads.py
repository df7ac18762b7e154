"""Graph's upload limit of one mailbox, shared by every instance (issue 27): "150 megabytes (MB) upload (PATCH,
POST, PUT) in a 5-minute period" per app and mailbox (learn.microsoft.com/graph/throttling-limits, Outlook service
limits; MB read as 10^6 bytes, the stricter reading). Six 40 MB messages to one mailbox would cross it at the
fourth and meet 429s part-way through an upload; paced here, the fourth waits until enough of the first has left
the window, and none meets a 429.

A message that uploads (:func:`shared.send.limits.upload_bytes`, 0 for the common small message: no Storage
call) reserves its bytes in the mailbox's ``uploads`` row of the budget table (beside the message budget's row,
same partition) with an ETag-conditional write: ``{"u": [[leave_at, bytes, tag], ...]}``. An entry leaves the
window ``upload_window_s`` after its attempt ends (:meth:`UploadBudget.finish` stamps that; until then it leaves a
window after the reservation plus the time the attempt may take, ``grace_s``), so bytes Graph counts late in a long
upload still count here. One message over the whole budget goes alone into an empty window.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from typing import Any

from shared.pacing import budget_row as row
from shared.pacing.budget_row import Limits

logger = logging.getLogger(__name__)

UPLOADS_ROW = "uploads"
UPLOAD_WAIT_MARGIN_S = 0.5  # past the moment enough bytes leave: Graph's window and our clock differ a little


class UploadBudget:
    """``reserve(key, lim, nbytes) -> (wait, tag)``: 0 and a tag (the bytes are counted), or how long to wait.
    ``finish(key, lim, tag)``: the attempt is over; its bytes leave a window from now."""

    def __init__(self, table: Callable[[], Any], clock: Callable[[], float], count_call: Callable[[str], None]):
        self.table = table
        self.clock = clock
        self.count_call = count_call

    def reserve(self, key: str, lim: Limits, nbytes: int, grace_s: float) -> tuple[float, str | None]:
        for _ in range(row.WRITE_ATTEMPTS):
            self.count_call("read uploads")
            state, etag = row.read(self.table(), key, row_key=UPLOADS_ROW, empty={"u": []})
            now = self.clock()
            live = sorted(e for e in state["u"] if e[0] > now)
            used = sum(int(e[1]) for e in live)
            over = used + nbytes - lim.upload_bytes_per_window
            if used and over > 0:  # wait until the oldest entries free enough (all of them: one over the budget)
                return row.wait_until_freed(live, over, now, UPLOAD_WAIT_MARGIN_S), None
            tag = uuid.uuid4().hex[:8]
            state = {"u": [*live, [now + lim.upload_window_s + grace_s, nbytes, tag]]}
            self.count_call("reserve uploads")
            if row.write(self.table(), key, state, etag, row_key=UPLOADS_ROW) is not None:
                return 0.0, tag
        logger.warning("Upload budget row of a mailbox stayed contended after %d attempts", row.WRITE_ATTEMPTS)
        return random.uniform(0.5, 1.5), None

    def finish(self, key: str, lim: Limits, tag: str) -> None:
        """Move the entry's leave time to a window from now (the attempt's last bytes reached Graph by now). Never
        raises: on Storage trouble the entry keeps its reservation-time estimate."""
        try:
            for _ in range(row.WRITE_ATTEMPTS):
                self.count_call("finish uploads")
                state, etag = row.read(self.table(), key, row_key=UPLOADS_ROW, empty={"u": []})
                now = self.clock()
                entries = [e for e in state["u"] if e[0] > now]
                for entry in entries:
                    if entry[2] == tag:
                        entry[0] = now + lim.upload_window_s  # the in-flight estimate ends here
                if row.write(self.table(), key, {"u": entries}, etag, row_key=UPLOADS_ROW) is not None:
                    return
        except Exception as exc:  # noqa: BLE001  (the report must not fail the send it follows)
            logger.warning("Upload budget of a mailbox not stamped (%s)", type(exc).__name__)
