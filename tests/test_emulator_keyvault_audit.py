"""The emulated vault's audit log (issue 26): who (the token's oid / appid) did which operation on which
secret or key version, refused and throttled calls included, shaped after Key Vault's AuditEvent log, so a
test can check that an alert would fire when anyone but the app identity reads or recovers a token secret."""

from __future__ import annotations

import pytest

from tests import emulator_keyvault_support as support
from tests.emulator_keyvault_support import audit, b64url, name

vault_caller = support.vault_caller


@pytest.fixture
def since(emulator_admin) -> int:
    """The last sequence number before the test (the log is shared by every test of the session)."""
    entries = audit(emulator_admin)
    return entries[-1]["seq"] if entries else 0


def test_reads_of_old_versions_and_recovers_are_attributed_to_the_caller(vault_caller, emulator_admin, since):
    app, insider = vault_caller(), vault_caller()
    secret = name("tok")
    first = app.ok("PUT", f"/secrets/{secret}", {"value": "rt-1"})["id"]
    second = app.ok("PUT", f"/secrets/{secret}", {"value": "rt-2"})["id"]
    app.ok("GET", f"/secrets/{secret}")
    app.ok("DELETE", f"/secrets/{secret}")
    insider.ok("POST", f"/deletedsecrets/{secret}/recover")
    insider.ok("GET", first.split(insider.base_url, 1)[1])  # an old version, by id

    mine = audit(emulator_admin, since=since, principal=app.oid, name=secret)
    assert [(e["operationName"], e["id"]) for e in mine] == [
        ("SecretSet", first),
        ("SecretSet", second),
        ("SecretGet", second),
        ("SecretDelete", f"{app.base_url}/secrets/{secret}"),
    ]
    theirs = audit(emulator_admin, since=since, principal=insider.client_id, name=secret)
    assert [(e["operationName"], e["id"], e["httpStatusCode"]) for e in theirs] == [
        ("SecretRecover", second, 200),
        ("SecretGet", first, 200),
    ]
    read = theirs[1]
    assert read["identity"]["oid"] == insider.oid and read["identity"]["appid"] == insider.client_id
    assert read["dataAction"] == "Microsoft.KeyVault/vaults/secrets/getSecret/action"
    assert read["extra"]["latest"] is False and read["kind"] == "read"
    assert read["operationVersion"] == support.API and read["requestUri"].startswith(f"/secrets/{secret}/")

    # The alert issue 26 wants: any read or recover of a token secret by someone other than the app.
    suspicious = [
        e
        for e in audit(emulator_admin, since=since, operation="SecretGet,SecretRecover,SecretGetDeleted", name=secret)
        if e["identity"].get("oid") != app.oid
    ]
    assert {e["operationName"] for e in suspicious} == {"SecretRecover", "SecretGet"}


def test_refused_and_throttled_calls_are_logged_with_their_status(vault_caller, emulator_admin, since):
    app, insider = vault_caller(), vault_caller()
    key = name()
    app.ok("POST", f"/keys/{key}/create", {"kty": "RSA"})
    wrapped = app.ok("POST", f"/keys/{key}/wrapkey", {"alg": "RSA-OAEP", "value": b64url(b"dek")})
    emulator_admin.keyvault_config(role_assignments={app.oid: ["Key Vault Crypto Service Encryption User"]})
    assert (
        insider.call("POST", f"/keys/{key}/unwrapkey", {"alg": "RSA-OAEP", "value": wrapped["value"]}).status_code
        == 403
    )
    emulator_admin.keyvault_config(
        role_assignments={app.oid: ["Key Vault Crypto Service Encryption User"]}, limits=True, limits_scale=0.0001
    )
    statuses = [
        app.call("POST", f"/keys/{key}/unwrapkey", {"alg": "RSA-OAEP", "value": wrapped["value"]}).status_code
        for _ in range(2)
    ]
    assert statuses == [200, 429]
    entries = audit(emulator_admin, since=since, name=key)
    assert [(e["operationName"], e["identity"]["appid"], e["httpStatusCode"]) for e in entries] == [
        ("KeyCreate", app.client_id, 200),
        ("KeyWrap", app.client_id, 200),
        ("KeyUnwrap", insider.client_id, 403),
        ("KeyUnwrap", app.client_id, 200),
        ("KeyUnwrap", app.client_id, 429),
    ]
    assert entries[3]["id"] == wrapped["kid"] and entries[3]["extra"]["alg"] == "RSA-OAEP"
    assert entries[2]["dataAction"] == "Microsoft.KeyVault/vaults/keys/unwrap/action"


def test_the_audit_log_holds_no_secret_value_or_token(vault_caller, emulator_admin, since):
    app = vault_caller()
    secret = name("tok")
    app.ok("PUT", f"/secrets/{secret}", {"value": "very-secret-refresh-token"})
    app.ok("GET", f"/secrets/{secret}")
    text = repr(audit(emulator_admin, since=since))
    assert "very-secret-refresh-token" not in text
    assert app.headers()["Authorization"].split()[1] not in text
