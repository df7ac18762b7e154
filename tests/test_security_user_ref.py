"""The optional ``user_ref`` guard on connection-scoped calls (issue 23; docs/connect.md "Trust model").

One function key can act on every connection of every user, so a backend that takes a connection id from
its own user's request (an IDOR in the caller's code) could act on someone else's mailbox. Passing
``?user_ref=<the signed-in user>`` makes Mailbridge check the connection belongs to that user_ref: a match
answers as before, a mismatch answers exactly as an unknown connection (404, same code and sentence, so the
answer does not reveal that the id exists) and changes nothing; without the parameter nothing changes.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

OWNER, OTHER = "owner-ref", "other-ref"


@pytest.fixture
def owned(mailbridge, emulator_admin):
    """A connected mailbox of OWNER, with one accepted message; (mb, connection id, message id)."""
    mb = mailbridge()
    cid = mb.connect("alice", user_ref=OWNER)["connection_id"]
    mid = f"m-{uuid.uuid4().hex[:8]}"
    resp = mb.http("enqueue_message", "POST", body=message(cid, mid))
    assert resp.status_code == 202, resp.get_body()
    return mb, cid, mid


def message(cid: str, mid: str) -> dict[str, Any]:
    return {
        "id": mid,
        "connection_id": cid,
        "to": [{"address": "someone@example.com"}],
        "subject": "Hello",
        "body": {"content_type": "text", "content": "Plain"},
    }


def calls(cid: str, mid: str) -> dict[str, dict[str, Any]]:
    """Every connection-scoped call: name -> mb.http arguments (params added per case)."""
    return {
        "get_connection": {"route_params": {"connection_id": cid}},
        "update_connection": {"method": "PATCH", "route_params": {"connection_id": cid}, "body": {"is_default": True}},
        "list_messages": {"params": {"connection_id": cid}},
        "get_message": {"params": {"connection_id": cid}, "route_params": {"message_id": mid}},
        "enqueue_message": {"method": "POST", "body": message(cid, f"m-{uuid.uuid4().hex[:8]}")},
        "send_test_message": {"method": "POST", "route_params": {"connection_id": cid}, "body": {}},
        "delete_connection": {"method": "DELETE", "route_params": {"connection_id": cid}},  # last: it disconnects
    }


def call(mb, name: str, args: dict[str, Any], user_ref: str | None):
    params = dict(args.get("params") or {})
    if user_ref is not None:
        params["user_ref"] = user_ref
    return mb.http(
        name,
        args.get("method", "GET"),
        params=params,
        route_params=args.get("route_params"),
        body=args.get("body"),
    )


def unknown_answer(mb, name: str, args: dict[str, Any], cid: str, missing: str):
    """The same call for a connection id that does not exist, the text of its id swapped for ``cid``."""
    swapped = {
        key: ({k: (missing if v == cid else v) for k, v in value.items()} if isinstance(value, dict) else value)
        for key, value in args.items()
    }
    resp = call(mb, name, swapped, None)
    return resp.status_code, resp.get_body().decode().replace(missing, cid)


def test_a_mismatched_user_ref_is_answered_as_an_unknown_connection_and_changes_nothing(owned, emulator_admin):
    mb, cid, mid = owned
    mailbox = mb.kit.users["alice"]["mail"]
    sent_before = len(emulator_admin.sent_items(mailbox))
    missing = "c" + uuid.uuid4().hex[:20]
    for name, args in calls(cid, mid).items():
        for wrong in (OTHER, "", OWNER.upper(), OWNER + " "):
            resp = call(mb, name, args, wrong)
            expected_status, expected_body = unknown_answer(mb, name, args, cid, missing)
            assert resp.status_code == expected_status == 404, (name, wrong, resp.get_body())
            assert resp.get_body().decode() == expected_body, (name, wrong)
    conn = mb.services.connections.get(cid)
    assert (conn.status, conn.user_ref) == ("connected", OWNER)  # the DELETE did not disconnect it
    assert len(emulator_admin.sent_items(mailbox)) == sent_before  # the test send sent nothing
    log = mb.json(mb.http("list_messages", params={"connection_id": cid}))["messages"]
    assert [m["id"] for m in log] == [mid]  # the POST /messages queued nothing


def test_the_owners_user_ref_and_no_user_ref_are_answered_as_before(owned):
    mb, cid, mid = owned
    for user_ref in (None, OWNER):
        for name, args in calls(cid, mid).items():
            if name == "delete_connection" and user_ref is None:
                continue  # disconnecting once is enough: the owner's user_ref does it, last
            resp = call(mb, name, args, user_ref)
            assert resp.status_code in (200, 202), (name, user_ref, resp.get_body())
    assert mb.services.connections.get(cid).status == "disconnected"  # the owner's DELETE did
    assert call(mb, "get_connection", calls(cid, mid)["get_connection"], None).status_code == 200


def test_the_guard_ends_in_the_store_lookup(owned):
    """ConnectionStore.get is where the check lives, so every caller that passes user_ref gets it."""
    mb, cid, _ = owned
    assert mb.services.connections.get(cid, user_ref=OWNER).connection_id == cid
    assert mb.services.connections.find(cid, user_ref=OTHER) is None
