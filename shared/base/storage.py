"""Storage clients (queues, tables, blobs) built once from the settings: connection string or managed identity."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient

from shared.base.settings import Settings

if TYPE_CHECKING:  # imported where first used: a send touches no blob, and the queue SDK only for its event
    from azure.storage.blob import BlobServiceClient, ContainerClient
    from azure.storage.queue import QueueClient, QueueServiceClient

# Storage is reached directly (no proxy, no .netrc): with environment settings on, requests looks for a
# .netrc file and re-checks the CA bundle path on every call, ~12 % of the CPU of a Table read here
# (docs/benchmarks.md, B3).
_TRANSPORT = {"use_env_settings": False}


class StorageClients:
    """Lazily built, shared service clients; per-name table/queue/container clients are cached.

    ``credential`` replaces the app's identity for identity-based access (tests: bearer tokens for an Azurite
    started with ``--oauth basic``)."""

    def __init__(self, settings: Settings, credential: TokenCredential | None = None) -> None:
        self.settings = settings
        self._given_credential = credential
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], Any] = {}
        self._ensured: set[tuple[str, str]] = set()

    @cached_property
    def _credential(self) -> TokenCredential:
        if self._given_credential is not None:
            return self._given_credential
        from shared.base.identity import azure_credential  # MSAL only when identity-based access is used

        return azure_credential(self.settings)

    @cached_property
    def _identity_transport(self) -> dict[str, Any]:
        """Transport options of identity-based clients (always HTTPS): MAILBRIDGE_CA_BUNDLE, when set, is the
        CA they trust too (azure-core's ``connection_verify``), as for Entra, Graph and Key Vault."""
        if self.settings.ca_bundle:
            return {**_TRANSPORT, "connection_verify": self.settings.ca_bundle}
        return _TRANSPORT

    @cached_property
    def tables(self) -> TableServiceClient:
        s = self.settings.storage
        if s.connection_string:
            return TableServiceClient.from_connection_string(s.connection_string, **_TRANSPORT)
        return TableServiceClient(endpoint=s.table_service_uri, credential=self._credential, **self._identity_transport)

    @cached_property
    def queues(self) -> QueueServiceClient:
        from azure.storage.queue import QueueServiceClient

        s = self.settings.storage
        if s.connection_string:
            return QueueServiceClient.from_connection_string(s.connection_string, **_TRANSPORT)
        return QueueServiceClient(
            account_url=s.queue_service_uri, credential=self._credential, **self._identity_transport
        )

    @cached_property
    def blobs(self) -> BlobServiceClient:
        from azure.storage.blob import BlobServiceClient

        s = self.settings.storage
        if s.connection_string:
            return BlobServiceClient.from_connection_string(s.connection_string, **_TRANSPORT)
        return BlobServiceClient(
            account_url=s.blob_service_uri, credential=self._credential, **self._identity_transport
        )

    @property
    def creates_missing(self) -> bool:
        """Whether a table/queue/container is created on first use: only with a connection string (Azurite,
        which starts empty). In Azure (identity-based storage) infra/main.bicep creates every one of them
        (tests/test_infra.py checks the list against the names in the code), so a cold instance's first send
        spends no request on "create if missing"."""
        return bool(self.settings.storage.connection_string)

    def _client(self, kind: str, name: str, make: Callable[[str], Any], create: Callable[[Any], Any]) -> Any:
        """The cached per-name client (created on first use locally, see ``creates_missing``), so every later
        call is a dictionary lookup."""
        with self._lock:
            client = self._clients.get((kind, name))
            if client is None:
                client = self._clients[(kind, name)] = make(name)
        if (kind, name) not in self._ensured and self.creates_missing:
            try:
                create(client)
            except ResourceExistsError:
                pass
            self._ensured.add((kind, name))
        return client

    def table(self, name: str) -> TableClient:
        """A client for table ``name``. TABLE_PREFIX (empty in Azure) lets several deployments or test runs
        share one storage account."""
        name = self.settings.table_prefix + name
        return self._client("table", name, self.tables.get_table_client, lambda c: c.create_table())

    def queue(self, name: str) -> QueueClient:
        """A client for queue ``name`` (messages as plain text: host.json messageEncoding is none)."""
        return self._client("queue", name, self.queues.get_queue_client, lambda c: c.create_queue())

    def container(self, name: str) -> ContainerClient:
        return self._client("container", name, self.blobs.get_container_client, lambda c: c.create_container())
