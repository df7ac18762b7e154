"""The outgoing log (``GET /api/messages?connection_id=``), connection list options and the default mailbox."""

from __future__ import annotations

import base64
import time
import uuid

from shared.send.deliveries import LOG_PREFIX


def enqueue(mb, cid: str, mid: str):
    body = {
        "id": mid,
        "connection_id": cid,
        "to": [{"address": "someone@example.com"}],
        "subject": "Log me",
        "body": {"content_type": "text", "content": "hello"},
    }
    resp = mb.http("enqueue_message", "POST", body=body)
    assert resp.status_code == 202, resp.get_body()


def page(mb, **params):
    resp = mb.http("list_messages", params={k: str(v) for k, v in params.items()})
    return resp.status_code, mb.json(resp)


def test_newest_first_paged_filtered_and_scoped_to_the_connection(mailbridge):
    mb = mailbridge()
    cid = mb.connect("alice", user_ref="u1")["connection_id"]
    other = mb.connect("bob", user_ref="u2")["connection_id"]
    ids = [f"log-{i}-{uuid.uuid4().hex[:6]}" for i in range(7)]
    for mid in ids[:5]:
        enqueue(mb, cid, mid)
        time.sleep(0.002)  # distinct creation milliseconds, so "newest first" is well defined
    tested = mb.json(mb.http("send_test_message", "POST", route_params={"connection_id": cid}, body={}))
    assert tested["status"] == "sent"
    assert mb.json(mb.http("get_connection", route_params={"connection_id": cid}))["last_used_at"]
    enqueue(mb, other, ids[5])

    status, first = page(mb, connection_id=cid, limit=3)
    assert status == 200
    assert [m["id"] for m in first["messages"]] == [tested["id"], ids[4], ids[3]]
    assert first["continuation"]
    _, second = page(mb, connection_id=cid, limit=3, continuation=first["continuation"])
    assert [m["id"] for m in second["messages"]] == [ids[2], ids[1], ids[0]]
    if second["continuation"]:  # a full last page may still say "more": the next one is then empty
        _, third = page(mb, connection_id=cid, limit=3, continuation=second["continuation"])
        assert third["messages"] == [] and third["continuation"] is None
    # The rows are the delivery records' public fields: no body, no addresses.
    row = first["messages"][1]
    assert row["status"] == "queued" and row["connection_id"] == cid
    assert "body" not in row and "someone@example.com" not in str(first)

    _, sent = page(mb, connection_id=cid, status="sent")
    assert [m["id"] for m in sent["messages"]] == [tested["id"]]
    _, queued = page(mb, connection_id=cid, status="queued", limit=2)
    assert [m["id"] for m in queued["messages"]] == [ids[4], ids[3]] and queued["continuation"]
    _, none_yet = page(mb, connection_id=cid, since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60)))
    assert none_yet["messages"] == []
    _, all_since = page(mb, connection_id=cid, since=int(time.time()) - 600)
    assert len(all_since["messages"]) == 6
    _, others = page(mb, connection_id=other)
    assert [m["id"] for m in others["messages"]] == [ids[5]]


def test_the_index_rows_share_the_records_partition_and_never_show_as_records(mailbridge):
    mb = mailbridge()
    cid = mb.connect("alice")["connection_id"]
    enqueue(mb, cid, "idx-1")
    rows = list(mb.services.deliveries.table.query_entities("PartitionKey eq @pk", parameters={"pk": cid}))
    keys = sorted(r["RowKey"] for r in rows)
    assert keys[0] == "idx-1" and keys[1].startswith(LOG_PREFIX) and keys[1].endswith("-idx-1") and len(keys) == 2
    again = mb.http(
        "enqueue_message",
        "POST",
        body={
            "id": "idx-1",
            "connection_id": cid,
            "to": [{"address": "someone@example.com"}],
            "subject": "Log me",
            "body": {"content_type": "text", "content": "hello"},
        },
    )
    assert again.status_code == 200  # a replay: no second record, no second index row
    assert len(list(mb.services.deliveries.table.query_entities("PartitionKey eq @pk", parameters={"pk": cid}))) == 2


def test_bad_parameters_are_clean_400s_and_unknown_connections_404(mailbridge):
    mb = mailbridge()
    cid = mb.connect("alice")["connection_id"]
    for params in (
        {},
        {"connection_id": cid, "status": "nope"},
        {"connection_id": cid, "limit": "0"},
        {"connection_id": cid, "limit": "101"},
        {"connection_id": cid, "limit": "x"},
        {"connection_id": cid, "since": "yesterday"},
        {"connection_id": cid, "since": "2026-12-01T10:00:00"},  # no zone
        {"connection_id": cid, "continuation": "bm9wZQ"},
        {"connection_id": cid, "continuation": base64.urlsafe_b64encode(b"~t123-x").decode()},
    ):
        status, body = page(mb, **params)
        assert (status, body["error"]["code"]) == (400, "invalid_request"), params
    for unknown in ("c" + "0" * 31, "../x"):
        status, body = page(mb, connection_id=unknown)
        assert status == 404 and body["error"]["code"] in {"not_found", "unknown_connection"}


def test_list_includes_disconnected_on_request_and_is_default_is_settable(mailbridge):
    mb = mailbridge()
    first = mb.connect("alice", user_ref="u1")["connection_id"]
    second = mb.connect("bob", user_ref="u1")["connection_id"]

    def listing(**params):
        return mb.json(mb.http("list_connections", params={"user_ref": "u1", **params}))["connections"]

    assert [(c["connection_id"], c["is_default"]) for c in listing()] == [(first, True), (second, False)]
    made = mb.http("update_connection", "PATCH", route_params={"connection_id": second}, body={"is_default": True})
    assert made.status_code == 200 and mb.json(made)["is_default"] is True
    assert [(c["connection_id"], c["is_default"]) for c in listing()] == [(first, False), (second, True)]
    for bad in ({"is_default": False}, {"is_default": "yes"}, {"status": "x"}, [], {}):
        resp = mb.http("update_connection", "PATCH", route_params={"connection_id": second}, body=bad)
        assert resp.status_code == 400, bad
    mb.http("delete_connection", "DELETE", route_params={"connection_id": first})
    assert [c["connection_id"] for c in listing()] == [second]
    assert [c["connection_id"] for c in listing(include="disconnected")] == [first, second]
    assert mb.http("list_connections", params={"user_ref": "u1", "include": "all"}).status_code == 400
    gone = mb.http("update_connection", "PATCH", route_params={"connection_id": first}, body={"is_default": True})
    assert gone.status_code == 409


def test_last_used_at_is_the_newest_message_of_the_outgoing_log(mailbridge):
    """The send path writes nothing to the connection row for it (issue 18): the status API reads the time of
    the connection's newest outgoing-log entry."""
    mb = mailbridge()
    cid = mb.connect("alice", user_ref="u1")["connection_id"]
    view = mb.json(mb.http("get_connection", route_params={"connection_id": cid}))
    assert view["last_used_at"] is None
    before = time.time()
    tested = mb.json(mb.http("send_test_message", "POST", route_params={"connection_id": cid}, body={}))
    assert tested["status"] == "sent"
    used = mb.services.deliveries.last_logged_at(cid)
    assert used is not None and before - 1 <= used <= time.time()
    view = mb.json(mb.http("get_connection", route_params={"connection_id": cid}))
    assert view["last_used_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(used))
    (listed,) = mb.json(mb.http("list_connections", params={"user_ref": "u1"}))["connections"]
    assert listed["last_used_at"] == view["last_used_at"]
