"""The final state of a message sent from its claim lives in its outgoing-log index row (shared/send/deliveries.py;
issue 18: two Storage requests per email, no entity-group transaction). Whatever reads a message (the sender's
copies and redeliveries, the status API, the outgoing log) must see that final state, a run that dies before it
must still end listed, and a waiting message's plain index row must survive a failed insert."""

from __future__ import annotations

import json
import time

from azure.core.exceptions import ServiceResponseError

from shared.send.deliveries import LOG_PREFIX, Delivery
from shared.send.outgoing_log import OutgoingLog
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)


class Crash(BaseException):
    """The process dying: nothing of the app's handles it (BaseException, not Exception)."""


def _failing(monkeypatch, kit, method: str, exc: BaseException, times: int = 1) -> list[str]:
    """Make the next ``times`` index-row writes through ``method`` of the deliveries table raise ``exc``."""
    table = kit.services.deliveries.table
    real = getattr(table, method)
    refused: list[str] = []

    def write(entity, **kwargs):
        if entity["RowKey"].startswith(LOG_PREFIX) and len(refused) < times:
            refused.append(entity["RowKey"])
            raise exc
        return real(entity, **kwargs)

    monkeypatch.setattr(table, method, write)
    return refused


def _listed(kit, cid: str) -> list[tuple[str, str]]:
    return [(m["id"], m["status"]) for m in OutgoingLog(kit.services).page({"connection_id": cid})["messages"]]


def _rows(kit, cid: str) -> dict[str, dict]:
    rows = kit.services.deliveries.table.query_entities("PartitionKey eq @pk", parameters={"pk": cid})
    return {r["RowKey"]: r for r in rows}


def test_a_send_from_its_claim_writes_its_final_state_into_its_index_row_and_every_reader_sees_it(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    msg = kit.message(cid)
    sender = kit.services.sender
    assert sender.process(json.dumps(msg), "q-1").status == "sent"
    rows = _rows(kit, cid)
    (index_key,) = [k for k in rows if k.startswith(LOG_PREFIX)]
    assert rows[msg["id"]]["status"] == "sending", "the row is the claim: not written again"
    assert rows[index_key]["status"] == "sent" and rows[index_key]["message_id"] == msg["id"]
    record = kit.services.deliveries.get(cid, msg["id"])
    assert (record.status, record.attempts, record.finished_by, record.event_emitted) == ("sent", 1, "q-1", True)
    assert _listed(kit, cid) == [(msg["id"], "sent")]
    api = kit.mb.http("get_message", route_params={"message_id": msg["id"]}, params={"connection_id": cid})
    assert api.status_code == 200 and kit.mb.json(api)["status"] == "sent"
    # A producer's copy of the id and the run's own redelivery: acknowledged, nothing sent again.
    sent_before = kit.mb.admin.counters("graph.").get("graph.messages_sent", 0)
    assert sender.process(json.dumps(msg), "q-copy").status == "duplicate"
    assert sender.process(json.dumps(msg), "q-1").status == "duplicate"
    assert kit.mb.admin.counters("graph.").get("graph.messages_sent", 0) == sent_before
    assert [e["type"] for e in kit.events_for(msg["id"])] == ["mailbridge.message.sent"] * 2  # the run's again


def test_a_run_that_dies_before_its_final_state_ends_unknown_on_redelivery_and_is_listed_once(send_kit, monkeypatch):
    kit = send_kit()
    cid = kit.connect("alice")
    sender = kit.services.sender
    msg = kit.message(cid)
    refused = _failing(monkeypatch, kit, "upsert_entity", Crash())
    try:
        sender.process(json.dumps(msg), "q-1")
        raise AssertionError("the crash did not happen")
    except Crash:
        pass
    assert refused, "the final write was reached (after Graph)"
    assert kit.services.deliveries.get(cid, msg["id"]).status == "sending"
    assert _listed(kit, cid) == []  # in flight on its claim: no index row yet
    # The lease of the dead run ends (time passes): written straight to the table, not through the store.
    kit.services.deliveries.table.update_entity(
        {"PartitionKey": cid, "RowKey": msg["id"], "lease_until": time.time() - 1}, mode="merge"
    )
    outcome = sender.process(json.dumps(msg), "q-1")  # the host's redelivery of the same queue message
    assert outcome.status == "unknown", outcome
    assert kit.services.deliveries.get(cid, msg["id"]).status == "unknown"
    assert _listed(kit, cid) == [(msg["id"], "unknown")]
    assert len([k for k in _rows(kit, cid) if k.startswith(LOG_PREFIX)]) == 1


def test_a_waiting_messages_failed_index_insert_is_repaired_by_its_next_write(send_kit, monkeypatch):
    """A row written ``queued`` (here as the HTTP intake writes it) gets a plain index row; when that insert
    fails the row keeps its ``unindexed`` mark and the next write (the queue run's claim) inserts it."""
    kit = send_kit()
    cid = kit.connect("alice")
    msg = kit.message(cid)
    refused = _failing(monkeypatch, kit, "create_entity", ServiceResponseError("storage went away"))
    row = Delivery(cid, msg["id"], fingerprint="f", source="http")
    assert kit.services.deliveries.create(row) and len(refused) == 1
    assert kit.services.deliveries.get(cid, msg["id"]).unindexed
    assert _listed(kit, cid) == []
    outcome = kit.services.sender.process(json.dumps(msg), "q-2")
    assert outcome.status == "sent", outcome
    assert _listed(kit, cid) == [(msg["id"], "sent")]
    (index_key,) = [k for k in _rows(kit, cid) if k.startswith(LOG_PREFIX)]
    assert index_key == refused[0]  # the same key: from the stored created_at


def test_a_paced_message_is_listed_while_it_waits_and_once_when_sent(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    kit.pace(messages_per_window=1, message_window_s=1.0, max_wait_s=0.0)  # reschedule, do not wait in process
    sender = kit.services.sender
    first, second = kit.message(cid), kit.message(cid)
    assert sender.process(json.dumps(first), "q-a").status == "sent"
    paced = sender.process(json.dumps(second), "q-b")
    assert paced.status == "queued", paced  # the mailbox's window is used up
    assert _listed(kit, cid) == [(second["id"], "queued"), (first["id"], "sent")]
    time.sleep(paced.delay)
    assert sender.process(json.dumps(second), "q-c").status == "sent"
    assert _listed(kit, cid) == [(second["id"], "sent"), (first["id"], "sent")]
    assert len([k for k in _rows(kit, cid) if k.startswith(LOG_PREFIX)]) == 2
