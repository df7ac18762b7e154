"""The process-wide object graph: built once from the settings, shared by every trigger."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property

import requests

from shared.identity import MsalFactory, http_session
from shared.locks import ConnectionLocks
from shared.secrets import TokenCacheVault
from shared.settings import Settings, get_settings
from shared.storage import StorageClients
from shared.store import ConnectionStore, FlowStore, TenantStore
from shared.tokens import TokenService


@dataclass
class Services:
    settings: Settings

    @cached_property
    def http(self) -> requests.Session:
        return http_session(self.settings)

    @cached_property
    def storage(self) -> StorageClients:
        return StorageClients(self.settings)

    @cached_property
    def connections(self) -> ConnectionStore:
        return ConnectionStore(self.storage)

    @cached_property
    def flows(self) -> FlowStore:
        return FlowStore(self.storage)

    @cached_property
    def tenants(self) -> TenantStore:
        return TenantStore(self.storage)

    @cached_property
    def msal(self) -> MsalFactory:
        return MsalFactory(self.settings, self.http)

    @cached_property
    def vault(self) -> TokenCacheVault:
        return TokenCacheVault(self.settings)

    @cached_property
    def locks(self) -> ConnectionLocks:
        return ConnectionLocks(self.storage)

    @cached_property
    def tokens(self) -> TokenService:
        return TokenService(self.settings, self.msal, self.vault, self.connections, self.locks)


_lock = threading.Lock()
_services: Services | None = None


def get_services() -> Services:
    """The shared Services, built on first use (settings errors surface here, naming the setting)."""
    global _services
    with _lock:
        if _services is None:
            _services = Services(get_settings())
        return _services


def reset_services() -> None:
    """Drop the shared Services (tests change settings between runs)."""
    global _services
    from shared.settings import reset_settings_cache

    with _lock:
        _services = None
        reset_settings_cache()
