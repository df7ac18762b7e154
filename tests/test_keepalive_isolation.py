"""Issue 25 item 1: a customer tenant that deletes or disables the app stops only its own connections.

Real MSAL, Azurite and the HTTPS emulator. The many due connections are copies of two real grants (one per tenant):
each copy is a connection row with its own Key Vault secret holding the signed-in user's MSAL cache (Entra refresh
tokens are not single use), so a sweep over them costs what a sweep over as many users would, without as many
sign-ins. MB_ISOLATION_CONNECTIONS=1000 runs the issue's figure (the suite runs 100).
"""

from __future__ import annotations

import json
import os

import pytest

from shared.tokens.refresh import KeepAlive
from shared.tokens.store import Connection, connection_id_for

DAY = 86_400
N = int(os.environ.get("MB_ISOLATION_CONNECTIONS", "100"))
IN_REMOVED_TENANT = 10  # the oldest due keys, as in the issue (1,000 due, the oldest 10 in such a tenant)


def _connect_other_tenant(mb, upn: str, user_ref: str) -> str:
    """The connect flow for a user of another customer tenant (the Mailbridge fixture knows one tenant's users)."""
    start = mb.start(mb.connect_link(user_ref))
    back = mb.callback(mb.admin.complete_authorize(start.headers["Location"], upn))
    result = dict(p.split("=", 1) for p in back.headers["Location"].split("?", 1)[1].split("&"))["result"]
    claimed = mb.claim(result, user_ref)
    assert claimed.status_code == 200, claimed.get_body()
    return mb.json(claimed)["connection_id"]


def _copies(services, source_id: str, count: int, first_due: float) -> list[str]:
    """``count`` connections of the same mailbox, each with its own copy of the source's token cache, due in order."""
    src = services.connections.get(source_id)
    cache = services.token_caches.read(src.secret_name)
    threshold = services.settings.refresh_after_days * DAY
    out = []
    for i in range(count):
        user_ref = f"{source_id[:8]}-{i}"
        conn = Connection(
            connection_id=connection_id_for(src.tenant_id, src.object_id, user_ref),
            user_ref=user_ref,
            tenant_id=src.tenant_id,
            object_id=src.object_id,
            mailbox=src.mailbox,
            scopes=src.scopes,
            created_at=first_due,
            last_refreshed_at=first_due - threshold + i,
        )
        conn.secret_name, conn.secret_generation = services.token_caches.write_new_name(conn.connection_id, 1, cache)
        conn.secret_writes = 1
        services.connections.set_refresh_due(conn, conn.last_refreshed_at + threshold)
        services.connections.save(conn)
        out.append(conn.connection_id)
    return out


def _undue(services, cid: str) -> None:
    conn = services.connections.get(cid)
    services.connections.set_refresh_due(conn, None)
    services.connections.save(conn, index=False)


def _health(mb) -> tuple[int, dict]:
    resp = mb.http("health")
    return resp.status_code, json.loads(resp.get_body())


@pytest.fixture
def two_tenants(mailbridge, emu_tenant, emulator):
    """A Mailbridge on the emulator's clock with one connection in tenant A (mb.kit) and one in tenant B."""
    mb = mailbridge(users=("alice",))
    mb.services.clock = emulator.state.clock.now
    other = emu_tenant(users=("carol",))
    a = mb.connect("alice", user_ref="ref-alice")["connection_id"]
    b = _connect_other_tenant(mb, other.users["carol"]["upn"], "ref-carol")
    return mb, a, b


@pytest.mark.parametrize(
    ("state", "reason"), [("deleted", "app_removed_in_tenant"), ("disabled", "app_disabled_in_tenant")]
)
def test_a_tenant_that_removes_the_app_stops_only_its_own_connections(two_tenants, emulator, state, reason):
    mb, a, b = two_tenants
    s = mb.services
    emulator.state.clock.advance(61 * DAY)
    now = s.clock()
    # The oldest due keys belong to the tenant that will remove the app: the sweep meets them first.
    removed = _copies(s, a, IN_REMOVED_TENANT, now - 10 * DAY)
    healthy = _copies(s, b, N - IN_REMOVED_TENANT, now - 5 * DAY)
    for cid in (a, b):
        _undue(s, cid)
    mb.admin.set_enterprise_app(mb.kit.tid, mb.env["ENTRA_CLIENT_ID"], state)

    report = KeepAlive(s).sweep()

    assert not report.app_credential_failed and not report.stopped_early, report
    assert (report.due_seen, report.refreshed, report.reauth_required) == (N, N - IN_REMOVED_TENANT, IN_REMOVED_TENANT)
    assert all(s.connections.get(c).status == "connected" for c in healthy)
    for cid in removed:
        view = s.connections.get(cid).public_view()
        assert view["status"] == "reauth_required" and view["last_error"]["reason"] == reason, view
    status, body = _health(mb)
    assert status == 200 and body["app_credential"]["ok"] is True, body
    events = [json.loads(m.content) for m in s.storage.queue(mb.env["EVENTS_QUEUE"]).peek_messages(max_messages=32)]
    assert not [e for e in events if e["type"] == "mailbridge.app.credential_failed"]
    reauth = [e for e in events if e["type"] == "mailbridge.connection.reauth_required"]
    assert reauth and {e["data"]["reason"] for e in reauth} == {reason}
    # Nothing of tenant A is due any more: the next sweep does not meet them again.
    assert KeepAlive(s).sweep().due_seen == 0


def test_the_operators_own_credential_refused_everywhere_still_stops_the_sweep(two_tenants, emulator, emulator_admin):
    """The registration itself gone: every tenant answers AADSTS700016 and so does the home tenant (the check)."""
    mb, a, b = two_tenants
    s = mb.services
    # Due by their rows, not by moving the clock (a clock jump would expire the vault client's app token).
    copies = _copies(s, a, 1, s.clock() - DAY) + _copies(s, b, 1, s.clock() - DAY)
    for cid in (a, b):
        _undue(s, cid)
    emulator_admin.entra_settings(
        app_credential_error={"code": 700016, "grants": ["refresh_token", "client_credentials"]}
    )
    # Key Vault keeps working on the app token the vault client holds already (in Azure it uses the managed identity).
    report = KeepAlive(s, concurrency=1).sweep()
    emulator_admin.entra_settings(app_credential_error=None)
    assert report.app_credential_failed and report.reauth_required == 0, report
    assert [s.connections.get(c).status for c in copies] == ["connected", "connected"]
    status, body = _health(mb)
    assert status == 503 and body["error"]["code"] == "app_credential_failed", body


@pytest.mark.parametrize(("code", "reason"), [(70001, "app_disabled_in_tenant"), (700011, "app_removed_in_tenant")])
def test_other_unauthorized_client_refusals_are_the_tenants_once_the_home_tenant_accepts_the_app(
    two_tenants, emulator_admin, code, reason
):
    """BUG (review against the AADSTS reference): `unauthorized_client` AADSTS70001 ("The application is disabled") or
    700011 (UnauthorizedClientAppNotFoundInOrgIdTenant) was an unknown refusal: with the app's own credential fine in
    its home tenant it became `temporarily_unavailable` for that connection, retried by every sweep for ever and never
    told to anyone. The reference's OAuth table: unauthorized_client "usually occurs when the client application isn't
    registered in Microsoft Entra ID or isn't added to the user's Microsoft Entra tenant"."""
    mb, a, b = two_tenants
    s = mb.services
    (copy,) = _copies(s, a, 1, s.clock() - DAY)
    for cid in (a, b):
        _undue(s, cid)
    emulator_admin.entra_settings(app_credential_error={"code": code, "grants": ["refresh_token"]})
    report = KeepAlive(s, concurrency=1).sweep()
    emulator_admin.entra_settings(app_credential_error=None)
    assert (report.reauth_required, report.transient_failures, report.app_credential_failed) == (1, 0, False), report
    view = s.connections.get(copy).public_view()
    assert view["status"] == "reauth_required" and view["last_error"]["reason"] == reason, view
    assert f"AADSTS{code}" in view["last_error"]["message"], view
    assert _health(mb)[0] == 200


def test_a_send_in_another_tenant_is_untouched_and_the_removed_tenant_says_why(two_tenants, emulator):
    mb, a, b = two_tenants
    s = mb.services
    mb.admin.set_enterprise_app(mb.kit.tid, mb.env["ENTRA_CLIENT_ID"], "deleted")
    with pytest.raises(Exception) as info:
        s.tokens.refresh(s.connections.get(a), force=True)
    assert getattr(info.value, "code", None) == "reauth_required"
    assert info.value.extra.get("reason") == "app_removed_in_tenant"
    assert s.tokens.refresh(s.connections.get(b), force=True).refreshed
    assert _health(mb)[0] == 200
    view = mb.json(mb.http("get_connection", route_params={"connection_id": a}))
    assert view["status"] == "reauth_required" and view["last_error"]["reason"] == "app_removed_in_tenant"
    assert "administrator" in view["last_error"]["message"]
