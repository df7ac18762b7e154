"""Issue 25 item 2: turning a feature on (or off) keeps every existing grant working the way it can.

A refresh may ask only what the grant was consented for (auth-code flow, "Refresh the access token"); the emulator
holds grants to that rule with ``refresh_scope_rule="grant"``. Real MSAL, Azurite and the HTTPS emulator.
"""

from __future__ import annotations

import pytest

from shared.services import reset_services
from shared.tokens.refresh import KeepAlive
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)

DAY = 86_400


def _status(kit, cid: str) -> dict:
    resp = kit.mb.http("get_connection", route_params={"connection_id": cid})
    assert resp.status_code == 200, resp.get_body()
    return kit.mb.json(resp)


def _switch(monkeypatch, **flags: str) -> None:
    """Change the operator's settings as a redeploy would (new settings, new services, same Storage and vault)."""
    for name, value in flags.items():
        monkeypatch.setenv(name, value)
    reset_services()


@pytest.mark.parametrize("rule", ["consent", "grant"])
def test_a_feature_turned_on_keeps_grants_made_before_it_working(send_kit, emulator_admin, monkeypatch, rule):
    emulator_admin.entra_settings(refresh_scope_rule=rule)
    kit = send_kit(users=("alice", "team"))
    cid = kit.connect("alice")  # consented for Mail.Send only
    _switch(monkeypatch, ENABLE_MAIL_READWRITE="true", ENABLE_SHARED_MAILBOXES="true")
    s = kit.services
    assert s.settings.enable_mail_readwrite and s.settings.enable_shared_mailboxes

    outcome = s.tokens.refresh(s.connections.get(cid), force=True)  # what a send or the keep-alive does
    assert outcome.refreshed and s.connections.get(cid).status == "connected"
    view = _status(kit, cid)
    assert view["status"] == "connected" and view["last_error"] is None
    assert sorted(view["features_missing"]) == ["mail_readwrite", "shared_mailboxes"]

    # It sends the way it can: sendMail (no drafts without Mail.ReadWrite), from its own mailbox.
    msg = kit.message(cid, subject="after the feature")
    out = s.sender.process(msg, msg["id"])
    assert out.status == "sent", out
    assert kit.record(cid, msg["id"]).mode == "sendMail"
    # Send-as needs the reconnect: refused by us with the reason, not by Graph, and the connection lives on.
    shared = kit.message(cid, **{"from": kit.address("team")})
    out = s.sender.process(shared, shared["id"])
    assert out.status == "failed" and out.error.code == "send_as_denied", out
    assert "Mail.Send.Shared" in (out.error.detail or "")
    assert s.connections.get(cid).status == "connected"

    # The keep-alive refreshes it as well (61 days idle).
    conn = s.connections.get(cid)
    conn.last_refreshed_at -= 61 * DAY
    s.connections.set_refresh_due(conn, conn.last_refreshed_at + s.settings.refresh_after_days * DAY)
    s.connections.save(conn, index=False)
    report = KeepAlive(s).sweep()
    assert (report.refreshed, report.reauth_required) == (1, 0), report

    # A reconnect grants the new features; then nothing is missing.
    kit.mb.connect("alice", user_ref=conn.user_ref, connection_id=cid)
    assert _status(kit, cid)["features_missing"] == []


def test_a_feature_turned_off_keeps_grants_made_with_it_working(send_kit, emulator_admin, monkeypatch):
    emulator_admin.entra_settings(refresh_scope_rule="grant")
    kit = send_kit(users=("alice",), ENABLE_MAIL_READWRITE="true", ENABLE_SHARED_MAILBOXES="true")
    cid = kit.connect("alice")
    assert {"Mail.ReadWrite", "Mail.Send.Shared"} <= set(kit.services.connections.get(cid).scopes)
    _switch(monkeypatch, ENABLE_MAIL_READWRITE="false", ENABLE_SHARED_MAILBOXES="false")
    s = kit.services
    outcome = s.tokens.refresh(s.connections.get(cid), force=True)
    assert outcome.refreshed and s.connections.get(cid).status == "connected"
    assert _status(kit, cid)["features_missing"] == []
    msg = kit.message(cid, subject="after turning it off")
    out = s.sender.process(msg, msg["id"])
    assert out.status == "sent" and kit.record(cid, msg["id"]).mode == "sendMail", out
