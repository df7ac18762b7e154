"""Isolation faults on the Entra side (issue 25), driven by real MSAL over HTTPS.

One customer tenant deletes or disables the app's enterprise application: that tenant's grants answer
``unauthorized_client`` AADSTS700016 / AADSTS7000112, other tenants and the app's own credential in its home
tenant keep working. Refreshes stay within what was consented (AADSTS65001 beyond it). ID tokens whose
``preferred_username`` is not an address, with or without the optional ``email`` claim.
"""

from __future__ import annotations

import uuid

import pytest

from emulator.client import EmulatorAdminError
from emulator.tokens import GRAPH_RESOURCE
from tests.fixtures.emulator import EmuTenant, strict_session

pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")
SCOPES = ("Mail.Send",)


def _customer(kit: EmuTenant, name: str = "carol", **tenant_fields) -> EmuTenant:
    """Another tenant using the same (multi-tenant) app registration, with one user."""
    suffix = uuid.uuid4().hex[:10]
    tenant = kit.admin.create_tenant("user", "work", domain=f"c{suffix}.example", **tenant_fields)
    other = EmuTenant(kit.emulator, kit.admin, tenant, kit.app, kit.client_secret, kit.redirect_uri)
    other.add_user(name)
    return other


def _raw_refresh(kit: EmuTenant, refresh_token: str, scope: str = "Mail.Send openid profile offline_access"):
    return kit.http().post(
        f"{kit.authority}/oauth2/v2.0/token",
        data={
            "grant_type": "refresh_token",
            "client_id": kit.client_id,
            "client_secret": kit.client_secret,
            "refresh_token": refresh_token,
            "scope": scope,
        },
    )


def _force_refresh(kit: EmuTenant, app) -> dict:
    account = app.get_accounts()[0]
    return app.acquire_token_silent_with_error(list(SCOPES), account, force_refresh=True)


def _home_app_token(kit: EmuTenant) -> dict:
    return kit.msal_app().acquire_token_for_client([f"{GRAPH_RESOURCE}/.default"])


# --- 1. a customer tenant deletes or disables the enterprise application ------------------------------------


def test_deleted_enterprise_app_refuses_that_tenants_refreshes_only(emu_tenant, emulator_admin):
    home = emu_tenant(users=())
    victim, bystander = _customer(home, display_name="Fabrikam Victim"), _customer(home)
    victim_app, bystander_app = victim.msal_app(), bystander.msal_app()
    assert "access_token" in victim.sign_in("carol", SCOPES, app=victim_app)
    assert "access_token" in bystander.sign_in("carol", SCOPES, app=bystander_app)
    first_rt = victim_app.token_cache.find("RefreshToken")[0]["secret"]

    emulator_admin.set_enterprise_app(victim.tid, home.client_id, "deleted")

    refused = _force_refresh(victim, victim_app)
    assert refused["error"] == "unauthorized_client" and refused["error_codes"] == [700016]
    assert (
        f"Application with identifier '{home.client_id}' was not found in the directory 'Fabrikam Victim'"
        in (refused["error_description"])
    )
    raw = _raw_refresh(victim, first_rt)
    assert raw.status_code == 400 and raw.json()["error"] == "unauthorized_client"
    assert raw.json()["error_codes"] == [700016]
    # Deleting the service principal deleted its grants in that tenant.
    assert home.client_id not in emulator_admin.tenant(victim.tid)["admin_consented"]
    assert home.client_id not in emulator_admin.user(victim.users["carol"]["oid"])["consents"]
    # Other tenants and the app's own credential in its home tenant are untouched.
    assert "access_token" in _force_refresh(bystander, bystander_app)
    assert "access_token" in _home_app_token(home)


def test_deleted_enterprise_app_refuses_a_code_issued_before_and_consent_recreates_it(emu_tenant, emulator_admin):
    home = emu_tenant(users=())
    victim = _customer(home)
    app = victim.msal_app()
    flow = app.initiate_auth_code_flow(list(SCOPES), redirect_uri=victim.redirect_uri)
    location = emulator_admin.complete_authorize(flow["auth_uri"], victim.users["carol"]["upn"])
    emulator_admin.set_enterprise_app(victim.tid, home.client_id, "deleted")
    refused = app.acquire_token_by_auth_code_flow(flow, emulator_admin.query_of(location))
    assert refused["error"] == "unauthorized_client" and refused["error_codes"] == [700016]
    # A user of a tenant that lets users consent signs in again: consent re-creates the service principal.
    again = victim.sign_in("carol", SCOPES)
    assert "access_token" in again, again
    assert emulator_admin.tenant(victim.tid)["enterprise_apps"] == {}
    assert _raw_refresh(victim, again["refresh_token"]).status_code == 200


def test_disabled_enterprise_app_refuses_refresh_and_sign_in_until_enabled(emu_tenant, emulator_admin):
    home = emu_tenant(users=())
    victim, bystander = _customer(home), _customer(home)
    victim_app = victim.msal_app()
    assert "access_token" in victim.sign_in("carol", SCOPES, app=victim_app)
    emulator_admin.set_enterprise_app(victim.tid, home.client_id, "disabled")

    refused = _force_refresh(victim, victim_app)
    assert refused["error"] == "unauthorized_client" and refused["error_codes"] == [7000112]
    assert f"Application '{home.client_id}'({home.app['display_name']}) is disabled." in refused["error_description"]
    raw = _raw_refresh(victim, victim_app.token_cache.find("RefreshToken")[0]["secret"])
    assert raw.status_code == 400 and raw.json()["error_codes"] == [7000112]
    with pytest.raises(EmulatorAdminError, match="AADSTS7000112"):
        victim.sign_in("carol", SCOPES)
    assert "access_token" in bystander.sign_in("carol", SCOPES)
    assert "access_token" in _home_app_token(home)

    # Disabling keeps the grants: enabling the app again makes the same refresh token work. (A new MSAL client on
    # the same cache: MSAL Python remembers a 400 for an identical token request and answers it without asking.)
    emulator_admin.set_enterprise_app(victim.tid, home.client_id, None)
    assert "access_token" in _force_refresh(victim, victim.msal_app(token_cache=victim_app.token_cache))


def test_client_credentials_into_a_customer_tenant_that_deleted_the_app(emu_tenant, emulator_admin):
    home = emu_tenant(users=())
    customer = _customer(home)
    emulator_admin.grant_admin_consent(customer.tid, home.client_id, ["Mail.Send"])
    into_customer = home.msal_app(authority=customer.authority)
    assert "access_token" in into_customer.acquire_token_for_client([f"{GRAPH_RESOURCE}/.default"])
    emulator_admin.set_enterprise_app(customer.tid, home.client_id, "deleted")
    fresh = home.msal_app(authority=customer.authority)
    refused = fresh.acquire_token_for_client([f"{GRAPH_RESOURCE}/.default"])
    assert refused["error"] == "unauthorized_client" and refused["error_codes"] == [700016]
    assert "access_token" in _home_app_token(home)


def test_enterprise_app_state_is_validated(emu_tenant, emulator_admin):
    kit = emu_tenant(users=())
    with pytest.raises(EmulatorAdminError) as bad:
        emulator_admin.set_enterprise_app(kit.tid, kit.client_id, "gone")
    assert bad.value.status == 400


# --- 2. refreshes stay within what was consented --------------------------------------------------------------


def test_refresh_asking_beyond_consent_is_65001_and_a_subset_is_granted(emu_tenant, emulator_admin):
    kit = emu_tenant(users=("alice", "bob"))
    wide = kit.sign_in("alice", ("Mail.Send", "Mail.ReadWrite", "User.Read"))
    narrow = kit.sign_in("bob", ("Mail.Send",))

    widened = _raw_refresh(kit, narrow["refresh_token"], "Mail.Send Mail.ReadWrite openid profile offline_access")
    body = widened.json()
    assert widened.status_code == 400
    assert (body["error"], body["error_codes"], body["suberror"]) == ("invalid_grant", [65001], "consent_required")

    subset = _raw_refresh(kit, wide["refresh_token"], "Mail.Send openid profile offline_access")
    assert subset.status_code == 200
    granted = subset.json()["scope"].split()
    scp = emulator_admin.decode_token(subset.json()["access_token"])["scp"].split()
    assert "Mail.Send" in scp and "Mail.Send" in granted
    # The response's ``scope`` names what the grant holds for the resource (Entra issues every consented
    # permission), so an app can read a grant's own scopes from it.
    assert (
        {s for s in granted if s not in ("openid", "profile")}
        == set(scp)
        == {
            "Mail.Send",
            "Mail.ReadWrite",
            "User.Read",
        }
    )
    # Bob's narrow grant still refreshes within its consent.
    assert _raw_refresh(kit, narrow["refresh_token"]).status_code == 200


def test_refresh_scope_rule_grant_holds_a_grant_to_its_original_request(emu_tenant, emulator_admin):
    kit = emu_tenant(users=("alice",))
    kit.sign_in("alice", ("Mail.Send", "Mail.ReadWrite"))  # alice consented to both ...
    narrow = kit.sign_in("alice", ("Mail.Send",))  # ... and this grant asked for Mail.Send only
    wider = "Mail.Send Mail.ReadWrite openid profile offline_access"
    assert _raw_refresh(kit, narrow["refresh_token"], wider).status_code == 200  # default: within consent
    emulator_admin.entra_settings(refresh_scope_rule="grant")
    refused = _raw_refresh(kit, narrow["refresh_token"], wider)
    assert refused.status_code == 400 and refused.json()["error_codes"] == [65001]
    same = _raw_refresh(kit, narrow["refresh_token"])
    assert same.status_code == 200
    # The grant's scopes travel with every refresh token it yields.
    assert _raw_refresh(kit, same.json()["refresh_token"], wider).json()["error_codes"] == [65001]
    with pytest.raises(EmulatorAdminError) as bad:
        emulator_admin.entra_settings(refresh_scope_rule="anything")
    assert bad.value.status == 400


# --- 4. preferred_username that is not an address; the optional email claim ----------------------------------


def test_id_token_preferred_username_phone_or_bare_name_and_graph_me(emu_tenant, emulator_admin, emulator):
    kit = emu_tenant(users=("alice", "bob", "dave"))
    emulator_admin.set_id_token_claims(kit.users["alice"]["oid"], {"preferred_username": "+14255550100", "email": None})
    emulator_admin.set_id_token_claims(kit.users["bob"]["upn"], {"preferred_username": "bob"})
    scopes = ("Mail.Send", "User.Read")
    alice, bob, dave = (kit.sign_in(name, scopes) for name in ("alice", "bob", "dave"))

    assert alice["id_token_claims"]["preferred_username"] == "+14255550100"
    assert "email" not in alice["id_token_claims"]
    assert bob["id_token_claims"]["preferred_username"] == "bob"
    assert bob["id_token_claims"]["email"] == kit.users["bob"]["mail"]
    assert dave["id_token_claims"]["preferred_username"] == kit.users["dave"]["upn"]  # others unaffected
    assert dave["id_token_claims"]["email"] == kit.users["dave"]["mail"]

    # "The address Graph reports": /me names the mailbox's SMTP address and UPN whatever the ID token said.
    http = strict_session(emulator.ca_path)
    me = http.get(f"{emulator.base_url}/v1.0/me", headers={"Authorization": f"Bearer {alice['access_token']}"})
    assert me.status_code == 200
    assert (me.json()["mail"], me.json()["userPrincipalName"]) == (
        kit.users["alice"]["mail"],
        kit.users["alice"]["upn"],
    )
    emulator_admin.set_id_token_claims(kit.users["alice"]["oid"], None)
    assert kit.sign_in("alice", scopes)["id_token_claims"]["preferred_username"] == kit.users["alice"]["upn"]
