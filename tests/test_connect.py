"""End-to-end connect flow: real Azurite, the emulator over HTTPS, the real msal and Key Vault SDKs."""

from __future__ import annotations

import json

import msal


def test_connect_stores_a_token_cache_msal_can_use_silently(mailbridge):
    mb = mailbridge()
    result = mb.connect("alice", user_ref="customer-42")
    assert result["status"] == "connected", result
    cid = result["connection_id"]

    status = mb.http("get_connection", route_params={"connection_id": cid})
    view = mb.json(status)
    assert status.status_code == 200
    assert view["status"] == "connected" and view["user_ref"] == "customer-42"
    assert view["mailbox"] == mb.kit.users["alice"]["upn"] and view["tenant_id"] == mb.kit.tid
    assert "Mail.Send" in view["scopes"] and view["is_default"] is True

    conn = mb.services.connections.get(cid)
    serialized = mb.services.token_caches.read(conn.secret_name)
    cache = msal.SerializableTokenCache()
    cache.deserialize(serialized)
    assert json.loads(serialized)["RefreshToken"], "the refresh token is stored in Key Vault"
    app = mb.services.msal.app(token_cache=cache)
    account = app.get_accounts()[0]
    silent = app.acquire_token_silent_with_error(["Mail.Send"], account=account, force_refresh=True)
    assert "access_token" in silent, silent

    token = mb.services.tokens.access_token(conn)
    sent = mb.services.http.post(
        f"{mb.env['GRAPH_ENDPOINT']}/v1.0/me/sendMail",
        headers={"Authorization": f"Bearer {token}"},
        json={"message": {"subject": "hi", "toRecipients": [{"emailAddress": {"address": "x@example.com"}}]}},
        timeout=10,
    )
    assert sent.status_code == 202, sent.text


def test_reconnect_updates_the_same_connection_and_lists_per_user(mailbridge):
    mb = mailbridge()
    first = mb.connect("alice", user_ref="u1")
    second = mb.connect("alice", user_ref="u1")
    other = mb.connect("bob", user_ref="u1")
    assert first["connection_id"] == second["connection_id"] != other["connection_id"]
    listing = mb.json(mb.http("list_connections", params={"user_ref": "u1"}))
    assert [c["mailbox"] for c in listing["connections"]] == [mb.kit.users["alice"]["upn"], mb.kit.users["bob"]["upn"]]
    assert [c["is_default"] for c in listing["connections"]] == [True, False]
    missing = mb.http("list_connections")
    assert missing.status_code == 400 and mb.json(missing)["error"]["code"] == "invalid_request"


def test_disconnect_then_reconnect_despite_key_vault_soft_delete(mailbridge):
    mb = mailbridge()
    cid = mb.connect("alice")["connection_id"]
    old_secret = mb.services.connections.get(cid).secret_name
    gone = mb.http("delete_connection", "DELETE", route_params={"connection_id": cid})
    assert gone.status_code == 200 and mb.json(gone)["status"] == "disconnected"
    assert mb.services.token_caches.read(old_secret) is None
    again = mb.connect("alice")
    assert again == {"tab": "1", "status": "connected", "connection_id": cid}  # return_url's own query is kept
    conn = mb.services.connections.get(cid)
    assert conn.secret_name != old_secret and mb.services.token_caches.read(conn.secret_name)
    unknown = mb.http("get_connection", route_params={"connection_id": "c" + "0" * 31})
    assert unknown.status_code == 404 and mb.json(unknown)["error"]["code"] == "not_found"


def test_secretless_app_credential_through_a_managed_identity(mailbridge, secretless, emulator_admin):
    """ENTRA_CLIENT_CREDENTIAL=managed_identity: MSAL and Key Vault use a federated managed-identity assertion."""
    mb = secretless(mailbridge())
    assert mb.services.settings.entra_client_secret is None
    emulator_admin.reset_counters()
    result = mb.connect("alice")
    assert result["status"] == "connected"
    conn = mb.services.connections.get(result["connection_id"])
    assert mb.services.tokens.refresh(conn, force=True).refreshed
    assert emulator_admin.counters().get("calls.msi.token", 0) >= 1
