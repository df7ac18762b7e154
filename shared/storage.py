"""Storage clients (queues, tables, blobs) built once from the settings: connection string or managed identity."""

from __future__ import annotations

import threading
from functools import cached_property

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient, QueueServiceClient

from shared.settings import Settings


def azure_credential(settings: Settings) -> TokenCredential:
    """The credential for Azure resources (Storage, Key Vault) in Azure: the app's managed identity."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if settings.managed_identity_client_id:
        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
    return DefaultAzureCredential()


class StorageClients:
    """Lazily built, shared service clients; per-name table/queue/container clients are cached."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._tables: dict[str, TableClient] = {}
        self._queues: dict[str, QueueClient] = {}
        self._containers: dict[str, ContainerClient] = {}
        self._ensured: set[tuple[str, str]] = set()

    @cached_property
    def _credential(self) -> TokenCredential:
        return azure_credential(self.settings)

    @cached_property
    def tables(self) -> TableServiceClient:
        s = self.settings.storage
        if s.connection_string:
            return TableServiceClient.from_connection_string(s.connection_string)
        return TableServiceClient(endpoint=s.table_service_uri, credential=self._credential)

    @cached_property
    def queues(self) -> QueueServiceClient:
        s = self.settings.storage
        if s.connection_string:
            return QueueServiceClient.from_connection_string(s.connection_string)
        return QueueServiceClient(account_url=s.queue_service_uri, credential=self._credential)

    @cached_property
    def blobs(self) -> BlobServiceClient:
        s = self.settings.storage
        if s.connection_string:
            return BlobServiceClient.from_connection_string(s.connection_string)
        return BlobServiceClient(account_url=s.blob_service_uri, credential=self._credential)

    def table(self, name: str) -> TableClient:
        """A client for table ``name``, created on first use (infra creates them in Azure; Azurite starts empty).

        TABLE_PREFIX (empty in Azure) lets several deployments or test runs share one storage account.
        """
        name = self.settings.table_prefix + name
        with self._lock:
            client = self._tables.get(name)
            if client is None:
                client = self.tables.get_table_client(name)
                self._tables[name] = client
        if ("table", name) not in self._ensured:
            try:
                self.tables.create_table(name)
            except ResourceExistsError:
                pass
            self._ensured.add(("table", name))
        return client

    def queue(self, name: str) -> QueueClient:
        """A client for queue ``name`` (messages as plain text: host.json messageEncoding is none)."""
        with self._lock:
            client = self._queues.get(name)
            if client is None:
                client = self.queues.get_queue_client(name)
                self._queues[name] = client
        if ("queue", name) not in self._ensured:
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
            self._ensured.add(("queue", name))
        return client

    def container(self, name: str) -> ContainerClient:
        with self._lock:
            client = self._containers.get(name)
            if client is None:
                client = self.blobs.get_container_client(name)
                self._containers[name] = client
        if ("container", name) not in self._ensured:
            try:
                client.create_container()
            except ResourceExistsError:
                pass
            self._ensured.add(("container", name))
        return client
