"""Emulated Key Vault keys over real HTTPS: RSA keys, versions, wrapkey / unwrapkey, soft delete, purge
protection and the data-plane roles (issue 26: a data key wrapped by a Key Vault key)."""

from __future__ import annotations

import os

import pytest
from azure.identity import ClientSecretCredential
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from emulator.app import Emulator
from emulator.client import EmulatorAdmin, EmulatorAdminError
from stack.azurite import free_port
from tests import emulator_keyvault_support as support
from tests.emulator_keyvault_support import b64url, name, unb64url
from tests.fixtures.emulator import strict_session

vault_caller = support.vault_caller


@pytest.fixture
def app(vault_caller):
    return vault_caller()


def create_key(caller, key: str, kty: str = "RSA", size: int = 2048) -> dict:
    return caller.ok("POST", f"/keys/{key}/create", {"kty": kty, "key_size": size})


@pytest.mark.parametrize("alg", ["RSA-OAEP", "RSA-OAEP-256"])
def test_wrap_unwrap_round_trip_and_the_public_key_wraps_locally(app, alg):
    key = name()
    bundle = create_key(app, key)
    jwk = bundle["key"]
    assert jwk["kty"] == "RSA" and {"wrapKey", "unwrapKey"} <= set(jwk["key_ops"])
    assert bundle["attributes"]["recoveryLevel"] == "Recoverable" and bundle["attributes"]["recoverableDays"] == 90
    data_key = os.urandom(32)
    wrapped = app.ok(
        "POST", f"/keys/{key}/{jwk['kid'].rsplit('/', 1)[1]}/wrapkey", {"alg": alg, "value": b64url(data_key)}
    )
    assert wrapped["kid"] == jwk["kid"] and unb64url(wrapped["value"]) != data_key
    back = app.ok("POST", f"/keys/{key}/unwrapkey", {"alg": alg, "value": wrapped["value"]})
    assert unb64url(back["value"]) == data_key
    # Microsoft: wrap needs no Key Vault call with the cached public key; the vault unwraps what it wrapped.
    public = rsa.RSAPublicNumbers(int.from_bytes(unb64url(jwk["e"]), "big"), int.from_bytes(unb64url(jwk["n"]), "big"))
    hash_cls = hashes.SHA1 if alg == "RSA-OAEP" else hashes.SHA256
    oaep = padding.OAEP(mgf=padding.MGF1(hash_cls()), algorithm=hash_cls(), label=None)
    local = public.public_key().encrypt(data_key, oaep)
    assert (
        unb64url(app.ok("POST", f"/keys/{key}//unwrapkey", {"alg": alg, "value": b64url(local)})["value"]) == data_key
    )


def test_versions_are_listed_and_an_old_version_still_unwraps_what_it_wrapped(app):
    key = name()
    first = create_key(app, key)["key"]["kid"]
    wrapped = app.ok(
        "POST", f"/keys/{key}/{first.rsplit('/', 1)[1]}/wrapkey", {"alg": "RSA-OAEP-256", "value": b64url(b"dek")}
    )
    second = create_key(app, key)["key"]["kid"]
    assert app.ok("GET", f"/keys/{key}")["key"]["kid"] == second
    listed = {item["kid"] for item in app.ok("GET", f"/keys/{key}/versions")["value"]}
    assert listed == {first, second}
    assert (
        app.call("POST", f"/keys/{key}/unwrapkey", {"alg": "RSA-OAEP-256", "value": wrapped["value"]}).status_code
        == 400
    )
    old = app.ok(
        "POST", f"/keys/{key}/{first.rsplit('/', 1)[1]}/unwrapkey", {"alg": "RSA-OAEP-256", "value": wrapped["value"]}
    )
    assert unb64url(old["value"]) == b"dek"


def test_unwrap_with_a_deleted_key_fails_and_purge_is_refused_under_purge_protection(app):
    key = name()
    create_key(app, key)
    wrapped = app.ok("POST", f"/keys/{key}/wrapkey", {"alg": "RSA-OAEP", "value": b64url(b"secret dek")})["value"]
    deleted = app.ok("DELETE", f"/keys/{key}")
    assert deleted["recoveryId"].endswith(f"/deletedkeys/{key}")
    assert deleted["scheduledPurgeDate"] - deleted["deletedDate"] == 90 * 86400
    gone = app.call("POST", f"/keys/{key}/unwrapkey", {"alg": "RSA-OAEP", "value": wrapped})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "KeyNotFound"
    assert app.call("POST", f"/keys/{key}/create", {"kty": "RSA"}).json()["error"]["innererror"]["code"] == (
        "ObjectIsDeletedButRecoverable"
    )
    purge = app.call("DELETE", f"/deletedkeys/{key}")
    assert purge.status_code == 403 and purge.json()["error"]["code"] == "Forbidden"
    assert 'Operation "purge" is not allowed because purge protection is enabled' in purge.json()["error"]["message"]
    assert key in {d["kid"].rsplit("/", 1)[1] for d in app.ok("GET", "/deletedkeys")["value"]}
    app.ok("POST", f"/deletedkeys/{key}/recover")  # the insider's way back: recover, then unwrap
    assert unb64url(app.ok("POST", f"/keys/{key}/unwrapkey", {"alg": "RSA-OAEP", "value": wrapped})["value"]) == (
        b"secret dek"
    )


def test_purge_without_protection_destroys_the_only_copy(app, emulator_admin):
    emulator_admin.keyvault_config(purge_protection=False)
    key = name()
    create_key(app, key)
    wrapped = app.ok("POST", f"/keys/{key}/wrapkey", {"alg": "RSA-OAEP", "value": b64url(b"dek")})["value"]
    app.ok("DELETE", f"/keys/{key}")
    assert app.call("DELETE", f"/deletedkeys/{key}").status_code == 204
    assert app.call("POST", f"/deletedkeys/{key}/recover").status_code == 404
    assert app.call("POST", f"/keys/{key}/unwrapkey", {"alg": "RSA-OAEP", "value": wrapped}).status_code == 404


def test_the_service_purges_a_deleted_key_after_the_retention_period(app, emulator_admin):
    key = name()
    create_key(app, key)
    app.ok("DELETE", f"/keys/{key}")
    emulator_admin.advance_clock(90 * 86400 - 60)
    app.renew()
    assert app.call("GET", f"/deletedkeys/{key}").status_code == 200
    emulator_admin.advance_clock(61)
    assert app.call("GET", f"/deletedkeys/{key}").status_code == 404
    assert app.call("POST", f"/deletedkeys/{key}/recover").status_code == 404


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"alg": "RSA-OAEP", "value": "not base64!"}, "not base64url"),
        ({"alg": "A256KW", "value": b64url(b"x")}, "Invalid algorithm"),
        ({"alg": "RSA-OAEP", "value": b64url(os.urandom(256))}, "decoding OAEP padding"),
        ({"alg": "RSA-OAEP"}, "not base64url"),
    ],
)
def test_bad_unwrap_input_is_a_400_bad_parameter(app, payload, message):
    key = name()
    create_key(app, key)
    resp = app.call("POST", f"/keys/{key}/unwrapkey", payload)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "BadParameter" and message in resp.json()["error"]["message"]


def test_disabled_key_and_unsupported_key_types(app):
    key = name()
    kid = create_key(app, key)["key"]["kid"]
    app.ok("PATCH", f"/keys/{key}/{kid.rsplit('/', 1)[1]}", {"attributes": {"enabled": False}})
    disabled = app.call("POST", f"/keys/{key}/wrapkey", {"alg": "RSA-OAEP", "value": b64url(b"x")})
    assert disabled.status_code == 403 and disabled.json()["error"]["innererror"]["code"] == "KeyDisabled"
    assert app.call("POST", f"/keys/{name()}/create", {"kty": "EC"}).status_code == 400
    assert app.call("POST", f"/keys/{name()}/create", {"kty": "RSA", "key_size": 1024}).status_code == 400
    assert create_key(app, name(), "RSA-HSM")["key"]["kty"] == "RSA-HSM"


def test_roles_the_app_wraps_and_unwraps_an_insider_with_every_secrets_role_cannot(vault_caller, emulator_admin):
    app, insider = vault_caller(), vault_caller()
    key, secret = name(), name("s")
    create_key(app, key)  # before RBAC is on: the deployment creates the key
    app.ok("PUT", f"/secrets/{secret}", {"value": "sealed-token-cache"})
    wrapped = app.ok("POST", f"/keys/{key}/wrapkey", {"alg": "RSA-OAEP-256", "value": b64url(b"dek")})["value"]
    emulator_admin.keyvault_config(
        role_assignments={
            app.oid: ["Key Vault Crypto Service Encryption User", "Key Vault Secrets Officer"],
            insider.oid: ["Key Vault Secrets Officer", "Key Vault Secrets User", "Key Vault Reader"],
        }
    )
    assert (
        unb64url(app.ok("POST", f"/keys/{key}/unwrapkey", {"alg": "RSA-OAEP-256", "value": wrapped})["value"]) == b"dek"
    )
    assert insider.ok("GET", f"/secrets/{secret}")["value"] == "sealed-token-cache"  # the ciphertext only
    assert insider.ok("GET", f"/keys/{key}")["key"]["n"]  # Reader sees the public half
    denied = insider.call("POST", f"/keys/{key}/unwrapkey", {"alg": "RSA-OAEP-256", "value": wrapped})
    assert denied.status_code == 403
    error = denied.json()["error"]
    assert error["code"] == "Forbidden" and error["innererror"]["code"] == "ForbiddenByRbac"
    assert "Action: 'Microsoft.KeyVault/vaults/keys/unwrap/action'" in error["message"]
    for method, path in (("DELETE", f"/keys/{key}"), ("POST", f"/keys/{name()}/create")):
        assert insider.call(method, path, {"kty": "RSA"}).status_code == 403
    # Crypto Service Encryption User cannot read secret values.
    emulator_admin.keyvault_config(role_assignments={app.oid: ["Key Vault Crypto Service Encryption User"]})
    assert app.call("GET", f"/secrets/{secret}").status_code == 403
    assert app.call("GET", f"/secrets/{secret}").json()["error"]["innererror"]["code"] == "ForbiddenByRbac"


def test_unknown_role_names_are_refused(emulator_admin):
    with pytest.raises(EmulatorAdminError) as info:
        emulator_admin.keyvault_config(role_assignments={"x": ["Key Vault God"]})
    assert info.value.status == 400


def test_real_keys_sdk_wraps_locally_and_unwraps_in_the_vault(app, emulator):
    keys = pytest.importorskip("azure.keyvault.keys")
    crypto = pytest.importorskip("azure.keyvault.keys.crypto")
    from azure.core.exceptions import ResourceNotFoundError

    client = keys.KeyClient(
        emulator.base_url, app.credential, verify_challenge_resource=False, connection_verify=str(emulator.ca_path)
    )
    key = client.create_rsa_key(name(), size=2048)
    assert key.key_type == "RSA" and key.properties.recovery_level == "Recoverable"
    cc = crypto.CryptographyClient(
        key, app.credential, verify_challenge_resource=False, connection_verify=str(emulator.ca_path)
    )
    wrapped = cc.wrap_key(crypto.KeyWrapAlgorithm.rsa_oaep_256, b"0123456789abcdef0123456789abcdef")
    assert cc.unwrap_key(crypto.KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == (
        b"0123456789abcdef0123456789abcdef"
    )
    client.create_rsa_key(key.name, size=2048)
    assert len(list(client.list_properties_of_key_versions(key.name))) == 2
    client.begin_delete_key(key.name).result()
    with pytest.raises(ResourceNotFoundError):
        cc.unwrap_key(crypto.KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)
    client.begin_recover_deleted_key(key.name).result()
    assert cc.unwrap_key(crypto.KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key.startswith(b"0123")


def test_keys_and_deleted_keys_survive_a_persisted_restart_the_audit_log_does_not(tmp_path):
    port = free_port()

    def start() -> tuple[Emulator, EmulatorAdmin]:
        emu = Emulator(tmp_path, port=port, persist=True)
        emu.start()
        admin = EmulatorAdmin(emu.base_url, emu.ca_path)
        return emu, admin

    emu, admin = start()
    try:
        tenant_id = admin.keyvault_config()["tenant_id"]
        registered = admin.register_app(home_tid=tenant_id, secrets=["s3cret"])

        def caller(e: Emulator) -> support.Caller:
            cred = ClientSecretCredential(
                tenant_id,
                registered["client_id"],
                "s3cret",
                authority=e.base_url,
                disable_instance_discovery=True,
                connection_verify=str(e.ca_path),
            )
            return support.Caller(
                e.base_url, strict_session(e.ca_path), registered["client_id"], "s3cret", tenant_id, cred
            )

        app = caller(emu)
        keep, gone = name(), name()
        create_key(app, keep)
        create_key(app, gone)
        wrapped = app.ok("POST", f"/keys/{keep}/wrapkey", {"alg": "RSA-OAEP-256", "value": b64url(b"dek")})["value"]
        app.ok("DELETE", f"/keys/{gone}")
        assert admin.keyvault_audit()["count"] > 0
    finally:
        emu.stop()
    emu, admin = start()
    try:
        assert emu.restored
        app = caller(emu)
        assert (
            unb64url(app.ok("POST", f"/keys/{keep}/unwrapkey", {"alg": "RSA-OAEP-256", "value": wrapped})["value"])
            == b"dek"
        )
        assert app.ok("GET", f"/deletedkeys/{gone}")["recoveryId"].endswith(gone)
        assert admin.keyvault_audit(name=keep)["count"] == 1  # only the unwrap after the restart
    finally:
        emu.stop()
