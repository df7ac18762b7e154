"""Emulator persistence (``--persist``): the CA and the emulated world survive a restart."""

from __future__ import annotations

import msal

from emulator.app import Emulator
from emulator.client import EmulatorAdmin
from stack.azurite import free_port
from tests.fixtures.emulator import strict_session


def _start(state_dir, port, persist=True) -> tuple[Emulator, EmulatorAdmin]:
    emu = Emulator(state_dir, port=port, persist=persist)
    emu.start()
    return emu, EmulatorAdmin(emu.base_url, emu.ca_path)


def test_tenants_users_refresh_tokens_vault_and_mailboxes_survive_a_restart(tmp_path):
    port = free_port()
    emu, admin = _start(tmp_path, port)
    try:
        tenant = admin.create_tenant("user", "work", domain="persist.example")
        user = admin.create_user(tenant["tid"], "pat@persist.example")
        app = admin.register_app(
            home_tid=tenant["tid"], redirect_uris=["https://app.test/cb"], secrets=[{"value": "s3cret"}]
        )
        http = strict_session(emu.ca_path)
        client = msal.ConfidentialClientApplication(
            app["client_id"],
            client_credential="s3cret",
            authority=f"{emu.base_url}/{tenant['tid']}",
            instance_discovery=False,
            http_client=http,
        )
        flow = client.initiate_auth_code_flow(["Mail.Send"], redirect_uri="https://app.test/cb")
        back = admin.complete_authorize(flow["auth_uri"], user["upn"])
        first = client.acquire_token_by_auth_code_flow(flow, admin.query_of(back))
        assert "refresh_token" in first, first
        sent = http.post(
            f"{emu.base_url}/v1.0/me/sendMail",
            headers={"Authorization": f"Bearer {first['access_token']}"},
            json={
                "message": {
                    "subject": "before restart",
                    "toRecipients": [{"emailAddress": {"address": "x@example.com"}}],
                }
            },
            timeout=10,
        )
        assert sent.status_code == 202
        ca_before = emu.ca_path.read_bytes()
    finally:
        emu.stop()

    emu, admin = _start(tmp_path, port)
    try:
        assert emu.restored and emu.base_url.endswith(f":{port}")
        assert emu.ca_path.read_bytes() == ca_before, "the same CA: trust and browser exceptions survive"
        assert admin.user("pat@persist.example")["oid"] == user["oid"]
        http = strict_session(emu.ca_path)  # the old CA file still verifies the new server certificate
        client = msal.ConfidentialClientApplication(
            app["client_id"],
            client_credential="s3cret",
            authority=f"{emu.base_url}/{tenant['tid']}",
            instance_discovery=False,
            http_client=http,
        )
        again = client.acquire_token_by_refresh_token(first["refresh_token"], ["Mail.Send"])
        assert "access_token" in again, again  # refresh tokens issued before the restart still redeem
        old_token = http.get(
            f"{emu.base_url}/v1.0/me", headers={"Authorization": f"Bearer {first['access_token']}"}, timeout=10
        )
        assert old_token.status_code != 401, "the signing key survived"
        assert [m["subject"] for m in admin.sent_items(user["upn"])] == ["before restart"]
    finally:
        emu.stop()

    fresh, admin = _start(tmp_path / "other", 0, persist=False)
    try:
        assert not fresh.restored
    finally:
        fresh.stop()
