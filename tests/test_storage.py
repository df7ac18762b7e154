"""shared/base/storage.py: create-if-missing only against Azurite (a connection string); in Azure infra creates all."""

from __future__ import annotations

from types import SimpleNamespace

from shared.base.storage import StorageClients


def _clients(connection_string: str | None) -> StorageClients:
    return StorageClients(SimpleNamespace(storage=SimpleNamespace(connection_string=connection_string)))


def test_identity_based_storage_never_creates_resources():
    created: list[object] = []
    clients = _clients(None)
    for _ in range(3):
        clients._client("table", "connections", lambda name: name, created.append)
    assert created == [] and not clients.creates_missing


def test_a_connection_string_creates_each_resource_once():
    created: list[object] = []
    clients = _clients("UseDevelopmentStorage=true")
    for _ in range(3):
        clients._client("table", "connections", lambda name: name, created.append)
        clients._client("queue", "outbound-mail", lambda name: name, created.append)
    assert created == ["connections", "outbound-mail"]
