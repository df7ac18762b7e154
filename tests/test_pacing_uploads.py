"""Graph's upload limit in the shared per-mailbox budget (shared/pacing/uploads.py), on real Azurite with a clock
the test moves: reservations wait for the oldest bytes to leave, an attempt's bytes leave a window after it ends,
and one message over the whole budget goes alone into an empty window."""

from __future__ import annotations

import uuid

from shared.pacing.budget_row import BUDGETS_TABLE, Limits
from shared.pacing.uploads import UPLOAD_WAIT_MARGIN_S, UploadBudget
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)

LIM = Limits(upload_bytes_per_window=100, upload_window_s=300.0)


def _budget(kit, now: list[float]) -> UploadBudget:
    return UploadBudget(lambda: kit.services.storage.table(BUDGETS_TABLE), lambda: now[0], lambda why: None)


def test_reservations_wait_for_the_oldest_bytes_and_leave_a_window_after_the_attempt(send_kit):
    kit = send_kit()
    kit.services.budget  # noqa: B018  (creates the budget table)
    now, key = [1000.0], f"t|{uuid.uuid4().hex}"
    uploads = _budget(kit, now)
    wait, first = uploads.reserve(key, LIM, 40, grace_s=30.0)
    assert wait == 0 and first
    now[0] += 10
    assert uploads.reserve(key, LIM, 40, grace_s=30.0)[0] == 0
    now[0] += 10
    wait, tag = uploads.reserve(key, LIM, 40, grace_s=30.0)  # 120 > 100: until the first leaves
    assert tag is None and wait == (1000 + 300 + 30) - now[0] + UPLOAD_WAIT_MARGIN_S
    uploads.finish(key, LIM, first)  # the first attempt ended now: its bytes leave a window from now
    assert uploads.reserve(key, LIM, 40, grace_s=30.0)[0] == 300 + UPLOAD_WAIT_MARGIN_S
    now[0] += 301
    assert uploads.reserve(key, LIM, 40, grace_s=30.0)[0] == 0


def test_one_message_over_the_whole_budget_goes_alone(send_kit):
    kit = send_kit()
    kit.services.budget  # noqa: B018
    now, key = [5000.0], f"t|{uuid.uuid4().hex}"
    uploads = _budget(kit, now)
    assert uploads.reserve(key, LIM, 10, grace_s=0.0)[0] == 0
    wait, tag = uploads.reserve(key, LIM, 150, grace_s=0.0)  # over the budget: waits for an empty window
    assert tag is None and wait == 300 + UPLOAD_WAIT_MARGIN_S
    now[0] += 301
    assert uploads.reserve(key, LIM, 150, grace_s=0.0)[0] == 0
