"""Who Mailbridge is to Microsoft: the pooled HTTP session, the MSAL client factory and Azure credentials.

The Entra app proves itself with a client secret (local, against the emulator) or, in Azure, with a
managed-identity token exchanged through a federated identity credential (``client_assertion``): no
secret anywhere. Every HTTP client trusts the system store, or exactly the one CA bundle in
``MAILBRIDGE_CA_BUNDLE``; TLS verification is never switched off.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

import msal
import requests
from azure.core.credentials import TokenCredential
from requests.adapters import HTTPAdapter

from shared.clouds import CLOUDS
from shared.settings import Settings

_KNOWN_AUTHORITY_HOSTS = {urlsplit(c.authority_host).hostname for c in CLOUDS.values()}


def http_session(settings: Settings, pool_size: int = 32) -> requests.Session:
    """One pooled session. With a CA bundle, ``trust_env`` is off so REQUESTS_CA_BUNDLE cannot override it."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=8, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if settings.ca_bundle:
        session.trust_env = False
        session.verify = settings.ca_bundle
    return session


class ManagedIdentityAssertion:
    """A callable MSAL uses as ``client_assertion``: a managed-identity token for the token-exchange audience."""

    def __init__(self, settings: Settings) -> None:
        from azure.identity import ManagedIdentityCredential

        kwargs: dict[str, Any] = {"client_id": settings.managed_identity_client_id}
        if settings.ca_bundle:
            kwargs["connection_verify"] = settings.ca_bundle
        self._credential = ManagedIdentityCredential(**kwargs)
        self._scope = f"{settings.cloud.fic_audience}/.default"

    def __call__(self) -> str:
        # azure-identity caches the token until shortly before expiry, so this is cheap per MSAL call.
        return self._credential.get_token(self._scope).token


class MsalFactory:
    """Builds ConfidentialClientApplication objects that share one HTTP session and one discovery cache.

    MSAL apps are cheap once authority discovery is cached (``http_cache``), so we build one per token
    cache (one per connection) instead of sharing a client across threads with swapped caches.
    """

    def __init__(self, settings: Settings, session: requests.Session) -> None:
        self.settings = settings
        self.session = session
        self._http_cache: dict[Any, Any] = {}
        self._lock = threading.Lock()
        if settings.entra_client_credential == "managed_identity":
            self._credential: Any = {"client_assertion": ManagedIdentityAssertion(settings)}
        else:
            self._credential = settings.entra_client_secret
        host = urlsplit(settings.authority_host).hostname
        # Instance discovery asks Microsoft's global endpoint about the host: only for Microsoft's own hosts.
        self._instance_discovery = host in _KNOWN_AUTHORITY_HOSTS

    def app(
        self,
        token_cache: msal.TokenCache | None = None,
        authority: str | None = None,
        http_cache: dict[Any, Any] | None = None,
    ) -> msal.ConfidentialClientApplication:
        """A client for one token cache. ``http_cache`` replaces the shared one: MSAL keeps its discovery
        answers *and* its 5xx/429 throttling state there, keyed per refresh token but, for auth-code
        redemptions, not per user; the connect callback passes a fresh one so one user's failure stays theirs."""
        with self._lock:
            return msal.ConfidentialClientApplication(
                self.settings.entra_client_id,
                client_credential=self._credential,
                authority=authority or self.settings.authority,
                http_client=self.session,
                token_cache=token_cache,
                instance_discovery=self._instance_discovery,
                http_cache=self._http_cache if http_cache is None else http_cache,
                timeout=(5, 30),
            )


def key_vault_credential(settings: Settings) -> TokenCredential:
    """Credential for Key Vault: managed identity in Azure, the app's own credential against the emulator."""
    from azure.identity import ClientAssertionCredential, ClientSecretCredential, DefaultAzureCredential

    from shared.storage import azure_credential

    if settings.key_vault_auth == "app":
        common: dict[str, Any] = {
            "authority": settings.authority_host,
            "additionally_allowed_tenants": ["*"],  # the vault's challenge names its tenant
            "disable_instance_discovery": urlsplit(settings.authority_host).hostname not in _KNOWN_AUTHORITY_HOSTS,
        }
        if settings.ca_bundle:
            common["connection_verify"] = settings.ca_bundle
        tenant = settings.entra_tenant if "-" in settings.entra_tenant else "organizations"
        if settings.entra_client_credential == "managed_identity":
            assertion = ManagedIdentityAssertion(settings)
            return ClientAssertionCredential(tenant, settings.entra_client_id, assertion, **common)
        return ClientSecretCredential(tenant, settings.entra_client_id, settings.entra_client_secret or "", **common)
    if settings.key_vault_auth == "managed_identity":
        return azure_credential(settings)
    return DefaultAzureCredential()
