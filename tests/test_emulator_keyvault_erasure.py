"""Emulated Key Vault secrets as the deployed vault keeps them (issue 26): deleting a secret erases nothing
while purge protection is on; every version stays readable by id and every deleted secret can be recovered
until the service purges it after the retention period."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from emulator.client import EmulatorAdminError
from tests import emulator_keyvault_support as support
from tests.emulator_keyvault_support import everything_the_vault_gives_back, name

vault_caller = support.vault_caller


@pytest.fixture
def app(vault_caller):
    return vault_caller()


def test_a_deleted_secret_gives_back_every_version_it_ever_had(app):
    secret = name("tok")
    for value in ("cache-1", "cache-2", "cache-3"):
        app.ok("PUT", f"/secrets/{secret}", {"value": value})
    deleted = app.ok("DELETE", f"/secrets/{secret}")
    assert deleted["attributes"]["recoveryLevel"] == "Recoverable"
    assert deleted["scheduledPurgeDate"] - deleted["deletedDate"] == 90 * 86400
    assert app.call("GET", f"/secrets/{secret}").status_code == 404
    assert everything_the_vault_gives_back(app, secret) == {"cache-1", "cache-2", "cache-3"}


def test_purge_is_refused_while_purge_protection_is_on(app, emulator):
    secret = name("tok")
    app.ok("PUT", f"/secrets/{secret}", {"value": "refresh-token-cache"})
    app.ok("DELETE", f"/secrets/{secret}")
    refused = app.call("DELETE", f"/deletedsecrets/{secret}")
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "Forbidden"
    assert error["message"].startswith('Operation "purge" is not allowed because purge protection is enabled')
    assert app.ok("GET", f"/deletedsecrets/{secret}")["recoveryId"] == f"{emulator.base_url}/deletedsecrets/{secret}"
    with pytest.raises(HttpResponseError) as info:  # the SDK sees the same refusal
        app.secret_client().purge_deleted_secret(secret)
    assert info.value.status_code == 403


def test_the_service_purges_after_the_retention_period_and_the_name_is_free_again(app, emulator_admin):
    emulator_admin.keyvault_config(retention_days=7)
    secret = name("tok")
    app.ok("PUT", f"/secrets/{secret}", {"value": "old"})
    deleted = app.ok("DELETE", f"/secrets/{secret}")
    assert deleted["attributes"]["recoveryLevel"] == "CustomizedRecoverable"
    assert deleted["scheduledPurgeDate"] - deleted["deletedDate"] == 7 * 86400
    assert app.call("PUT", f"/secrets/{secret}", {"value": "new"}).status_code == 409
    emulator_admin.advance_clock(7 * 86400 + 1)
    app.renew()
    assert everything_the_vault_gives_back(app, secret) == set()
    assert app.ok("PUT", f"/secrets/{secret}", {"value": "new"})["value"] == "new"


def test_without_purge_protection_purge_erases(app, emulator_admin):
    emulator_admin.keyvault_config(purge_protection=False)
    secret = name("tok")
    app.ok("PUT", f"/secrets/{secret}", {"value": "v1"})
    assert app.ok("GET", f"/secrets/{secret}")["attributes"]["recoveryLevel"] == "Recoverable+Purgeable"
    app.ok("DELETE", f"/secrets/{secret}")
    assert app.call("DELETE", f"/deletedsecrets/{secret}").status_code == 204
    assert everything_the_vault_gives_back(app, secret) == set()


def test_sdk_reads_old_versions_and_recovers(app):
    client = app.secret_client()
    secret = name("tok")
    first = client.set_secret(secret, "rt-1")
    client.set_secret(secret, "rt-2")
    client.begin_delete_secret(secret).result()
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(secret)
    client.begin_recover_deleted_secret(secret).result()
    assert client.get_secret(secret, first.properties.version).value == "rt-1"
    assert len(list(client.list_properties_of_secret_versions(secret))) == 2


def test_retention_days_outside_7_to_90_is_refused(emulator_admin):
    for days in (6, 91):
        with pytest.raises(EmulatorAdminError) as info:
            emulator_admin.keyvault_config(retention_days=days)
        assert info.value.status == 400
