"""Who Mailbridge is to Microsoft: the pooled HTTP session, the MSAL client factory and Azure credentials.

The Entra app proves itself with a client secret (local, against the emulator) or, in Azure, with a
managed-identity token exchanged through a federated identity credential (``client_assertion``): no
secret anywhere. Every HTTP client trusts the system store, or exactly the one CA bundle in
``MAILBRIDGE_CA_BUNDLE``; TLS verification is never switched off.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlsplit

import msal
import requests
from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from requests.adapters import HTTPAdapter

from shared.base.clouds import CLOUDS
from shared.base.settings import Settings

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


# What MSAL raises instead of returning an error: the endpoint unreachable, an answer that is not a token or a
# refused discovery (ValueError), a 5xx (MsalServiceError). All are credential outages to its callers.
_MSAL_FAILURES = (requests.RequestException, ValueError, msal.exceptions.MsalServiceError)


def _access_token(result: dict[str, Any] | None, what: str) -> AccessToken:
    """An azure-core AccessToken from an MSAL result, else ClientAuthenticationError (no HTTP status: callers treat
    it as a credential outage, as they did azure-identity's)."""
    if not result or "access_token" not in result:
        error = (result or {}).get("error") or "no_token"
        raise ClientAuthenticationError(message=f"{what}: {error}: {(result or {}).get('error_description', '')}")
    return AccessToken(result["access_token"], int(time.time()) + int(result.get("expires_in", 3600)))


class ManagedIdentityCredential:
    """An azure-core TokenCredential over MSAL's ManagedIdentityClient (App Service / Functions' IDENTITY_ENDPOINT,
    IMDS elsewhere) for a user-assigned identity. MSAL is loaded for the users' tokens anyway, so Storage, Key
    Vault and MSAL's client assertion need no azure-identity (and none of the cryptography it imports) on the send
    path. MSAL caches the token until 5 minutes before it expires; a failure is a ClientAuthenticationError."""

    def __init__(self, client_id: str, session: requests.Session) -> None:
        self._client = msal.ManagedIdentityClient(
            msal.UserAssignedManagedIdentity(client_id=client_id), http_client=session
        )
        self._lock = threading.Lock()

    def get_token(
        self, *scopes: str, claims: str | None = None, tenant_id: str | None = None, enable_cae: bool = False, **_: Any
    ) -> AccessToken:
        resource = scopes[0].removesuffix("/.default")
        try:
            with self._lock:  # MSAL's token cache is thread-safe; one fetch at a time spares the endpoint
                result = self._client.acquire_token_for_client(resource=resource, claims_challenge=claims)
        except _MSAL_FAILURES as exc:
            raise ClientAuthenticationError(message=f"managed identity endpoint: {type(exc).__name__}") from exc
        return _access_token(result, "managed identity")


class AppCredential:
    """An azure-core TokenCredential for the Entra app itself (client credentials: its secret, or the managed
    identity's federated assertion) through MSAL, one client per tenant (a Key Vault challenge names its
    tenant). Used for Key Vault against a local authority; MSAL keeps app tokens in its cache until due."""

    def __init__(self, settings: Settings, session: requests.Session, client_credential: Any) -> None:
        self._settings = settings
        self._session = session
        self._client_credential = client_credential
        self._apps: dict[str, msal.ConfidentialClientApplication] = {}
        self._lock = threading.Lock()
        self._acquiring: dict[str, threading.Lock] = {}
        self._default_tenant = settings.entra_tenant if "-" in settings.entra_tenant else "organizations"

    def _app(self, tenant: str) -> msal.ConfidentialClientApplication:
        with self._lock:
            app = self._apps.get(tenant)
            if app is None:
                app = self._apps[tenant] = msal.ConfidentialClientApplication(
                    self._settings.entra_client_id,
                    client_credential=self._client_credential,
                    authority=f"{self._settings.authority_host}/{tenant}",
                    http_client=self._session,
                    instance_discovery=urlsplit(self._settings.authority_host).hostname in _KNOWN_AUTHORITY_HOSTS,
                    timeout=(5, 30),
                )
            return app

    def get_token(
        self, *scopes: str, claims: str | None = None, tenant_id: str | None = None, enable_cae: bool = False, **_: Any
    ) -> AccessToken:
        tenant = tenant_id or self._default_tenant
        with self._lock:
            acquiring = self._acquiring.setdefault(tenant, threading.Lock())
        try:
            # One request per tenant at a time: callers that found no token wait for the first one's and take it
            # from MSAL's cache, instead of each asking Entra for its own (a cold instance's first burst).
            with acquiring:
                result = self._app(tenant).acquire_token_for_client(list(scopes), claims_challenge=claims)
        except _MSAL_FAILURES as exc:
            raise ClientAuthenticationError(message=f"app credential: {type(exc).__name__}") from exc
        return _access_token(result, "app credential")


class ManagedIdentityAssertion:
    """A callable MSAL uses as ``client_assertion``: a managed-identity token for the token-exchange audience."""

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        assert settings.managed_identity_client_id  # settings require it with ENTRA_CLIENT_CREDENTIAL=managed_identity
        self._credential = ManagedIdentityCredential(
            settings.managed_identity_client_id, session or http_session(settings)
        )
        self._scope = f"{settings.cloud.fic_audience}/.default"

    def __call__(self) -> str:
        # MSAL's managed-identity client caches the token until shortly before expiry: cheap per MSAL call.
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
            self._credential: Any = {"client_assertion": ManagedIdentityAssertion(settings, session)}
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


def azure_credential(settings: Settings) -> TokenCredential:
    """The credential for Azure resources (Storage, Key Vault) in Azure: the app's managed identity, through MSAL
    (ManagedIdentityCredential); DefaultAzureCredential (azure-identity) only when no identity is configured."""
    if settings.managed_identity_client_id:
        return ManagedIdentityCredential(settings.managed_identity_client_id, http_session(settings))
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def key_vault_credential(settings: Settings, session: requests.Session | None = None) -> TokenCredential:
    """Credential for Key Vault: managed identity in Azure, the app's own credential against the emulator; both
    through MSAL (no azure-identity on the send path). ``KEY_VAULT_AUTH=default`` keeps DefaultAzureCredential."""
    if settings.key_vault_auth == "app":
        session = session or http_session(settings)
        if settings.entra_client_credential == "managed_identity":
            credential: Any = {"client_assertion": ManagedIdentityAssertion(settings, session)}
        else:
            credential = settings.entra_client_secret or ""
        return AppCredential(settings, session, credential)
    if settings.key_vault_auth == "managed_identity":
        return azure_credential(settings)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()
