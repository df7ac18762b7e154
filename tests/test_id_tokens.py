"""Unit tests of shared/connect/id_tokens.py: the rules per ENTRA_TENANT form (the end-to-end cases, through MSAL and
the emulator, are in tests/test_connect_id_token.py)."""

from __future__ import annotations

import pytest

from shared.base import errors
from shared.connect.id_tokens import CLOCK_SKEW_S, CONSUMER_TENANT_ID, IdTokenRules, require_valid

HOST = "https://login.microsoftonline.com"
CLIENT = "00001111-aaaa-2222-bbbb-3333cccc4444"
TID = "aaaabbbb-0000-cccc-1111-dddd2222eeee"
OTHER = "11111111-2222-3333-4444-555555555555"
NOW = 1_800_000_000


def rules(entra_tenant: str, discovered: str | None = None, issuer: str | None = None, host: str = HOST):
    return IdTokenRules.for_authority(
        client_id=CLIENT,
        authority_host=host,
        entra_tenant=entra_tenant,
        discovered_tenant=discovered,
        metadata_issuer=issuer,
    )


def token(tid: str = TID, **over):
    return {"aud": CLIENT, "tid": tid, "oid": "o1", "iss": f"{HOST}/{tid}/v2.0", "exp": NOW + 3600, **over}


def code_of(claims, r) -> str:
    try:
        require_valid(claims, r, NOW)
    except errors.ConnectError as exc:
        return exc.code
    return "ok"


def test_organizations_takes_any_organisation_but_no_personal_account():
    r = rules("organizations", "organizations", f"{HOST}/{{tenantid}}/v2.0")
    assert code_of(token(), r) == code_of(token(OTHER), r) == "ok"
    assert code_of(token(CONSUMER_TENANT_ID), r) == "identity_mismatch"


def test_common_takes_personal_accounts_and_consumers_only_them():
    assert code_of(token(CONSUMER_TENANT_ID), rules("common", "common")) == "ok"
    consumers = rules("consumers", "consumers", f"{HOST}/{CONSUMER_TENANT_ID}/v2.0")
    assert code_of(token(CONSUMER_TENANT_ID), consumers) == "ok"
    assert code_of(token(), consumers) == "identity_mismatch"


@pytest.mark.parametrize("configured", [TID, TID.upper(), "contoso.onmicrosoft.com"])
def test_one_tenant_by_id_or_domain_is_pinned(configured):
    r = rules(configured, TID, f"{HOST}/{TID}/v2.0")
    assert r.pinned_tenant == TID
    assert code_of(token(), r) == "ok"
    assert code_of(token(OTHER), r) == "identity_mismatch"


def test_a_domain_resolved_only_by_the_metadata_issuer_is_pinned_and_an_unresolved_one_refuses_all():
    assert rules("contoso.onmicrosoft.com", None, f"{HOST}/{TID}/v2.0").pinned_tenant == TID
    with pytest.raises(errors.AppMisconfigured):
        rules("contoso.onmicrosoft.com", None, None)


def test_the_metadata_spelling_of_a_clouds_host_is_accepted_for_the_tokens_own_tenant_only():
    """A cloud whose metadata names another host than the configured one (21Vianet's two login hosts)."""
    r = rules("organizations", "organizations", "https://login.partner.microsoftonline.cn/{tenantid}/v2.0")
    assert code_of(token(iss=f"https://login.partner.microsoftonline.cn/{TID}/v2.0"), r) == "ok"
    assert code_of(token(iss=f"https://login.partner.microsoftonline.cn/{OTHER}/v2.0"), r) == "invalid_id_token"


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"exp": NOW - CLOCK_SKEW_S - 1}, "invalid_id_token"),
        ({"exp": NOW - CLOCK_SKEW_S + 1}, "ok"),
        ({"exp": None}, "invalid_id_token"),
        ({"exp": True}, "invalid_id_token"),
        ({"exp": str(NOW + 3600)}, "invalid_id_token"),
        ({"tid": "contoso.example", "iss": f"{HOST}/contoso.example/v2.0"}, "invalid_id_token"),
        ({"iss": f"{HOST}/{TID}/v2.0/"}, "invalid_id_token"),
        ({"aud": "someone-else"}, "identity_mismatch"),
        ({"oid": ""}, "identity_mismatch"),
    ],
)
def test_claims(claims, code):
    assert code_of(token(**claims), rules("organizations", "organizations", f"{HOST}/{{tenantid}}/v2.0")) == code
