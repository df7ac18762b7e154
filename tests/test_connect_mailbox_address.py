"""Issue 25 item 5: the mailbox address is a real address, never whatever ``preferred_username`` holds.

``preferred_username`` "could be an email address, phone number, or a generic username without a specified
format" and is mutable (id-token-claims-reference); the emulator lays claims over one user's ID tokens
(``set_id_token_claims``). Real MSAL, Azurite and the HTTPS emulator.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit


def _view(mb, cid: str) -> dict:
    return mb.json(mb.http("get_connection", route_params={"connection_id": cid}))


def test_the_email_claim_is_the_mailbox_not_a_different_preferred_username(mailbridge):
    mb = mailbridge(users=("alice",))
    alice = mb.kit.users["alice"]
    mb.admin.set_id_token_claims(alice["upn"], {"preferred_username": "alice.old@legacy.example"})
    cid = mb.connect("alice")["connection_id"]
    assert _view(mb, cid)["mailbox"].lower() == alice["upn"].lower()
    resp = mb.http("send_test_message", "POST", route_params={"connection_id": cid})
    assert resp.status_code == 200, resp.get_body()
    (received,) = mb.admin.received(alice["upn"])
    assert received["subject"] == "Mailbridge test message"
    assert mb.admin.received("alice.old@legacy.example") == []


def test_a_phone_number_is_never_used_as_the_mailbox_or_a_recipient(mailbridge):
    mb = mailbridge(users=("alice",))
    phone = "+14255550100"
    mb.admin.set_id_token_claims(mb.kit.users["alice"]["upn"], {"preferred_username": phone, "email": None})
    cid = mb.connect("alice", user_ref="ref-a")["connection_id"]
    view = _view(mb, cid)
    assert view["status"] == "connected" and view["mailbox"] == ""

    resp = mb.http("send_test_message", "POST", route_params={"connection_id": cid})
    assert resp.status_code == 409, resp.get_body()
    assert mb.json(resp)["error"]["code"] == "mailbox_address_unknown"
    assert mb.admin.received(phone) == []

    # A reconnect link does not hint the phone number to Microsoft's sign-in page either.
    start = mb.start(mb.connect_link("ref-a", connection_id=cid))
    assert "login_hint" not in parse_qs(urlsplit(start.headers["Location"]).query)
