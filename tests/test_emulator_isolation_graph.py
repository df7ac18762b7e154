"""Isolation faults on the Graph side (issue 25), over real HTTPS with requests.

A tenant without Exchange Online answers every mail call 401 OrganizationFromTenantGuidNotFound whatever the
token; one mailbox's state (not REST-enabled, suspended, full, submission blocked, over a consumer quota, a
restricted sender) refuses that mailbox's calls only. Each state is set and cleared through the admin API and
survives an emulator restart (emulator/persist.py).
"""

from __future__ import annotations

import pytest

from emulator.app import Emulator
from emulator.client import EmulatorAdmin, EmulatorAdminError
from stack.azurite import free_port
from tests import emulator_graph_support as support
from tests.emulator_graph_support import GraphKit
from tests.fixtures.emulator import strict_session

graph_kit = support.graph_kit
MAIL = ("Mail.Send", "Mail.ReadWrite", "User.Read")


def _error(resp) -> tuple[int, str]:
    body = resp.json()["error"]
    assert set(body["innerError"]) >= {"date", "request-id", "client-request-id"}
    return resp.status_code, body["code"]


def _draft(kit: GraphKit, token: str, subject: str):
    return kit.call("POST", "/v1.0/me/messages", token, json=kit.simple(subject))


def _delivered(admin: EmulatorAdmin, address: str, key: str) -> int:
    return admin.delivered(address)["counts_by_key"].get(key, 0)


# --- a tenant without Exchange Online ---------------------------------------------------------------------------


def test_tenant_without_exchange_online_answers_401_whatever_the_token(graph_kit, emu_tenant, emulator_admin):
    kit, tid = graph_kit, graph_kit.tenant.tid
    other = GraphKit(emu_tenant(users=("zoe",)), graph_kit.http)
    emulator_admin.set_exchange_online(tid, False)
    delegated, app_only = kit.token("alice", *MAIL), kit.app_token("Mail.Send", "Mail.ReadWrite")

    sent = kit.send(delegated, kit.simple("no-exo"))
    assert _error(sent) == (401, "OrganizationFromTenantGuidNotFound")
    assert sent.json()["error"]["message"] == f"The tenant for tenant guid '{tid}' does not exist."
    for resp in (
        _draft(kit, delegated, "no-exo-draft"),
        kit.call("GET", "/v1.0/me/messages", delegated),
        kit.call("GET", "/v1.0/me/mailFolders/drafts/messages", delegated),
        kit.send(app_only, kit.simple("no-exo-app"), user=kit.addr("alice")),
        kit.call("GET", "/v1.0/me", app_only),  # MicrosoftDocs/azure-docs#32957
    ):
        assert _error(resp) == (401, "OrganizationFromTenantGuidNotFound")
    # A delegated /me is a directory read: it works, and no Exchange means no `mail`.
    me = kit.call("GET", "/v1.0/me", delegated)
    assert me.status_code == 200 and me.json()["mail"] is None
    assert me.json()["userPrincipalName"] == kit.tenant.users["alice"]["upn"]
    assert _delivered(emulator_admin, kit.addr("alice"), "no-exo") == 0
    # Another tenant is untouched; turning Exchange Online back on heals this one.
    assert other.send(other.token("zoe"), other.simple("zoe-ok")).status_code == 202
    emulator_admin.set_exchange_online(tid, True)
    assert kit.send(delegated, kit.simple("exo-back")).status_code == 202
    assert _delivered(emulator_admin, kit.addr("alice"), "exo-back") == 1


# --- one mailbox's state ----------------------------------------------------------------------------------------


def test_mailbox_not_enabled_for_rest_is_404_on_every_mailbox_call(graph_kit, emulator_admin):
    kit = graph_kit
    alice = kit.token("alice", *MAIL)
    draft = _draft(kit, alice, "before").json()["id"]
    summary = emulator_admin.set_mailbox_state(kit.addr("alice"), "not_enabled")
    assert summary["state"] == {"state": "not_enabled", "status": None}

    sent = kit.send(alice, kit.simple("ne"))
    assert _error(sent) == (404, "MailboxNotEnabledForRESTAPI")
    assert sent.json()["error"]["message"] == "The mailbox is either inactive, soft-deleted, or is hosted on-premise."
    for resp in (
        _draft(kit, alice, "ne-draft"),
        kit.call("GET", "/v1.0/me/messages", alice),
        kit.call("GET", f"/v1.0/me/messages/{draft}", alice),
        kit.call("POST", f"/v1.0/me/messages/{draft}/send", alice),
        kit.send(kit.app_token("Mail.Send"), kit.simple("ne-app"), user=kit.addr("alice")),
    ):
        assert _error(resp) == (404, "MailboxNotEnabledForRESTAPI")
    assert kit.call("GET", "/v1.0/me", alice).status_code == 200  # the user object is still there
    assert kit.send(kit.token("bob"), kit.simple("bob-ok")).status_code == 202  # the next mailbox is fine
    assert _delivered(emulator_admin, kit.addr("bob"), "bob-ok") == 1
    emulator_admin.set_mailbox_state(kit.addr("alice"), None)
    assert kit.send(alice, kit.simple("ne-cleared")).status_code == 202


@pytest.mark.parametrize(
    ("state", "status", "code"),
    [
        ("submission_blocked", 403, "ErrorMessageSubmissionBlocked"),
        ("message_limit", 403, "ErrorExceededMessageLimit"),
        ("recipient_quota", 400, "ErrorExceededMaxRecipientLimit"),
    ],
)
def test_submission_states_refuse_sends_only(graph_kit, emulator_admin, state, status, code):
    kit = graph_kit
    alice = kit.token("alice", *MAIL)
    emulator_admin.set_mailbox_state(kit.addr("alice"), state)
    assert _error(kit.send(alice, kit.simple(f"{state}-send"))) == (status, code)
    draft = _draft(kit, alice, f"{state}-draft")
    assert draft.status_code == 201  # the mailbox works; only submission is refused
    assert _error(kit.call("POST", f"/v1.0/me/messages/{draft.json()['id']}/send", alice)) == (status, code)
    assert [d["idempotencyKey"] for d in emulator_admin.drafts(kit.addr("alice"))] == [f"{state}-draft"]
    assert kit.call("GET", "/v1.0/me/messages", alice).status_code == 200
    assert _delivered(emulator_admin, kit.addr("alice"), f"{state}-send") == 0
    assert kit.send(kit.token("bob"), kit.simple(f"{state}-bob")).status_code == 202
    assert _delivered(emulator_admin, kit.addr("bob"), f"{state}-bob") == 1


def test_suspended_account_refuses_every_mailbox_call(graph_kit, emulator_admin):
    kit = graph_kit
    alice = kit.token("alice", *MAIL)
    emulator_admin.set_mailbox_state(kit.addr("alice"), "account_suspended")
    for resp in (
        kit.send(alice, kit.simple("susp")),
        _draft(kit, alice, "susp-draft"),
        kit.call("GET", "/v1.0/me/messages", alice),
    ):
        assert _error(resp) == (403, "ErrorAccountSuspend")
    assert kit.send(kit.token("carol"), kit.simple("carol-ok")).status_code == 202


def test_full_mailbox_refuses_writes_and_sends_but_reads_and_deletes_work(graph_kit, emulator_admin):
    kit = graph_kit
    alice = kit.token("alice", *MAIL)
    old = _draft(kit, alice, "full-old").json()["id"]
    emulator_admin.set_mailbox_state(kit.addr("alice"), "quota_exceeded")
    refused = kit.send(alice, kit.simple("full-send"))
    assert _error(refused) == (403, "ErrorQuotaExceeded")
    assert refused.json()["error"]["message"] == "Mailbox has exceeded maximum mailbox size."
    assert _error(_draft(kit, alice, "full-draft")) == (403, "ErrorQuotaExceeded")
    attach = {"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.txt", "contentBytes": "aGk="}
    assert _error(kit.call("POST", f"/v1.0/me/messages/{old}/attachments", alice, json=attach)) == (
        403,
        "ErrorQuotaExceeded",
    )
    assert _error(kit.call("POST", f"/v1.0/me/messages/{old}/send", alice)) == (403, "ErrorQuotaExceeded")
    assert kit.call("GET", f"/v1.0/me/messages/{old}", alice).status_code == 200
    assert kit.call("DELETE", f"/v1.0/me/messages/{old}", alice).status_code == 204
    # Where Microsoft's status is unconfirmed a test may pick another one.
    emulator_admin.set_mailbox_state(kit.addr("alice"), "quota_exceeded", status=507)
    assert _error(kit.send(alice, kit.simple("full-507"))) == (507, "ErrorQuotaExceeded")


def test_restricted_sender_is_accepted_then_bounced_5_1_8(graph_kit, emulator_admin):
    kit = graph_kit
    alice = kit.token("alice", *MAIL)
    before = emulator_admin.counters("graph.").get("graph.restricted_sender_ndrs", 0)
    emulator_admin.set_mailbox_state(kit.addr("alice"), "restricted_sender")
    assert kit.send(alice, kit.simple("restricted-send")).status_code == 202
    draft = _draft(kit, alice, "restricted-draft").json()["id"]
    assert kit.call("POST", f"/v1.0/me/messages/{draft}/send", alice).status_code == 202
    inbox = emulator_admin.inbox(kit.addr("alice"))["value"]
    assert [(n["idempotencyKey"], n["status"]) for n in inbox] == [
        ("restricted-send", "5.1.8"),
        ("restricted-draft", "5.1.8"),
    ]
    assert "bad outbound sender" in inbox[0]["diagnostic"]
    assert emulator_admin.delivered(kit.addr("alice"))["value"] == []
    assert emulator_admin.drafts(kit.addr("alice")) == []
    assert emulator_admin.counters("graph.")["graph.restricted_sender_ndrs"] - before == 2
    assert kit.send(kit.token("bob"), kit.simple("bob-delivered")).status_code == 202
    assert _delivered(emulator_admin, kit.addr("bob"), "bob-delivered") == 1


def test_mailbox_state_admin_input_is_validated(graph_kit, emulator_admin):
    for state, status in (("gone", None), ("quota_exceeded", 200), ("restricted_sender", 403)):
        with pytest.raises(EmulatorAdminError) as bad:
            emulator_admin.set_mailbox_state(graph_kit.addr("alice"), state, status=status)
        assert bad.value.status == 400
    with pytest.raises(EmulatorAdminError) as missing:
        emulator_admin.set_mailbox_state("nobody@nowhere.example", "not_enabled")
    assert missing.value.status == 404


def test_graph_me_for_a_personal_account_has_no_mail(emu_tenant, emulator):
    kit = emu_tenant(users=("pat",), kind="personal", sign_in_audience="AzureADandPersonalMicrosoftAccount")
    token = kit.token("pat", ("User.Read",))
    me = strict_session(emulator.ca_path).get(
        f"{emulator.base_url}/v1.0/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert me.status_code == 200
    # Outlook.com accounts: `mail` is null, the SMTP address is the userPrincipalName.
    assert me.json()["mail"] is None and me.json()["userPrincipalName"] == kit.users["pat"]["upn"]


# --- the states persist like the rest of the emulated world ------------------------------------------------------


def test_isolation_states_survive_a_restart(tmp_path):
    port = free_port()
    emu = Emulator(tmp_path, port=port, persist=True)
    emu.start()
    try:
        admin = EmulatorAdmin(emu.base_url, emu.ca_path)
        tenant = admin.create_tenant("user", "work", domain="iso-persist.example")
        user = admin.create_user(tenant["tid"], "pat@iso-persist.example")
        app = admin.register_app(home_tid=tenant["tid"], secrets=[{"value": "s"}])
        admin.set_mailbox_state(user["mail"], "quota_exceeded", status=413)
        admin.set_exchange_online(tenant["tid"], False)
        admin.set_enterprise_app(tenant["tid"], app["client_id"], "disabled")
        admin.set_id_token_claims(user["oid"], {"preferred_username": "pat"})
    finally:
        emu.stop()
    emu = Emulator(tmp_path, port=port, persist=True)
    emu.start()
    try:
        admin = EmulatorAdmin(emu.base_url, emu.ca_path)
        assert emu.restored
        restored = admin.user(user["oid"])
        assert restored["mailbox_state"] == {"state": "quota_exceeded", "status": 413}
        assert restored["id_token_claims"] == {"preferred_username": "pat"}
        restored_tenant = admin.tenant(tenant["tid"])
        assert restored_tenant["exchange_online"] is False
        assert restored_tenant["enterprise_apps"] == {app["client_id"]: "disabled"}
    finally:
        emu.stop()
