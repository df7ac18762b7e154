"""Emulated Entra ID driven by the real MSAL / azure-identity over HTTPS."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import urlencode

import msal
import pytest
from azure.identity import ManagedIdentityCredential

from emulator.client import EmulatorAdminError

DAY = 86400
# MSAL recommends form_post for web apps; these tests use the query response mode on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _authorize_url(kit, **overrides) -> str:
    params = {
        "client_id": kit.client_id,
        "response_type": "code",
        "redirect_uri": kit.redirect_uri,
        "scope": "Mail.Send openid profile offline_access",
        "state": "st-1",
        "nonce": "n-1",
    }
    params.update(overrides)
    params = {k: v for k, v in params.items() if v is not None}
    return f"{kit.authority}/oauth2/v2.0/authorize?{urlencode(params)}"


def _refresh(kit, refresh_token: str, scope: str = "Mail.Send openid profile offline_access") -> dict:
    resp = kit.http().post(
        f"{kit.authority}/oauth2/v2.0/token",
        data={
            "grant_type": "refresh_token",
            "client_id": kit.client_id,
            "client_secret": kit.client_secret,
            "refresh_token": refresh_token,
            "scope": scope,
        },
    )
    return {"status": resp.status_code, **resp.json()}


def _aadsts(body: dict) -> int:
    return body["error_codes"][0]


# --- discovery -------------------------------------------------------------------------------


def test_discovery_for_tenant_and_multi_tenant_aliases(emu_tenant, emu_http, emulator):
    kit = emu_tenant(users=())
    config = emu_http.get(f"{kit.authority}/v2.0/.well-known/openid-configuration").json()
    assert config["issuer"] == f"{emulator.base_url}/{kit.tid}/v2.0"
    assert config["token_endpoint"] == f"{emulator.base_url}/{kit.tid}/oauth2/v2.0/token"
    by_domain = emu_http.get(f"{emulator.base_url}/{kit.domain}/v2.0/.well-known/openid-configuration").json()
    assert by_domain["issuer"] == config["issuer"]
    orgs = emu_http.get(f"{emulator.base_url}/organizations/v2.0/.well-known/openid-configuration").json()
    assert orgs["issuer"] == f"{emulator.base_url}/{{tenantid}}/v2.0"
    assert orgs["authorization_endpoint"].endswith("/organizations/oauth2/v2.0/authorize")
    keys = emu_http.get(config["jwks_uri"]).json()["keys"]
    assert keys[0]["kty"] == "RSA" and keys[0]["kid"]
    unknown = emu_http.get(f"{emulator.base_url}/nosuch.example/v2.0/.well-known/openid-configuration")
    assert unknown.status_code == 400 and _aadsts(unknown.json()) == 90002


# --- the happy path with real MSAL ---------------------------------------------------------------


@pytest.mark.parametrize("authority_kind", ["tenant", "organizations", "common"])
def test_msal_auth_code_flow_with_pkce_and_silent_refresh(emu_tenant, emulator_admin, emulator, authority_kind):
    kit = emu_tenant()
    authority = kit.authority if authority_kind == "tenant" else f"{emulator.base_url}/{authority_kind}"
    app = kit.msal_app(authority=authority)
    flow = app.initiate_auth_code_flow(["Mail.Send"], redirect_uri=kit.redirect_uri)
    page = kit.http().get(flow["auth_uri"])
    assert page.status_code == 200
    for element_id in ('id="username"', 'id="accept"', 'id="cancel"', "Mail.Send"):
        assert element_id in page.text
    location = emulator_admin.complete_authorize(flow["auth_uri"], kit.users["alice"]["upn"])
    assert location.startswith(kit.redirect_uri)
    result = app.acquire_token_by_auth_code_flow(flow, emulator_admin.query_of(location))
    assert "access_token" in result, result
    claims = result["id_token_claims"]
    # MSAL sends sha256(nonce) as the nonce parameter; the id_token echoes what was sent.
    assert claims["nonce"] == hashlib.sha256(flow["nonce"].encode()).hexdigest()
    assert (claims["tid"], claims["oid"]) == (kit.tid, kit.users["alice"]["oid"])
    assert claims["aud"] == kit.client_id and claims["iss"] == f"{emulator.base_url}/{kit.tid}/v2.0"
    assert claims["preferred_username"] == kit.users["alice"]["upn"]
    assert 3600 <= result["expires_in"] <= 5400
    access = emulator_admin.decode_token(result["access_token"])
    assert access["scp"] == "Mail.Send" and access["tid"] == kit.tid
    assert access["aud"] in ("https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000")

    account = app.get_accounts()[0]
    assert account["home_account_id"] == f"{kit.users['alice']['oid']}.{kit.tid}"
    first_rt = result["refresh_token"]
    again = app.acquire_token_silent_with_error(["Mail.Send"], account, force_refresh=True)
    assert "access_token" in again, again
    assert again["refresh_token"] != first_rt  # rotation
    assert _refresh(kit, first_rt)["status"] == 200  # the old refresh token stays valid


def test_state_and_nonce_echoed_and_cancel_is_access_denied(emu_tenant, emulator_admin):
    kit = emu_tenant()
    verifier, challenge = _pkce()
    url = _authorize_url(kit, code_challenge=challenge, code_challenge_method="S256", state="xyz")
    location = emulator_admin.complete_authorize(url, kit.users["alice"]["upn"], action="cancel")
    query = emulator_admin.query_of(location)
    assert query["state"] == "xyz" and query["error"] == "access_denied"
    assert query["error_description"].startswith("AADSTS65004: User declined to consent")
    assert "error_uri" in query


def test_missing_or_plain_pkce_is_rejected(emu_tenant, emu_http):
    kit = emu_tenant()
    for extra in ({}, {"code_challenge": "abc", "code_challenge_method": "plain"}, {"code_challenge": "abc"}):
        resp = emu_http.get(_authorize_url(kit, **extra), allow_redirects=False)
        assert resp.status_code == 302
        query = dict(p.split("=", 1) for p in resp.headers["Location"].split("?", 1)[1].split("&"))
        assert query["error"] == "invalid_request" and query["state"] == "st-1"


def test_redirect_uri_mismatch_shows_error_page_not_redirect(emu_tenant, emu_http):
    kit = emu_tenant()
    _, challenge = _pkce()
    resp = emu_http.get(
        _authorize_url(
            kit, redirect_uri="https://evil.example/cb", code_challenge=challenge, code_challenge_method="S256"
        ),
        allow_redirects=False,
    )
    assert resp.status_code == 400 and "Location" not in resp.headers
    assert "AADSTS50011" in resp.text


def test_unknown_client_and_single_tenant_app_on_common(emu_tenant, emulator_admin, emu_http, emulator):
    kit = emu_tenant()
    _, challenge = _pkce()
    page = emu_http.get(
        _authorize_url(
            kit,
            client_id="11111111-2222-3333-4444-555555555555",
            code_challenge=challenge,
            code_challenge_method="S256",
        )
    )
    assert "AADSTS700016" in page.text
    single = emulator_admin.register_app(
        home_tid=kit.tid, sign_in_audience="AzureADMyOrg", redirect_uris=[kit.redirect_uri], secrets=["x"]
    )
    url = _authorize_url(kit, client_id=single["client_id"], code_challenge=challenge, code_challenge_method="S256")
    url = url.replace(f"/{kit.tid}/", "/common/")
    resp = emu_http.get(url, allow_redirects=False)
    assert "AADSTS50194" in emulator_admin.query_of(resp.headers["Location"])["error_description"]


def _code_for(kit, emulator_admin, challenge: str) -> str:
    url = _authorize_url(kit, code_challenge=challenge, code_challenge_method="S256")
    return emulator_admin.query_of(emulator_admin.complete_authorize(url, kit.users["alice"]["upn"]))["code"]


def _redeem(kit, code: str, verifier: str, redirect_uri: str | None = None) -> dict:
    resp = kit.http().post(
        f"{kit.authority}/oauth2/v2.0/token",
        data={
            "grant_type": "authorization_code",
            "client_id": kit.client_id,
            "client_secret": kit.client_secret,
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": redirect_uri or kit.redirect_uri,
            "scope": "Mail.Send openid profile offline_access",
        },
    )
    return {"status": resp.status_code, **resp.json()}


def test_code_is_single_use(emu_tenant, emulator_admin):
    kit = emu_tenant()
    verifier, challenge = _pkce()
    code = _code_for(kit, emulator_admin, challenge)
    assert _redeem(kit, code, verifier)["status"] == 200
    second = _redeem(kit, code, verifier)
    assert (second["status"], second["error"], _aadsts(second)) == (400, "invalid_grant", 54005)
    assert second["error_description"].startswith("AADSTS54005:")
    for key in ("timestamp", "trace_id", "correlation_id", "error_uri"):
        assert key in second


def test_pkce_verifier_and_redirect_uri_must_match(emu_tenant, emulator_admin):
    kit = emu_tenant()
    verifier, challenge = _pkce()
    code = _code_for(kit, emulator_admin, challenge)
    wrong = _redeem(kit, code, "not-the-verifier-" + "x" * 40)
    assert (wrong["error"], _aadsts(wrong)) == ("invalid_grant", 501481)
    other = _redeem(kit, code, verifier, redirect_uri="https://other.example/cb")
    assert other["error"] == "invalid_grant"
    assert _redeem(kit, code, verifier)["status"] == 200  # failed attempts did not burn the code


def test_code_expires_after_ten_minutes_on_the_emulator_clock(emu_tenant, emulator_admin):
    kit = emu_tenant()
    app = kit.msal_app()
    flow = app.initiate_auth_code_flow(["Mail.Send"], redirect_uri=kit.redirect_uri)
    location = emulator_admin.complete_authorize(flow["auth_uri"], kit.users["alice"]["upn"])
    emulator_admin.advance_clock(11 * 60)
    result = app.acquire_token_by_auth_code_flow(flow, emulator_admin.query_of(location))
    assert result["error"] == "invalid_grant" and 70008 in result["error_codes"]


def test_id_token_claims_knob_lays_claims_over_the_id_token(emu_tenant, emulator_admin):
    """A test knob (``/_emulator/entra`` ``id_token_claims``): the security suite's wrong nonce / foreign tid."""
    kit = emu_tenant()
    verifier, challenge = _pkce()
    settings = emulator_admin.entra_settings(id_token_claims={"nonce": "evil", "tid": "other-tid"})
    assert settings["id_token_claims"] == {"nonce": "evil", "tid": "other-tid"}
    body = _redeem(kit, _code_for(kit, emulator_admin, challenge), verifier)
    claims = emulator_admin.decode_token(body["id_token"])
    assert (claims["nonce"], claims["tid"], claims["oid"]) == ("evil", "other-tid", kit.users["alice"]["oid"])
    assert emulator_admin.entra_settings(id_token_claims=None)["id_token_claims"] is None
    with pytest.raises(EmulatorAdminError):
        emulator_admin.entra_settings(id_token_claims=["nonce"])
    body = _redeem(kit, _code_for(kit, emulator_admin, challenge), verifier)
    assert emulator_admin.decode_token(body["id_token"])["tid"] == kit.tid


def test_id_token_issuer_lifetime_and_null_claims(emu_tenant, emulator_admin, emulator):
    """Entra's ID token: ``iss`` of the user's tenant, one hour; knobs: ``id_token_lifetime_s`` (negative:
    already expired) and a null in ``id_token_claims`` leaving the claim out (tests/test_connect_id_token.py)."""
    kit = emu_tenant()
    verifier, challenge = _pkce()
    claims = emulator_admin.decode_token(_redeem(kit, _code_for(kit, emulator_admin, challenge), verifier)["id_token"])
    assert claims["iss"] == f"{emulator.base_url}/{kit.tid}/v2.0" and claims["exp"] - claims["iat"] == 3600
    emulator_admin.entra_settings(id_token_lifetime_s=-600, id_token_claims={"iss": None})
    claims = emulator_admin.decode_token(_redeem(kit, _code_for(kit, emulator_admin, challenge), verifier)["id_token"])
    assert claims["exp"] - claims["iat"] == -600 and "iss" not in claims
    for bad in ("600", 1.5, True):
        with pytest.raises(EmulatorAdminError):
            emulator_admin.entra_settings(id_token_lifetime_s=bad)
    assert emulator_admin.entra_settings(id_token_lifetime_s=None)["id_token_lifetime_s"] == 3600


# --- refresh token lifetime and revocation -------------------------------------------------------


def test_refresh_token_expires_after_90_idle_days_but_a_rotated_one_lives(emu_tenant, emulator_admin):
    kit = emu_tenant()
    first = kit.sign_in("alice")
    emulator_admin.advance_clock(1 * DAY)
    rotated = _refresh(kit, first["refresh_token"])
    assert rotated["status"] == 200
    emulator_admin.advance_clock(89 * DAY + 60)  # first RT is now 90 days + 1 min old, rotated one 89 days
    expired = _refresh(kit, first["refresh_token"])
    assert (expired["error"], _aadsts(expired)) == ("invalid_grant", 700082)
    assert _refresh(kit, rotated["refresh_token"])["status"] == 200


def test_msal_silent_refresh_reports_700082(emu_tenant, emulator_admin):
    kit = emu_tenant()
    app = kit.msal_app()
    kit.sign_in("alice", app=app)
    emulator_admin.advance_clock(91 * DAY)
    result = app.acquire_token_silent_with_error(["Mail.Send"], app.get_accounts()[0], force_refresh=True)
    assert result["error"] == "invalid_grant" and 700082 in result["error_codes"]


def test_password_reset_invalidates_older_refresh_tokens(emu_tenant, emulator_admin):
    kit = emu_tenant()
    before = kit.sign_in("alice")
    emulator_admin.advance_clock(5)
    emulator_admin.password_reset(kit.users["alice"]["oid"])
    emulator_admin.advance_clock(5)
    result = _refresh(kit, before["refresh_token"])
    assert (result["error"], _aadsts(result)) == ("invalid_grant", 50173)
    after = kit.sign_in("alice")  # signing in again after the reset works
    assert _refresh(kit, after["refresh_token"])["status"] == 200


def test_session_revocation_gives_70008(emu_tenant, emulator_admin):
    kit = emu_tenant()
    before = kit.sign_in("alice")
    emulator_admin.advance_clock(5)
    emulator_admin.revoke_sessions(kit.users["alice"]["upn"])
    emulator_admin.advance_clock(5)
    result = _refresh(kit, before["refresh_token"])
    assert (result["error"], _aadsts(result)) == ("invalid_grant", 70008)


def test_failures_at_refresh_mfa_and_consent_revoked(emu_tenant, emulator_admin):
    kit = emu_tenant()
    tokens = kit.sign_in("alice")
    oid = kit.users["alice"]["oid"]
    emulator_admin.set_failures(oid, add=["mfa_required"])
    mfa = _refresh(kit, tokens["refresh_token"])
    assert (mfa["error"], _aadsts(mfa), mfa["suberror"]) == ("interaction_required", 50076, "basic_action")
    assert "claims" in mfa
    emulator_admin.set_failures(oid, remove=["mfa_required"])
    emulator_admin.revoke_user_consent(oid, kit.client_id)
    revoked = _refresh(kit, tokens["refresh_token"])
    assert (revoked["error"], _aadsts(revoked), revoked["suberror"]) == ("invalid_grant", 65001, "consent_required")


# --- consent policy and user failure outcomes at authorize ---------------------------------------


def _authorize_as(kit, emulator_admin, user: str) -> dict:
    _, challenge = _pkce()
    url = _authorize_url(kit, code_challenge=challenge, code_challenge_method="S256")
    return emulator_admin.query_of(emulator_admin.complete_authorize(url, kit.users[user]["upn"]))


@pytest.mark.parametrize(
    ("policy", "failure", "error", "code"),
    [
        ("admin_required", None, "consent_required", "AADSTS65001"),
        ("blocked", None, "access_denied", "AADSTS90094"),
        ("user", "ca_block", "access_denied", "AADSTS53003"),
        ("user", "mfa_required", "interaction_required", "AADSTS50076"),
    ],
)
def test_authorize_outcomes(emu_tenant, emulator_admin, policy, failure, error, code):
    kit = emu_tenant(consent_policy=policy)
    if failure:
        emulator_admin.set_failures(kit.users["alice"]["oid"], add=[failure])
    query = _authorize_as(kit, emulator_admin, "alice")
    assert query["error"] == error and query["error_description"].startswith(code + ":")
    assert query["state"] == "st-1" and query["error_uri"]
    assert "code" not in query


def test_admin_consent_unblocks_an_admin_required_tenant(emu_tenant, emulator_admin, emu_http, emulator):
    kit = emu_tenant(consent_policy="admin_required")
    kit.add_user("boss", is_admin=True)
    assert _authorize_as(kit, emulator_admin, "alice")["error"] == "consent_required"
    params = {
        "client_id": kit.client_id,
        "redirect_uri": kit.redirect_uri,
        "state": "ac-1",
        "scope": "https://graph.microsoft.com/.default",
    }
    common = emu_http.get(f"{emulator.base_url}/common/v2.0/adminconsent?{urlencode(params)}", allow_redirects=False)
    assert emulator_admin.query_of(common.headers["Location"])["error"] == "invalid_request"
    url = f"{emulator.base_url}/organizations/v2.0/adminconsent?{urlencode(params)}"
    page = emu_http.get(url)
    assert page.status_code == 200 and 'id="accept"' in page.text
    with pytest.raises(Exception, match="90094"):
        emulator_admin.complete_authorize(url, kit.users["alice"]["upn"])  # not an admin
    done = emulator_admin.query_of(emulator_admin.complete_authorize(url, kit.users["boss"]["upn"]))
    assert done == {"admin_consent": "True", "tenant": kit.tid, "scope": params["scope"], "state": "ac-1"}
    assert "access_token" in kit.sign_in("alice")


def test_prompt_none_needs_a_session(emu_tenant, emulator_admin):
    kit = emu_tenant()
    _, challenge = _pkce()
    silent = _authorize_url(kit, code_challenge=challenge, code_challenge_method="S256", prompt="none")
    session = kit.http()
    resp = session.get(silent, allow_redirects=False)
    assert emulator_admin.query_of(resp.headers["Location"])["error"] == "login_required"
    interactive = _authorize_url(kit, code_challenge=challenge, code_challenge_method="S256")
    session.post(
        interactive, data={"username": kit.users["alice"]["upn"], "action": "accept"}, allow_redirects=False
    )  # sets the emulator's SSO cookie on this session
    again = session.get(silent, allow_redirects=False)
    assert "code" in emulator_admin.query_of(again.headers["Location"])


def test_personal_accounts_through_consumers(emu_tenant, emulator_admin, emulator):
    kit = emu_tenant(users=(), sign_in_audience="AzureADandPersonalMicrosoftAccount")
    upn = f"p{secrets.token_hex(4)}@outlook.com"
    person = emulator_admin.create_user("9188040d-6c67-4c5b-b112-36a304b66dad", upn)
    kit.users["me"] = person
    result = kit.sign_in("me", app=kit.msal_app(authority=f"{emulator.base_url}/consumers"))
    assert result["id_token_claims"]["tid"] == "9188040d-6c67-4c5b-b112-36a304b66dad"


# --- client authentication ---------------------------------------------------------------------


def test_wrong_and_expired_client_secret(emu_tenant, emulator_admin, emulator):
    kit = emu_tenant(secret_expires_in_s=3600)
    wrong = msal.ConfidentialClientApplication(
        kit.client_id,
        client_credential="nope",
        authority=kit.authority,
        instance_discovery=False,
        http_client=kit.http(),
    ).acquire_token_for_client(["https://vault.azure.net/.default"])
    assert wrong["error"] == "invalid_client" and 7000215 in wrong["error_codes"]
    ok = kit.msal_app().acquire_token_for_client(["https://vault.azure.net/.default"])
    assert "access_token" in ok
    assert emulator_admin.decode_token(ok["access_token"])["aud"] == "https://vault.azure.net"
    emulator_admin.advance_clock(3601)
    expired = kit.msal_app().acquire_token_for_client(["https://vault.azure.net/.default"])
    assert expired["error"] == "invalid_client" and 7000222 in expired["error_codes"]


def test_client_assertion_from_the_managed_identity_endpoint(emu_tenant, emulator_admin, emulator, monkeypatch):
    kit = emu_tenant()
    identity = emulator_admin.create_managed_identity(kit.tid)
    fic_app = emulator_admin.register_app(
        home_tid=kit.tid,
        redirect_uris=[kit.redirect_uri],
        federated_credentials=[{"issuer": identity["issuer"], "subject": identity["principal_id"]}],
    )
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{emulator.base_url}/_msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", emulator.state.identity_header)
    credential = ManagedIdentityCredential(client_id=identity["client_id"], connection_verify=str(emulator.ca_path))

    def assertion() -> str:
        return credential.get_token("api://AzureADTokenExchange/.default").token

    app = msal.ConfidentialClientApplication(
        fic_app["client_id"],
        client_credential={"client_assertion": assertion},
        authority=kit.authority,
        instance_discovery=False,
        http_client=kit.http(),
    )
    app_only = app.acquire_token_for_client(["https://vault.azure.net/.default"])
    assert "access_token" in app_only, app_only
    kit.app = fic_app  # delegated flow with the same secretless app
    delegated = kit.sign_in("alice", app=app)
    assert "access_token" in delegated, delegated

    stranger = emulator_admin.register_app(
        home_tid=kit.tid, federated_credentials=[{"issuer": identity["issuer"], "subject": "someone-else"}]
    )
    denied = msal.ConfidentialClientApplication(
        stranger["client_id"],
        client_credential={"client_assertion": assertion},
        authority=kit.authority,
        instance_discovery=False,
        http_client=kit.http(),
    ).acquire_token_for_client(["https://vault.azure.net/.default"])
    assert 70021 in denied["error_codes"]


def test_msi_endpoint_requires_the_identity_header(emulator, emu_http, emulator_admin):
    identity = emulator_admin.create_managed_identity()
    url = f"{emulator.base_url}/_msi/token?api-version=2019-08-01&resource=api://AzureADTokenExchange"
    assert emu_http.get(url + f"&client_id={identity['client_id']}").status_code == 401
    ok = emu_http.get(
        url + f"&client_id={identity['client_id']}", headers={"X-IDENTITY-HEADER": emulator.state.identity_header}
    )
    assert ok.status_code == 200 and set(ok.json()) >= {"access_token", "expires_on", "resource", "token_type"}


def test_default_scope_consents_to_the_configured_permissions(emu_tenant, emulator_admin):
    kit = emu_tenant()
    result = kit.sign_in("alice", scopes=("https://graph.microsoft.com/.default",))
    assert "access_token" in result, result
    scp = set(emulator_admin.decode_token(result["access_token"])["scp"].split())
    assert {"Mail.Send", "User.Read"} <= scp


def test_form_post_response_mode(emu_tenant, emulator_admin):
    kit = emu_tenant()
    _, challenge = _pkce()
    url = _authorize_url(kit, code_challenge=challenge, code_challenge_method="S256", response_mode="form_post")
    resp = kit.http().post(url, data={"username": kit.users["alice"]["upn"], "action": "accept"}, allow_redirects=False)
    assert resp.status_code == 200
    assert f"action='{kit.redirect_uri}'" in resp.text and "name='code'" in resp.text


def test_sign_in_comes_first_then_the_consent_page_or_need_admin_approval(emu_tenant, emulator_admin, emu_http):
    """Microsoft's order: sign in, then the permission page (only if something is left to consent to) or,
    where the organisation does not let the user consent, "Need admin approval" (never the permissions)."""
    kit = emu_tenant(users=("ann",))
    app = kit.msal_app()
    flow = app.initiate_auth_code_flow(["Mail.Send"], redirect_uri=kit.redirect_uri)
    first = emu_http.get(flow["auth_uri"], timeout=10)
    assert 'id="signin"' in first.text and 'id="permissions"' not in first.text
    consent = emu_http.post(
        flow["auth_uri"], data={"username": kit.users["ann"]["upn"], "action": "signin"}, timeout=10
    )
    assert consent.status_code == 200 and 'id="consent"' in consent.text
    for scope in ("Mail.Send", "offline_access", "openid", "profile"):
        assert f"<li>{scope}</li>" in consent.text, scope
    done = emu_http.post(
        flow["auth_uri"],
        data={"username": kit.users["ann"]["upn"], "action": "accept"},
        allow_redirects=False,
        timeout=10,
    )
    assert "code=" in done.headers["Location"]
    # Consented now: the next sign-in goes straight back to the app.
    again = app.initiate_auth_code_flow(["Mail.Send"], redirect_uri=kit.redirect_uri)
    straight = emu_http.post(
        again["auth_uri"],
        data={"username": kit.users["ann"]["upn"], "action": "signin"},
        allow_redirects=False,
        timeout=10,
    )
    assert straight.status_code == 302 and "code=" in straight.headers["Location"]

    strict = emu_tenant(users=("cal",), consent_policy="admin_required")
    flow = strict.msal_app().initiate_auth_code_flow(["Mail.Send"], redirect_uri=strict.redirect_uri)
    page = emu_http.post(
        flow["auth_uri"], data={"username": strict.users["cal"]["upn"], "action": "signin"}, timeout=10
    )
    assert 'id="need-admin-approval"' in page.text and 'id="permissions"' not in page.text
    assert 'id="request-approval"' not in page.text  # no admin consent workflow in this tenant
    back = emulator_admin.query_of(emulator_admin.complete_authorize(flow["auth_uri"], strict.users["cal"]["upn"]))
    assert back["error"] == "consent_required" and "AADSTS65001" in back["error_description"]


def test_admin_consent_workflow_lets_the_user_request_approval(emu_tenant, emulator_admin, emu_http):
    kit = emu_tenant(users=("dee",), consent_policy="admin_required")
    emulator_admin._call("PATCH", f"/_emulator/tenants/{kit.tid}", {"admin_consent_workflow": True})
    flow = kit.msal_app().initiate_auth_code_flow(["Mail.Send"], redirect_uri=kit.redirect_uri)
    page = emu_http.post(flow["auth_uri"], data={"username": kit.users["dee"]["upn"], "action": "signin"}, timeout=10)
    assert 'id="request-approval"' in page.text and 'id="justification"' in page.text
    back = emulator_admin.query_of(
        emulator_admin.complete_authorize(
            flow["auth_uri"], kit.users["dee"]["upn"], on_admin_approval="request", justification="for invoices"
        )
    )
    assert back["error"] == "access_denied" and "AADSTS90095" in back["error_description"]
    (request,) = emulator_admin.tenant(kit.tid)["consent_requests"]
    assert (request["user"], request["justification"]) == (kit.users["dee"]["upn"], "for invoices")
    assert "https://graph.microsoft.com/mail.send" in request["scopes"]
