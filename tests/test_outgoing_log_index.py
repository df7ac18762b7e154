"""The outgoing-log index row is its own insert, after the record's (shared/deliveries.py; issue 18: one
entity-group transaction cost more CPU than both inserts). A run that dies between the two, or whose index
insert fails, must still leave the message in ``GET /api/messages?connection_id=`` once its row is next
written, with exactly one index row."""

from __future__ import annotations

import json
import time

from azure.core.exceptions import ServiceResponseError

from shared.deliveries import LOG_PREFIX
from shared.outgoing_log import OutgoingLog
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)


class Crash(BaseException):
    """The process dying: nothing of the app's handles it (BaseException, not Exception)."""


def _fail_index_inserts(monkeypatch, kit, exc: BaseException, times: int = 1) -> list[str]:
    """Make the next ``times`` index-row inserts raise ``exc``; returns the RowKeys refused."""
    table = kit.services.deliveries.table
    real = table.create_entity
    refused: list[str] = []

    def create_entity(entity, **kwargs):
        if entity["RowKey"].startswith(LOG_PREFIX) and len(refused) < times:
            refused.append(entity["RowKey"])
            raise exc
        return real(entity, **kwargs)

    monkeypatch.setattr(table, "create_entity", create_entity)
    return refused


def _listed(kit, cid: str) -> list[str]:
    return [m["id"] for m in OutgoingLog(kit.services).page({"connection_id": cid})["messages"]]


def _index_rows(kit, cid: str, mid: str) -> list[dict]:
    rows = kit.services.deliveries.table.query_entities("PartitionKey eq @pk", parameters={"pk": cid})
    return [r for r in rows if r["RowKey"].startswith(LOG_PREFIX) and r["message_id"] == mid]


def test_a_run_that_dies_between_the_row_and_its_index_row_is_listed_after_the_redelivery(send_kit, monkeypatch):
    kit = send_kit()
    cid = kit.connect("alice")
    sender = kit.services.sender
    msg = kit.message(cid)
    refused = _fail_index_inserts(monkeypatch, kit, Crash())
    try:
        sender.process(json.dumps(msg), "q-1")
        raise AssertionError("the crash did not happen")
    except Crash:
        pass
    assert refused, "the index insert was reached"
    row = kit.record(cid, msg["id"])
    assert row.status == "sending" and row.unindexed, row
    assert msg["id"] not in _listed(kit, cid) and not _index_rows(kit, cid, msg["id"])
    # The lease of the dead run ends (time passes): written straight to the table, not through the store.
    kit.services.deliveries.table.update_entity(
        {"PartitionKey": cid, "RowKey": msg["id"], "lease_until": time.time() - 1}, mode="merge"
    )
    outcome = sender.process(json.dumps(msg), "q-1")  # the host's redelivery of the same queue message
    assert outcome.status == "unknown", outcome
    row = kit.record(cid, msg["id"])
    assert row.status == "unknown" and not row.unindexed
    assert _listed(kit, cid) == [msg["id"]]
    assert len(_index_rows(kit, cid, msg["id"])) == 1


def test_a_failed_index_insert_does_not_stop_the_send_and_the_final_write_repairs_it(send_kit, monkeypatch):
    kit = send_kit()
    cid = kit.connect("alice")
    msg = kit.message(cid)
    refused = _fail_index_inserts(monkeypatch, kit, ServiceResponseError("storage went away"))
    outcome = kit.services.sender.process(json.dumps(msg), "q-2")
    assert outcome.status == "sent", outcome
    assert len(refused) == 1
    assert not kit.record(cid, msg["id"]).unindexed
    assert _listed(kit, cid) == [msg["id"]]
    rows = _index_rows(kit, cid, msg["id"])
    assert len(rows) == 1 and rows[0]["RowKey"] == refused[0]  # the same key: from the stored created_at


def test_a_stored_row_carries_the_mark_only_while_its_index_row_may_be_missing(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    msg = kit.message(cid)
    assert kit.services.sender.process(json.dumps(msg), "q-3").status == "sent"
    entity = kit.services.deliveries.table.get_entity(cid, msg["id"])
    assert "unindexed" not in entity  # rows of earlier versions (one transaction) have no mark and are indexed
    assert len(_index_rows(kit, cid, msg["id"])) == 1
