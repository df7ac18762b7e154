"""Emulated Key Vault driven by the real azure-keyvault-secrets SDK and azure-identity over HTTPS."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from emulator.tokens import GRAPH_RESOURCE, KEYVAULT_RESOURCE, issue_access_token

API = "api-version=7.5"


def _name(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(emu_vault):
    return emu_vault.secret_client()


@pytest.fixture
def bearer(emu_vault):
    """A valid Key Vault access token for raw-HTTP checks."""
    return emu_vault.credential().get_token(f"{KEYVAULT_RESOURCE}/.default").token


def test_set_get_versions_tags_and_content_type(client, emulator):
    name = _name()
    first = client.set_secret(name, "v1", tags={"connection": "c1"}, content_type="application/json")
    assert first.id == f"{emulator.base_url}/secrets/{name}/{first.properties.version}"
    assert first.properties.tags == {"connection": "c1"}
    assert first.properties.content_type == "application/json"
    assert first.properties.created_on is not None and first.properties.enabled
    second = client.set_secret(name, "v2")
    assert second.properties.version != first.properties.version
    assert client.get_secret(name).value == "v2"
    assert client.get_secret(name, first.properties.version).value == "v1"
    versions = {p.version for p in client.list_properties_of_secret_versions(name)}
    assert versions == {first.properties.version, second.properties.version}


def test_update_properties_and_disabled_secret(client):
    name = _name()
    created = client.set_secret(name, "value")
    updated = client.update_secret_properties(name, created.properties.version, tags={"k": "v"}, enabled=False)
    assert updated.tags == {"k": "v"} and updated.enabled is False
    with pytest.raises(HttpResponseError) as info:
        client.get_secret(name)
    assert info.value.status_code == 403


def test_paging_with_next_link(client, emu_http, emulator, bearer):
    prefix = _name("page")
    names = {f"{prefix}-{i}" for i in range(30)}
    for name in names:
        client.set_secret(name, "x")
    listed = {p.name for p in client.list_properties_of_secrets()}
    assert names <= listed
    headers = {"Authorization": f"Bearer {bearer}"}
    first = emu_http.get(f"{emulator.base_url}/secrets?{API}&maxresults=5", headers=headers).json()
    assert len(first["value"]) == 5 and first["nextLink"]
    assert "value" not in first["value"][0]  # list items never carry values
    second = emu_http.get(first["nextLink"], headers=headers).json()
    assert {i["id"] for i in second["value"]}.isdisjoint({i["id"] for i in first["value"]})


def test_soft_delete_conflict_recover_and_purge(client, emu_http, emulator, emulator_admin, bearer):
    # The deployed vault refuses purge (purge protection): see tests/test_emulator_keyvault_erasure.py.
    emulator_admin.keyvault_config(purge_protection=False)
    name = _name()
    client.set_secret(name, "cache-1")
    deleted = client.begin_delete_secret(name).result()
    assert deleted.recovery_id == f"{emulator.base_url}/deletedsecrets/{name}"
    assert deleted.scheduled_purge_date > deleted.deleted_date
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)
    with pytest.raises(ResourceExistsError):
        client.set_secret(name, "cache-2")
    raw = emu_http.put(
        f"{emulator.base_url}/secrets/{name}?{API}", json={"value": "x"}, headers={"Authorization": f"Bearer {bearer}"}
    )
    assert raw.status_code == 409
    error = raw.json()["error"]
    assert error["code"] == "Conflict" and error["innererror"]["code"] == "ObjectIsDeletedButRecoverable"
    assert client.get_deleted_secret(name).name == name
    assert name in {d.name for d in client.list_deleted_secrets()}
    client.begin_recover_deleted_secret(name).result()
    assert client.get_secret(name).value == "cache-1"
    client.begin_delete_secret(name).result()
    client.purge_deleted_secret(name)
    assert client.set_secret(name, "fresh").value == "fresh"


def test_value_size_limit_is_25_kb(client):
    name = _name()
    assert client.set_secret(name, "a" * 25 * 1024).value
    with pytest.raises(HttpResponseError) as info:
        client.set_secret(name, "a" * (25 * 1024 + 1))
    assert info.value.status_code == 400 and info.value.error.code == "BadParameter"


@pytest.mark.parametrize("bad", ["under_score", "a" * 128, "dot.name"])
def test_bad_names_are_rejected(client, bad):
    with pytest.raises(HttpResponseError) as info:
        client.set_secret(bad, "x")
    assert info.value.status_code == 400 and info.value.error.code == "BadParameter"


def test_too_many_tags(client):
    with pytest.raises(HttpResponseError) as info:
        client.set_secret(_name(), "x", tags={f"t{i}": "v" for i in range(16)})
    assert info.value.status_code == 400


def test_throttling_answers_429_with_retry_after(emulator_admin, emu_http, emulator, bearer):
    emulator_admin.keyvault_config(ops_limit=5, window_s=10)
    url = f"{emulator.base_url}/secrets?{API}"
    headers = {"Authorization": f"Bearer {bearer}"}
    statuses = [emu_http.get(url, headers=headers).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    throttled = emu_http.get(url, headers=headers)
    assert throttled.json()["error"]["code"] == "Throttled" and int(throttled.headers["Retry-After"]) >= 1
    emulator_admin.advance_clock(11)
    assert emu_http.get(url, headers=headers).status_code == 200


def test_bearer_challenge_audience_expiry_and_tenant(emulator, emu_http, emu_tenant, emu_vault):
    url = f"{emulator.base_url}/secrets/anything?{API}"
    challenge = emu_http.get(url)
    assert challenge.status_code == 401
    www = challenge.headers["WWW-Authenticate"]
    assert f'authorization="{emulator.base_url}/{emu_vault.tenant_id}"' in www
    assert 'resource="https://vault.azure.net"' in www
    assert challenge.json()["error"]["code"] == "Unauthorized"

    def token(audience: str, lifetime: int = 3600, tid: str | None = None) -> str:
        return issue_access_token(
            emulator.state,
            tid=tid or emu_vault.tenant_id,
            oid=None,
            client_id=emu_vault.client_id,
            scopes=[],
            audience=audience,
            lifetime_s=lifetime,
        )

    graph = emu_http.get(url, headers={"Authorization": f"Bearer {token(GRAPH_RESOURCE)}"})
    assert graph.status_code == 401 and "audience" in graph.json()["error"]["message"].lower()
    expired = emu_http.get(url, headers={"Authorization": f"Bearer {token(KEYVAULT_RESOURCE, lifetime=-10)}"})
    assert expired.status_code == 401
    other = emu_tenant(users=())
    foreign = emu_http.get(url, headers={"Authorization": f"Bearer {token(KEYVAULT_RESOURCE, tid=other.tid)}"})
    assert foreign.status_code == 401
    good = emu_http.get(url, headers={"Authorization": f"Bearer {token(KEYVAULT_RESOURCE)}"})
    assert good.status_code == 404 and good.json()["error"]["code"] == "SecretNotFound"
    missing_version = emu_http.get(url.split("?")[0], headers={"Authorization": f"Bearer {token(KEYVAULT_RESOURCE)}"})
    assert missing_version.status_code == 400


def test_token_expiry_is_judged_on_the_emulator_clock(emulator_admin, emu_http, emulator, bearer):
    url = f"{emulator.base_url}/secrets?{API}"
    assert emu_http.get(url, headers={"Authorization": f"Bearer {bearer}"}).status_code == 200
    emulator_admin.advance_clock(2 * 3600)
    assert emu_http.get(url, headers={"Authorization": f"Bearer {bearer}"}).status_code == 401


def test_counters_per_operation(client, emulator_admin):
    before = emulator_admin.counters("calls.kv.")
    name = _name()
    client.set_secret(name, "x")
    client.get_secret(name)
    after = emulator_admin.counters("calls.kv.")
    assert after["calls.kv.setSecret"] - before.get("calls.kv.setSecret", 0) >= 1
    assert after["calls.kv.getSecret"] - before.get("calls.kv.getSecret", 0) == 1
