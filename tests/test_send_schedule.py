"""Scheduled send (``send_at``), cancel (DELETE /api/messages/{id}) and the parking lot that keeps waiting work
out of the trigger queue (issue 28 items 1 and 2), against real Azurite and the emulator.

Races are forced, not hoped for: a cancel is run from inside the sender's own row write (before or after the
claim) so each interleaving happens every time. The clock of the schedule check is moved instead of sleeping
where a test needs a message due; the two-instance test uses short real delays and asserts only order (the
emulator's delivery time is never before send_at), never speed."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from shared.base.settings import PARKED_TABLE
from shared.send import schedule
from shared.send.parking import ParkingLot, bucket
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def post(kit, message: dict) -> tuple[int, dict]:
    resp = kit.mb.http("enqueue_message", "POST", body=message)
    return resp.status_code, kit.mb.json(resp)


def cancel(kit, cid: str, mid: str) -> tuple[int, dict]:
    resp = kit.mb.http("cancel_message", "DELETE", route_params={"message_id": mid}, params={"connection_id": cid})
    return resp.status_code, kit.mb.json(resp)


def status(kit, cid: str, mid: str) -> dict:
    resp = kit.mb.http("get_message", route_params={"message_id": mid}, params={"connection_id": cid})
    return kit.mb.json(resp)


def lot(kit) -> ParkingLot:
    return ParkingLot(kit.services.settings, kit.services.storage)


def clear_lot(kit) -> None:
    table = kit.services.storage.table(PARKED_TABLE)
    for row in table.list_entities(select=["PartitionKey", "RowKey"]):
        table.delete_entity(row["PartitionKey"], row["RowKey"])


def scheduled(send_kit, ahead: int = 600):
    """A kit whose alice has one message accepted over HTTP to be sent ``ahead`` seconds from now, the lot empty."""
    kit = send_kit()
    cid = kit.connect("alice")
    clear_lot(kit)
    due = int(time.time()) + ahead
    msg = kit.message(cid, send_at=rfc3339(due))
    assert post(kit, msg)[0] == 202
    return kit, cid, msg, due


def delivered(kit, user: str, mid: str) -> int:
    return kit.mb.admin.delivered(kit.address(user))["counts_by_key"].get(mid, 0)


@pytest.fixture
def clock(monkeypatch):
    """Move the clock the schedule check reads (shared/send/schedule.py) to a given time."""

    def at(ts: float) -> None:
        monkeypatch.setattr(schedule, "time", SimpleNamespace(time=lambda: ts))

    return at


def test_send_at_must_be_rfc3339_utc_from_now_to_30_days(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    now = time.time()
    day = rfc3339(now + 86400)[:10]  # tomorrow: every form below is refused for its form, not for its range
    for bad, why in [
        (rfc3339(now - 3600), "in the past"),
        (rfc3339(now + 31 * 86400), "more than 30 days ahead"),
        (f"{day} 09:00:00Z", None),
        (f"{day}T09:00:00+02:00", None),
        (f"{day[:8]}32T09:00:00Z", None),  # a day that does not exist
        (1893456000, None),
        # What the review of 2026-12-07 probed: a leap second, other offsets, 7 fractional digits, lower case.
        (f"{day}T23:59:60Z", None),
        (f"{day}T09:00:00-00:00", None),
        (f"{day}T09:00:00.1234567Z", None),
        (f"{day}t09:00:00z", None),
        ("9999-12-31T23:59:59Z", "more than 30 days ahead"),
    ]:
        code, body = post(kit, kit.message(cid, send_at=bad))
        assert code == 400 and body["error"]["code"] == "invalid_send_at", (bad, body)
        assert body["error"].get("field") == "send_at"
        if why:
            assert body["error"]["detail"] == f"send_at is {why}"
    assert post(kit, kit.message(cid, send_at=f"{day}T09:00:00.123456Z"))[0] == 202  # the accepted form, same day
    # On the queue: out of range ahead is recorded rejected with the same code; nothing is sent or parked.
    far = kit.message(cid, send_at=rfc3339(now + 31 * 86400))
    out = kit.services.sender.handle_queue_message(json.dumps(far), "q-far")
    assert out.status == "rejected" and out.error.code == "invalid_send_at"
    assert kit.events_for(far["id"])[0]["data"]["error"]["code"] == "invalid_send_at"
    # A send_at just in the past (clock skew, or a queue backlog) is sent at once.
    late = kit.message(cid, send_at=rfc3339(now - 10))
    code, body = post(kit, late)
    assert code == 202, body


def test_a_scheduled_message_waits_parked_visible_then_is_sent_when_due_never_before(send_kit, clock):
    kit = send_kit()
    cid = kit.connect("alice")
    clear_lot(kit)
    due = int(time.time()) + 3600
    msg = kit.message(cid, send_at=rfc3339(due))
    code, body = post(kit, msg)
    assert code == 202 and body["status"] == "queued"
    view = status(kit, cid, msg["id"])
    assert (view["status"], view["reason"], view["next_attempt_at"]) == ("queued", "scheduled", rfc3339(due))
    assert kit.queue_length() == 0, "a wait of an hour is not an invisible message on the trigger queue"
    assert lot(kit).count() == 1
    logged = kit.mb.json(kit.mb.http("list_messages", params={"connection_id": cid}))
    assert msg["id"] in [m["id"] for m in logged["messages"]]
    # The mover leaves it before its time: nothing due.
    assert lot(kit).move_due(now=due - 1).moved == 0 and kit.queue_length() == 0
    # A copy read early (a producer's duplicate on the queue, an instance whose mover ran early) is held again.
    clock(due - 5)
    early = kit.services.sender.handle_queue_message(json.dumps(msg), "q-early")
    assert early.status == "queued" and 0 < early.delay <= 5
    assert delivered(kit, "alice", msg["id"]) == 0
    # Due: moved to the queue, sent once.
    assert lot(kit).move_due(now=due + 1).moved >= 1
    clock(due + 1)
    with kit.listener():
        rec = kit.wait_final([(cid, msg["id"])])[(cid, msg["id"])]
    assert rec.status == "sent" and rec.sending_at >= 0
    assert delivered(kit, "alice", msg["id"]) == 1


def test_a_parked_wait_comes_back_through_the_mover_timer_while_the_app_runs(send_kit):
    """CI failure of stop 29: the soak ended with a message ``queued`` and never sent. A transient error without
    Retry-After backs off 5 s * 2^retries, so the fourth retry waits over PARK_AFTER_SECONDS and is parked; the
    test listener ran the queue functions but not the mover timer the host runs beside them, so nothing ever
    brought it back. The app's mover (move_parked_messages, every 5 s) now runs with the listener, as in the host."""
    kit = send_kit()
    cid = kit.connect("alice")
    msg = kit.message(cid)
    kit.services.sender.parking.park(json.dumps(msg), time.time() + 1)  # what the sender does with a long backoff
    with kit.listener():
        rec = kit.wait_final([(cid, msg["id"])], timeout=30)[(cid, msg["id"])]
    assert rec.status == "sent"
    assert delivered(kit, "alice", msg["id"]) == 1
    assert lot(kit).count() == 0


def test_a_scheduled_queue_message_is_parked_on_first_sight_with_its_row(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    clear_lot(kit)
    msg = kit.message(cid, send_at=rfc3339(time.time() + 7200))
    out = kit.services.sender.handle_queue_message(json.dumps(msg), "q-1")
    assert out.status == "queued" and out.delay > 7000
    assert (status(kit, cid, msg["id"])["reason"], kit.queue_length(), lot(kit).count()) == ("scheduled", 0, 1)


def test_a_daily_limit_hold_is_parked_not_left_invisible_on_the_queue(send_kit):
    kit = send_kit(MAILBOX_RECIPIENTS_PER_DAY="1", MAILBOX_RECIPIENT_WINDOW_SECONDS="3600")
    cid = kit.connect("alice")
    clear_lot(kit)
    first, second = kit.message(cid), kit.message(cid)
    assert kit.services.sender.handle_queue_message(json.dumps(first), "q-1").status == "sent"
    held = kit.services.sender.handle_queue_message(json.dumps(second), "q-2")
    assert held.status == "queued" and held.delay > 3000
    assert kit.queue_length() == 0 and lot(kit).count() == 1
    (row,) = list(kit.services.storage.table(PARKED_TABLE).list_entities())
    assert row["PartitionKey"] == bucket(row["due"]) and row["due"] >= time.time() + 3000


def test_cancel_a_scheduled_message_then_its_moved_copy_is_dropped(send_kit, clock):
    kit, cid, msg, due = scheduled(send_kit)
    code, body = cancel(kit, cid, msg["id"])
    assert code == 200 and body["status"] == "canceled"
    assert cancel(kit, cid, msg["id"]) == (200, body)  # canceling again answers the same record
    events = kit.events_for(msg["id"])
    assert [e["type"] for e in events] == ["mailbridge.message.canceled"]
    logged = kit.mb.json(kit.mb.http("list_messages", params={"connection_id": cid, "status": "canceled"}))
    assert [m["id"] for m in logged["messages"]] == [msg["id"]]
    lot(kit).move_due(now=due + 1)
    clock(due + 1)
    out = kit.services.sender.process(json.dumps(msg), "q-moved")
    assert out.status == "duplicate" and kit.record(cid, msg["id"]).status == "canceled"
    assert delivered(kit, "alice", msg["id"]) == 0
    assert [e["type"] for e in kit.events_for(msg["id"])] == ["mailbridge.message.canceled"]
    # Unknown id: 404 with the not-found code; no connection_id: 400.
    code, body = cancel(kit, cid, "no-such-id")
    assert code == 404 and body["error"]["code"] == "not_found"
    resp = kit.mb.http("cancel_message", "DELETE", route_params={"message_id": msg["id"]})
    assert resp.status_code == 400


@pytest.mark.parametrize("cancel_first", [True, False])
def test_cancel_races_the_moved_copy_and_exactly_one_wins(send_kit, clock, monkeypatch, cancel_first):
    """The moved copy's worker has read the row ``queued``; the cancel lands just before its claim (the claim's
    ETag fails: not sent, canceled) or just after it (409 not_cancelable: sent)."""
    kit, cid, msg, due = scheduled(send_kit)
    deliveries = kit.services.deliveries
    real_update = deliveries.update
    seen: list[tuple[int, dict]] = []

    def update(record, *, force=False):
        claim = record.message_id == msg["id"] and record.status == "sending" and not seen
        if claim and cancel_first:
            seen.append(cancel(kit, cid, msg["id"]))
        real_update(record, force=force)
        if claim and not cancel_first:
            seen.append(cancel(kit, cid, msg["id"]))

    monkeypatch.setattr(deliveries, "update", update)
    assert lot(kit).move_due(now=due + 1).moved == 1
    clock(due + 1)
    with kit.listener():
        rec = kit.wait_final([(cid, msg["id"])])[(cid, msg["id"])]
    assert len(seen) == 1
    if cancel_first:
        assert seen[0][0] == 200 and rec.status == "canceled"
        assert delivered(kit, "alice", msg["id"]) == 0, "a canceled message is never sent"
    else:
        assert seen[0][0] == 409 and seen[0][1]["error"]["code"] == "not_cancelable"
        assert rec.status == "sent" and delivered(kit, "alice", msg["id"]) == 1


def test_a_sent_message_is_not_cancelable(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    msg = kit.message(cid)
    assert kit.services.sender.process(msg, "q-1").status == "sent"
    code, body = cancel(kit, cid, msg["id"])
    assert code == 409 and body["error"]["code"] == "not_cancelable"


def test_the_mover_is_at_least_once_and_a_second_copy_is_harmless(send_kit, clock, monkeypatch):
    kit, cid, msg, due = scheduled(send_kit)
    parking = lot(kit)
    table = parking.table

    def die(*args, **kwargs):
        raise RuntimeError("the mover's instance died after enqueueing")

    with monkeypatch.context() as patched, pytest.raises(RuntimeError):
        patched.setattr(type(table), "delete_entity", die)
        parking.move_due(now=due + 1)
    clock(due + 1)
    assert parking.count() == 1 and kit.queue_length() == 1
    assert parking.move_due(now=due + 1).moved == 1  # the next run moves it again: two copies on the queue
    assert kit.queue_length() == 2 and parking.count() == 0
    with kit.listener():
        kit.wait_final([(cid, msg["id"])])
        kit.wait_until(lambda: kit.queue_length() == 0)
    assert delivered(kit, "alice", msg["id"]) == 1


def test_a_disconnect_finishes_the_waiting_messages_of_the_connection_at_once(send_kit, clock):
    """Issue 28: a disconnect ends the connection's waiting messages now (rejected unknown_connection, one event
    each), not when each comes due (up to 30 days for send_at); the copy moved later is dropped, never sent."""
    kit, cid, msg, due = scheduled(send_kit)
    other = kit.message(cid, send_at=rfc3339(due + 60))
    assert post(kit, other)[0] == 202
    gone = kit.mb.http("delete_connection", "DELETE", route_params={"connection_id": cid})
    assert gone.status_code == 200
    for mid in (msg["id"], other["id"]):
        record = status(kit, cid, mid)
        assert (record["status"], record["error"]["code"]) == ("rejected", "unknown_connection"), record
        assert [e["type"] for e in kit.events_for(mid)] == ["mailbridge.message.rejected"]
    lot(kit).move_due(now=due + 1)
    clock(due + 1)
    kit.services.sender.process(json.dumps(msg), "q-moved")
    assert delivered(kit, "alice", msg["id"]) == 0
    assert len(kit.events_for(msg["id"])) == 1  # the moved copy adds no second outcome


def test_a_cancel_between_a_workers_read_and_its_final_write_stands(send_kit, clock, monkeypatch):
    """A worker read the row ``queued``, then a cancel lands, then the worker records an outcome that sent
    nothing (here: the grant is dead): the cancel is the message's outcome, with its one event."""
    kit = send_kit()
    cid = kit.connect("alice")
    due = int(time.time()) + 600
    msg = kit.message(cid, send_at=rfc3339(due))
    assert post(kit, msg)[0] == 202
    conn = kit.services.connections.get(cid)  # the worker will find the grant dead: an outcome that sent nothing
    conn.status = "reauth_required"
    kit.services.connections.save(conn)
    deliveries = kit.services.deliveries
    real_update = deliveries.update
    seen: list[tuple[int, dict]] = []

    def update(record, *, force=False):
        if record.message_id == msg["id"] and record.status == "failed" and not seen:
            seen.append(cancel(kit, cid, msg["id"]))
        real_update(record, force=force)

    monkeypatch.setattr(deliveries, "update", update)
    clock(due + 1)
    out = kit.services.sender.process(json.dumps(msg), "q-moved")
    assert seen and seen[0][0] == 200
    assert out.status == "duplicate" and kit.record(cid, msg["id"]).status == "canceled"
    assert [e["type"] for e in kit.events_for(msg["id"])] == ["mailbridge.message.canceled"]


def test_5000_parked_messages_and_a_trickle_keep_the_trigger_queue_short(send_kit):
    """Issue 28 item 1: the trigger queue's approximate length (what Flex's scaler divides) stays under 50 with
    5,000 waiting messages, while a trickle of due ones is moved and sent."""
    kit = send_kit()
    cid = kit.connect("alice")
    clear_lot(kit)
    parking = lot(kit)
    now = time.time()
    waiting = [json.dumps(kit.message(cid, send_at=rfc3339(now + 600 + i))) for i in range(5000)]
    parking.park_many([(text, now + 600 + i) for i, text in enumerate(waiting)])
    trickle = [kit.message(cid, id=f"trickle-{i:02d}") for i in range(20)]
    for i, m in enumerate(trickle):  # due over the next few seconds, as pacing or holds would leave them
        kit.services.sender.parking.park(json.dumps(m), now + 0.3 * i)
    assert parking.count() == 5020
    lengths = []
    with kit.listener():  # with the app's mover timer (every 5 s), the one mover, as in the host
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lengths.append(kit.queue_length())
            recs = [kit.record(cid, m["id"]) for m in trickle]
            if all(r is not None and r.status == "sent" for r in recs):
                break
            time.sleep(0.2)
    assert all(r is not None and r.status == "sent" for r in recs)
    assert max(lengths) < 50, lengths
    assert parking.count() == 5000, "the waiting ones stay parked until due"


@pytest.mark.slow
def test_two_instances_never_send_a_scheduled_message_early_and_never_send_a_canceled_one(send_kit, tmp_path):
    """Two devhost processes (two Functions instances: queue trigger, and the mover timer on whichever holds its
    lock). One message due in a few seconds waits as a visibility delay, one due past the parking bound waits in
    the parking lot, a producer's duplicate of it arrives on the queue at once, and a third is canceled while
    parked. Asserted: order only (Graph's delivery time and the row's sending time never before send_at)."""
    from bench.fleet import Fleet

    kit = send_kit()
    cid = kit.connect("alice")
    clear_lot(kit)
    now = time.time()
    soon = kit.message(cid, id="sched-soon", send_at=rfc3339(now + 6))
    parked = kit.message(cid, id="sched-parked", send_at=rfc3339(now + 40))
    dropped = kit.message(cid, id="sched-canceled", send_at=rfc3339(now + 40))
    fleet = Fleet(kit, tmp_path / "fleet", size=2)
    try:
        fleet.start()
        for m in (soon, parked, dropped):
            assert post(kit, m)[0] == 202
        kit.put(parked)  # a producer's duplicate on the queue, read long before send_at
        assert cancel(kit, cid, dropped["id"])[0] == 200
        recs = kit.wait_final([(cid, m["id"]) for m in (soon, parked, dropped)], timeout=120, events=False)
        kit.wait_until(lambda: kit.queue_length() == 0 and lot(kit).count() == 0, timeout=30)
    finally:
        fleet.stop()
    log = {d["idempotencyKey"]: d for d in kit.mb.admin.deliveries(mailbox=kit.address("alice"))["value"]}
    for m in (soon, parked):
        due = datetime.fromisoformat(m["send_at"]).timestamp()
        rec = recs[(cid, m["id"])]
        assert rec.status == "sent" and rec.sending_at >= due, (m["id"], rec.sending_at - due)
        assert datetime.fromisoformat(log[m["id"]]["time"]).timestamp() >= due
    counts = kit.mb.admin.delivered(kit.address("alice"))["counts_by_key"]
    assert counts.get(soon["id"]) == 1 and counts.get(parked["id"]) == 1
    assert recs[(cid, dropped["id"])].status == "canceled" and dropped["id"] not in counts
    assert fleet.count_in_logs("Function send_queued_message failed") == 0


def test_a_parked_row_that_holds_no_message_is_moved_once_and_rejected_not_retried_every_run(send_kit):
    """Rows only the app writes, but one an insider or an operator's edit left unreadable (not UTF-8, a string
    property) made every mover run raise, and stayed parked for ever; now it moves like any row and the sender
    rejects it (invalid_json) on its normal path."""
    kit = send_kit()
    clear_lot(kit)
    parking = lot(kit)
    due = time.time() - 10
    for i, value in enumerate([b"\xff\xfe{", "a string", b""]):
        row = {"PartitionKey": bucket(due), "RowKey": f"{int(due * 1000):013d}-bad{i}", "due": due, "m0": value}
        parking.table.create_entity(row)
    assert parking.move_due(now=time.time()).moved == 3
    assert parking.count() == 0 and kit.queue_length() == 3
    texts = [m.content for m in kit.services.storage.queue(kit.mb.env["OUTBOUND_QUEUE"]).receive_messages()]
    outcomes = [kit.services.sender.process(text, f"q-{i}") for i, text in enumerate(texts)]
    assert [o.status for o in outcomes] == ["rejected"] * 3
