"""Issue 14 item 6: a refused *app* credential is the operator's problem, never the users'.

Entra answering ``invalid_client`` / AADSTS7000215, 7000222, 70021, 700211-700213, 7002137, 700024 or 500133 (the
last one under ``invalid_grant``) to a refresh says Mailbridge's own credential is wrong (or still propagating): the
message waits (transient), the connection stays ``connected`` and due in the keep-alive index, an error line and one
``mailbridge.app.credential_failed`` event tell the operator, and ``GET /api/health`` says so until a refresh
succeeds again. Only ``invalid_grant`` and interaction errors mark a connection ``reauth_required``.
"""

from __future__ import annotations

import json
import logging

import pytest
import requests
from azure.core.exceptions import AzureError, ClientAuthenticationError, ServiceRequestError
from azure.identity import CredentialUnavailableError
from msal.exceptions import MsalServiceError

from emulator.entra_app_errors import APP_CREDENTIAL_ERRORS
from shared.services import reset_services
from shared.tokens.entra_errors import classify, map_entra_error
from shared.tokens.refresh import KeepAlive
from tests.fixtures.emulator import strict_session
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)

DAY = 86400


def _payload(code: int) -> dict:
    error = APP_CREDENTIAL_ERRORS[code][0]
    return {"error": error, "error_description": f"AADSTS{code}: ...", "error_codes": [code]}


# Codes that name the app missing or disabled in one directory: a tenant's removal unless the home tenant refuses too
# (issue 25; every other `unauthorized_client` is read the same way: the AADSTS reference's OAuth error table).
TENANT_SIDE = {700016, 700011, 70001}


@pytest.mark.parametrize("code", sorted(APP_CREDENTIAL_ERRORS))
def test_classify_says_a_refused_app_credential_is_the_operators(code):
    """BUG (review against the AADSTS reference): AADSTS500133 "Assertion isn't within its valid time range" comes as
    ``invalid_grant``; classify called it the user's, so a stale client assertion marked every refreshed connection
    reauth_required."""
    assert classify(_payload(code)) == ("tenant" if code in TENANT_SIDE else "operator")


@pytest.mark.parametrize(
    ("error", "code", "party"),
    [
        ("invalid_client", None, "operator"),
        ("unauthorized_client", None, "tenant"),  # "isn't added to the user's Microsoft Entra tenant"
        ("unauthorized_client", 7000999, "tenant"),
        ("invalid_grant", 70002, "operator"),  # InvalidClient: "Error validating the credentials"
        ("invalid_grant", 500133, "operator"),
        ("temporarily_unavailable", 90033, "transient"),  # MsodsServiceUnavailable (azure-sdk-for-python#14241)
        ("invalid_grant", 700082, "user"),
        ("invalid_grant", 70008, "user"),
        ("invalid_grant", 50173, "user"),
        ("invalid_grant", 65001, "user"),
        ("interaction_required", 50076, "user"),
        ("invalid_grant", None, "user"),
        ("server_error", None, "transient"),
        ("temporarily_unavailable", None, "transient"),
        ("invalid_request", 50196, "transient"),
        ("invalid_request", 90002, "operator"),  # not the user's grant: reconnecting would not help
        ("invalid_scope", 70011, "operator"),
        ("unsupported_grant_type", None, "operator"),
    ],
)
def test_classify_keeps_user_and_transient_errors_apart(error, code, party):
    payload = {"error": error, **({"error_codes": [code]} if code else {})}
    assert classify(payload) == party


def test_an_assertion_out_of_its_time_range_sent_as_invalid_grant_is_the_operators():
    """The body Entra sent for a client assertion past its time range (MicrosoftDocs/azure-docs#16399): both codes,
    the first one InvalidClient, under `invalid_grant`."""
    body = {
        "error": "invalid_grant",
        "error_description": "AADSTS70002: Error validating credentials. AADSTS500133: Assertion is not within its "
        "valid time range\r\nTrace ID: x\r\nCorrelation ID: y\r\nTimestamp: 2018-10-05 07:30:02Z",
        "error_codes": [70002, 500133],
    }
    assert classify(body) == "operator"
    err = map_entra_error(body, during="refresh")
    assert err.code == "app_credential_failed" and err.transient, err


@pytest.mark.parametrize(
    "exc",
    [
        ClientAuthenticationError("managed identity endpoint refused"),
        CredentialUnavailableError("no managed identity endpoint"),
        AzureError("identity endpoint unreachable"),
        ServiceRequestError("connection refused"),
        MsalServiceError(error="server_error", error_description="5xx"),
        requests.ConnectionError("reset"),
    ],
)
def test_classify_says_raised_credential_and_endpoint_failures_are_transient(exc):
    assert classify(exc) == "transient"


def test_the_emulator_switch_answers_each_app_credential_error(emu_tenant, emulator, emulator_admin):
    kit = emu_tenant(users=("alice",))
    rt = kit.sign_in("alice")["refresh_token"]
    http = strict_session(emulator.ca_path)
    url = f"{kit.authority}/oauth2/v2.0/token"
    form = {"client_id": kit.client_id, "client_secret": kit.client_secret, "grant_type": "refresh_token"}
    form |= {"refresh_token": rt, "scope": "Mail.Send offline_access"}
    for code, (error, status, _) in sorted(APP_CREDENTIAL_ERRORS.items()):
        emulator_admin.entra_settings(app_credential_error={"code": code, "grants": ["refresh_token"]})
        resp = http.post(url, data=form)
        body = resp.json()
        assert (resp.status_code, body["error"], body["error_codes"]) == (status, error, [code]), body
        assert body["error_description"].startswith(f"AADSTS{code}: ")
        app_only = {"client_id": kit.client_id, "client_secret": kit.client_secret, "grant_type": "client_credentials"}
        app_only["scope"] = "https://vault.azure.net/.default"
        assert http.post(url, data=app_only).status_code == 200, "only the grants named are refused"
    emulator_admin.entra_settings(app_credential_error={"code": 7000222, "client_id": "someone-else"})
    assert http.post(url, data=form).status_code == 200, "another app's switch does not touch this one"
    emulator_admin.entra_settings(app_credential_error=None)
    assert "access_token" in http.post(url, data=form).json()
    bad = http.post(f"{emulator.base_url}/_emulator/entra", json={"app_credential_error": {"code": 70008}})
    assert bad.status_code == 400, "only app-credential codes: 70008 is the user's grant"


def _health(mb) -> tuple[int, dict]:
    resp = mb.http("health")
    return resp.status_code, json.loads(resp.get_body())


def _credential_events(kit) -> list[dict]:
    return [e for e in kit.events() if e["type"] == "mailbridge.app.credential_failed"]


def test_a_refused_app_credential_reschedules_the_message_and_keeps_the_connection(
    send_kit, emulator, emulator_admin, caplog
):
    """BUG (issue 14 item 6): map_entra_error turned invalid_client / AADSTS7000222 during a refresh into
    ReauthRequired, so TokenService marked the connection reauth_required, dropped it from the keep-alive
    index and the message failed: one expired client secret made every user reconnect."""
    kit = send_kit()
    emulator.state.entra.settings.access_token_lifetime_s = 120  # the next send must redeem the refresh token
    cid = kit.connect("alice")
    kit.services.tokens.forget(cid)
    due_at = kit.services.connections.get(cid).refresh_due_at
    assert _health(kit.mb)[0] == 200
    emulator_admin.entra_settings(app_credential_error={"code": 7000222, "grants": ["refresh_token"]})
    first, second = kit.message(cid), kit.message(cid)
    with caplog.at_level(logging.ERROR, logger="shared.tokens.app_credential"):
        outcomes = [kit.services.sender.process(m, f"q-{m['id']}") for m in (first, second)]
    for outcome in outcomes:
        assert outcome.status == "queued" and outcome.delay > 0, outcome
        assert outcome.error is not None and outcome.error.code == "app_credential_failed"
        assert "7000222" in (outcome.error.detail or "")
    conn = kit.services.connections.get(cid)
    assert conn.status == "connected" and conn.last_error_code is None
    assert conn.refresh_due_at == due_at
    assert (f"{int(due_at):012d}-{cid}", cid) in kit.services.connections.due_for_refresh(due_at, 1000)
    assert any("Operator" in r.getMessage() and "7000222" in r.getMessage() for r in caplog.records)
    (event,) = _credential_events(kit)  # one per episode, however many messages hit it
    assert event["data"]["code"] == "app_credential_failed" and "7000222" in event["data"]["reason"]
    assert not [e for e in kit.events() if e["type"] == "mailbridge.connection.reauth_required"]
    status, body = _health(kit.mb)
    assert status == 503 and body["error"]["code"] == "app_credential_failed"
    assert body["app_credential"]["ok"] is False and "7000222" in body["app_credential"]["reason"]

    emulator_admin.entra_settings(app_credential_error=None)  # the operator rotated the secret
    assert kit.services.sender.process(first, "q-again").status == "sent"
    status, body = _health(kit.mb)
    assert status == 200 and body["app_credential"] == {"ok": True}


def test_health_reports_the_failure_another_instance_saw(send_kit, emulator, emulator_admin):
    """The row is in Storage: an instance that never refreshed still reports it, and clears it when its own
    refresh succeeds."""
    kit = send_kit()
    emulator.state.entra.settings.access_token_lifetime_s = 120
    cid = kit.connect("alice")
    kit.services.tokens.forget(cid)
    emulator_admin.entra_settings(app_credential_error={"code": 700213, "grants": ["refresh_token"]})
    assert kit.services.sender.process(kit.message(cid), "q-1").error.code == "app_credential_failed"
    reset_services()  # "another instance": nothing in memory
    status, body = _health(kit.mb)
    assert status == 503 and "700213" in body["app_credential"]["reason"]
    emulator_admin.entra_settings(app_credential_error=None)
    assert kit.services.tokens.refresh(kit.services.connections.get(cid), force=True).refreshed
    reset_services()
    assert _health(kit.mb)[0] == 200


def test_the_keep_alive_leaves_connections_due_while_the_app_credential_is_refused(
    mailbridge, emulator, emulator_admin
):
    mb = mailbridge()
    mb.services.clock = emulator.state.clock.now
    cids = [mb.connect(user, user_ref=f"ref-{user}")["connection_id"] for user in ("alice", "bob")]
    emulator.state.clock.advance(61 * DAY)
    # AADSTS700016 names no credential: from a refresh alone it is one tenant's removal unless the home tenant
    # refuses the app too (tests/test_keepalive_isolation.py); here only refresh grants are refused.
    for code in sorted(set(APP_CREDENTIAL_ERRORS) - TENANT_SIDE):
        reset_services()  # a fresh MSAL http cache and Key Vault credential per code (one process each)
        mb.services.clock = emulator.state.clock.now
        emulator_admin.entra_settings(app_credential_error={"code": code, "grants": ["refresh_token"]})
        report = KeepAlive(mb.services, concurrency=1).sweep()
        # The first refusal stops the sweep: every other connection would fail alike (and cost a vault read).
        assert (report.due_seen, report.refreshed, report.reauth_required) == (1, 0, 0), (code, report)
        assert report.transient_failures == 1 and report.app_credential_failed and report.stopped_early
        assert [mb.services.connections.get(cid).status for cid in cids] == ["connected"] * 2, code
    emulator_admin.entra_settings(app_credential_error=None)
    reset_services()
    mb.services.clock = emulator.state.clock.now
    assert KeepAlive(mb.services).sweep().refreshed == 2
