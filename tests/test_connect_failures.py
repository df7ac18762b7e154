"""Every way a connect can fail ends on return_url with a stable code and a sentence, never a 500."""

from __future__ import annotations

import pytest

from emulator.client import EmulatorAdminError
from tests.fixtures.app import PUBLIC_BASE_URL, RETURN_ORIGIN, query_of

CONSUMER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"


def _attempt(mb, user: str, **link):
    start = mb.start(mb.connect_link(**link))
    assert start.status_code == 302
    back = mb.callback(mb.authorize(start.headers["Location"], user))
    assert back.status_code == 302, back.get_body()
    location = back.headers["Location"]
    assert location.startswith(RETURN_ORIGIN)
    return query_of(location)


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

    start = mb.http("admin_consent", params={"tenant": mb.kit.tid})
    assert start.status_code == 302
    consent_url = start.headers["Location"]
    assert f"/{mb.kit.tid}/v2.0/adminconsent?" in consent_url and "common" not in consent_url
    back = mb.admin.complete_authorize(consent_url, admin["upn"])
    assert back.startswith(f"{PUBLIC_BASE_URL}/api/admin-consent/callback")
    done = mb.http("admin_consent_callback", url=back)
    assert done.status_code == 200 and b"Approved" in done.get_body()
    assert mb.services.tenants.get(mb.kit.tid) is not None

    assert _attempt(mb, "alice")["status"] == "connected"


def test_admin_consent_refuses_common_and_garbage(mailbridge):
    mb = mailbridge()
    for tenant in ("common", "consumers", "<script>"):
        resp = mb.http("admin_consent", params={"tenant": tenant})
        assert resp.status_code == 400, tenant
    assert mb.http("admin_consent_callback", params={"state": "nope", "admin_consent": "True"}).status_code == 400


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


def test_code_redeemed_too_late_is_invalid_state(mailbridge):
    mb = mailbridge()
    start = mb.start(mb.connect_link())
    redirect = mb.authorize(start.headers["Location"], "alice")
    mb.admin.advance_clock(11 * 60)  # authorization codes live about 10 minutes
    assert query_of(mb.callback(redirect).headers["Location"])["error"] == "invalid_state"


def test_reconnect_by_another_account_is_refused_and_recorded(mailbridge):
    mb = mailbridge()
    cid = mb.connect("alice", user_ref="u9")["connection_id"]
    result = _attempt(mb, "bob", user_ref="u9", connection_id=cid)
    assert result["error"] == "identity_mismatch"
    view = mb.json(mb.http("get_connection", route_params={"connection_id": cid}))
    assert view["last_error"]["code"] == "identity_mismatch" and view["mailbox"] == mb.kit.users["alice"]["upn"]
    assert _attempt(mb, "alice", user_ref="u9", connection_id=cid) == {
        "tab": "1",
        "status": "connected",
        "connection_id": cid,
    }
    other_user = mb.http(
        "create_connection_link",
        "POST",
        body={"user_ref": "someone-else", "return_url": RETURN_ORIGIN, "connection_id": cid},
    )
    assert other_user.status_code == 404


def test_single_tenant_deployment_signs_in_only_its_own_tenant(mailbridge, emu_tenant):
    mb = mailbridge()
    mb_single = mailbridge(ENTRA_TENANT=mb.kit.tid)
    foreign = emu_tenant(users=("mallory",))
    location = mb_single.start(mb_single.connect_link()).headers["Location"]
    assert location.split("/")[3] == mb.kit.tid  # the authority is the tenant, not organizations/common
    with pytest.raises(EmulatorAdminError, match="AADSTS"):
        mb_single.admin.complete_authorize(location, foreign.users["mallory"]["upn"])


def test_personal_outlook_accounts_connect_with_common(mailbridge, emulator_admin):
    mb = mailbridge(ENTRA_TENANT="common", sign_in_audience="AzureADandPersonalMicrosoftAccount")
    carol = emulator_admin.create_user(CONSUMER_TENANT, f"carol{mb.kit.tid[:6]}@outlook.com")
    mb.kit.users["carol"] = carol
    result = _attempt(mb, "carol")
    assert result["status"] == "connected"
    view = mb.json(mb.http("get_connection", route_params={"connection_id": result["connection_id"]}))
    assert view["tenant_id"] == CONSUMER_TENANT
