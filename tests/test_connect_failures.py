"""Every way a connect can fail ends on return_url with a stable code and a sentence, never a 500."""

from __future__ import annotations

import pytest

from tests.fixtures.app import PUBLIC_BASE_URL, query_of

CONSUMER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"


def _attempt(mb, user: str, **link):
    """A whole connect attempt (claimed by the backend for the link's user_ref when it succeeds)."""
    return mb.connect(user, **link)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("admin_required", "admin_consent_required"), ("blocked", "admin_consent_required")],
)
def test_consent_policies_send_the_user_back_with_an_admin_consent_link(mailbridge, policy, expected):
    mb = mailbridge(consent_policy=policy)
    result = _attempt(mb, "alice")
    assert result["status"] == "error" and result["error"] == expected
    assert result["admin_consent_url"].startswith(f"{PUBLIC_BASE_URL}/api/admin-consent")
    assert "administrator" in result["error_description"]


def test_admin_consent_unblocks_the_tenant(mailbridge, emulator_admin):
    mb = mailbridge(consent_policy="admin_required")
    admin = mb.kit.add_user("itadmin", is_admin=True)
    assert _attempt(mb, "alice")["error"] == "admin_consent_required"

    start = mb.admin_consent_start(tenant=mb.kit.tid)
    assert start.status_code == 302
    consent_url = start.headers["Location"]
    assert f"/{mb.kit.tid}/v2.0/adminconsent?" in consent_url and "common" not in consent_url
    back = mb.admin.complete_authorize(consent_url, admin["upn"])
    assert back.startswith(f"{PUBLIC_BASE_URL}/api/admin-consent/callback")
    done = mb.admin_consent_callback(back)
    assert done.status_code == 200 and b"Approved" in done.get_body()

    assert _attempt(mb, "alice")["status"] == "connected"


def test_admin_consent_refuses_common_and_garbage(mailbridge):
    mb = mailbridge()
    for tenant in ("common", "consumers", "<script>"):
        resp = mb.http("admin_consent", params={"tenant": tenant})
        assert resp.status_code == 400, tenant


@pytest.mark.parametrize(
    ("failure", "code"),
    [("ca_block", "blocked_by_policy"), ("mfa_required", "mfa_required")],
)
def test_scripted_user_failures_map_to_stable_codes(mailbridge, failure, code):
    mb = mailbridge()
    mb.admin.set_failures(mb.kit.users["alice"]["upn"], add=[failure])
    result = _attempt(mb, "alice")
    assert result == {**result, "status": "error", "error": code}
    assert result["error_description"]


def test_user_who_cancels_is_told_so(mailbridge):
    mb = mailbridge()
    start = mb.start(mb.connect_link())
    back = mb.callback(mb.authorize(start.headers["Location"], "alice", action="cancel"))
    assert query_of(back.headers["Location"])["error"] == "user_declined"


def test_wrong_client_secret_is_app_misconfigured(mailbridge):
    mb = mailbridge(ENTRA_CLIENT_SECRET="not-the-secret")
    result = _attempt(mb, "alice")
    assert result["error"] == "app_misconfigured"


def test_personal_outlook_accounts_connect_with_common(mailbridge, emulator_admin):
    mb = mailbridge(ENTRA_TENANT="common", sign_in_audience="AzureADandPersonalMicrosoftAccount")
    carol = emulator_admin.create_user(CONSUMER_TENANT, f"carol{mb.kit.tid[:6]}@outlook.com")
    mb.kit.users["carol"] = carol
    result = _attempt(mb, "carol")
    assert result["status"] == "connected"
    view = mb.json(mb.http("get_connection", route_params={"connection_id": result["connection_id"]}))
    assert view["tenant_id"] == CONSUMER_TENANT


@pytest.mark.parametrize("kind", ["503", "reset"])
def test_token_endpoint_outage_at_the_callback_is_temporarily_unavailable(mailbridge, kind):
    """MSAL raises (MsalServiceError, or a requests error) instead of returning an error dict when the token
    endpoint answers 5xx or drops the connection: the browser goes back with a retryable code, not a 500."""
    mb = mailbridge()
    start = mb.start(mb.connect_link())
    redirect = mb.authorize(start.headers["Location"], "alice")
    mb.admin.add_fault("entra.token", kind, count=1)
    try:
        back = mb.callback(redirect)
    finally:
        mb.admin.clear_faults("entra.token")
    assert back.status_code == 302, back.get_body()
    assert query_of(back.headers["Location"])["error"] == "temporarily_unavailable"
