"""The connect callback believes an ID token only when Entra could have issued it for this sign-in (issue 23).

MSAL checks the nonce and nothing else (shared/connect/id_tokens.py says what it leaves to us and why). Each case signs
in through the HTTPS emulator and real MSAL, with the emulator told to issue the ID token a broken or hostile
Entra would (``/_emulator/entra``: ``id_token_claims`` laid over the token, ``id_token_lifetime_s`` for its
expiry), and asserts the stable code on return_url and that nothing was stored.
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.connect.id_tokens import CLOCK_SKEW_S, CONSUMER_TENANT_ID
from tests.fixtures.app import RETURN_URL, query_of


def stored(mb, emulator) -> dict[str, Any]:
    """Connection rows, pending grants and Key Vault secrets: what a refused sign-in must not leave."""
    rows = {(e["PartitionKey"], e["RowKey"]) for e in mb.services.connections.table.list_entities()}
    grants = {e["PartitionKey"] for e in mb.services.flows.table.list_entities() if e["PartitionKey"].startswith("g")}
    kv = emulator.state.keyvault
    with kv.lock:
        secrets = {name: len(entry.versions) for name, entry in kv.secrets.items()}
    return {"connections": rows, "grants": grants, "secrets": secrets}


def sign_in(mb, user: str = "alice", *, id_token: dict[str, Any] | None = None, lifetime: int | None = None):
    """One connect attempt whose code redemption returns the ID token described; the return_url query."""
    start = mb.start(mb.connect_link("user-1"))
    redirect = mb.authorize(start.headers["Location"], user)
    if id_token is not None:
        mb.admin.entra_settings(id_token_claims=id_token)
    if lifetime is not None:
        mb.admin.entra_settings(id_token_lifetime_s=lifetime)
    back = mb.callback(redirect)
    assert back.status_code == 302, back.get_body()
    assert back.headers["Location"].startswith(RETURN_URL.split("?")[0] + "?")
    return query_of(back.headers["Location"])


def issuer(emulator, tid: str) -> str:
    return f"{emulator.base_url}/{tid}/v2.0"


@pytest.mark.parametrize(
    "iss",
    [
        "https://evil.example/{tid}/v2.0",  # another host
        "https://sts.windows.net/{tid}/",  # the v1.0 issuer form
        "{base}/11111111-2222-3333-4444-555555555555/v2.0",  # another tenant's issuer on this tenant's tid
        "{base}/organizations/v2.0",
        None,
    ],
    ids=["other host", "v1 issuer", "other tenant's issuer", "alias", "no iss"],
)
def test_an_id_token_with_a_wrong_issuer_is_refused(mailbridge, emulator, iss):
    mb = mailbridge()
    before = stored(mb, emulator)
    claims = {"iss": iss.format(tid=mb.kit.tid, base=emulator.base_url) if iss else None}
    result = sign_in(mb, id_token=claims)
    assert (result["status"], result["error"]) == ("error", "invalid_id_token"), result
    assert stored(mb, emulator) == before


def test_an_expired_id_token_is_refused_within_a_small_skew(mailbridge, emulator):
    mb = mailbridge()
    before = stored(mb, emulator)
    result = sign_in(mb, lifetime=-(CLOCK_SKEW_S + 300))
    assert (result["status"], result["error"]) == ("error", "invalid_id_token"), result
    assert stored(mb, emulator) == before
    # A token that expired a few seconds ago by the emulator's clock is within the skew: clocks drift.
    assert sign_in(mb, lifetime=-(CLOCK_SKEW_S // 4))["status"] == "connected"


def test_a_domain_entra_tenant_is_pinned_to_its_tenant_id(mailbridge, emu_tenant, emulator):
    """``ENTRA_TENANT=contoso.example`` (a domain) serves that tenant only, like its tenant id would: MSAL's
    discovery of the authority resolves the domain to the id, which the token's tid must equal."""
    kit = mailbridge().kit
    mb = mailbridge(ENTRA_TENANT=kit.domain)
    mb.kit = kit
    assert sign_in(mb, "alice")["status"] == "connected"  # its own tenant's users connect

    foreign = emu_tenant(users=("mallory",))
    before = stored(mb, emulator)
    # A consistent token of another tenant (tid and iss agree): only the pin can refuse it.
    forged = {"tid": foreign.tid, "iss": issuer(emulator, foreign.tid), "oid": foreign.users["mallory"]["oid"]}
    result = sign_in(mb, "bob", id_token=forged)
    assert (result["status"], result["error"]) == ("error", "identity_mismatch"), result
    assert stored(mb, emulator) == before


def test_a_personal_account_token_is_refused_where_only_organisations_are_served(mailbridge, emulator):
    mb = mailbridge()  # ENTRA_TENANT=organizations
    before = stored(mb, emulator)
    personal = {"tid": CONSUMER_TENANT_ID, "iss": issuer(emulator, CONSUMER_TENANT_ID)}
    result = sign_in(mb, id_token=personal)
    assert (result["status"], result["error"]) == ("error", "identity_mismatch"), result
    assert stored(mb, emulator) == before


def test_a_consistent_token_of_any_organisation_connects_on_a_multi_tenant_deployment(mailbridge, emulator):
    """The checks refuse what Entra would not issue, not other organisations: a multi-tenant deployment
    (``organizations``) takes a token whose tid and iss agree, whatever the tenant."""
    mb = mailbridge()
    result = sign_in(mb, id_token={"iss": issuer(emulator, mb.kit.tid)})
    assert result["status"] == "connected", result
