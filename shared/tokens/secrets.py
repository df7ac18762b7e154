"""The Key Vault clients of the token store: the key that wraps each connection's data key (``TokenKey``), and
the secrets that held plain MSAL token caches before issue 26 (``TokenCacheVault``, kept for the upgrade path:
shared/tokens/cache_store.py reads a legacy secret once, seals it into Storage and soft-deletes it).

Names: ``mb-<connection id>-g<generation>`` (1-127 of ``0-9a-zA-Z-``) name a connection's cache, in the
store and (legacy) in the vault. Values are at most 25 KB (Key Vault's secret limit, kept for the sealed
caches too, so an upgraded cache always fits).
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from functools import cached_property
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from azure.keyvault.secrets import SecretClient

from shared.base.errors import MailbridgeError, TemporarilyUnavailable, Throttled
from shared.base.identity import key_vault_credential
from shared.base.settings import Settings

logger = logging.getLogger(__name__)

MAX_SECRET_BYTES = 25 * 1024
_NAME_RE = re.compile(r"^[A-Za-z][0-9A-Za-z-]{0,126}$")


class SecretTooLarge(MailbridgeError):
    code = "token_cache_too_large"
    default_hint = "The token cache is larger than Key Vault's 25 KB secret limit."


class SecretNameDeleted(MailbridgeError):
    """The name is soft-deleted (409 ObjectIsDeletedButRecoverable): use the next generation."""

    code = "secret_name_deleted"


def secret_name(connection_id: str, generation: int) -> str:
    name = f"mb-{connection_id}-g{generation}"
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid Key Vault secret name {name!r}")
    return name


def _client_kwargs(settings: Settings) -> dict:
    """What every Key Vault SDK client of ours is built with (no SDK retries: ``_KeyVaultCalls`` retries)."""
    host = urlsplit(settings.key_vault_url).hostname or ""
    kwargs: dict = {
        # The SDK checks that the challenge's resource matches the vault's DNS suffix; a local stand-in
        # on 127.0.0.1 cannot match, so only there is that check relaxed (TLS is still verified).
        "verify_challenge_resource": host.endswith(settings.cloud.key_vault_suffix),
        "retry_total": 0,
    }
    if settings.ca_bundle:
        kwargs["connection_verify"] = settings.ca_bundle
    return kwargs


class _KeyVaultCalls:
    """Key Vault calls with one retry policy: throttling (429) and 5xx with exponential backoff, a refused
    credential with a new client, no answer as TemporarilyUnavailable."""

    def __init__(self, settings: Settings, max_attempts: int = 5) -> None:
        self.settings = settings
        self.max_attempts = max_attempts

    def reset_clients(self) -> None:
        """Build the SDK client (and its credential) anew on next use."""
        self.__dict__.pop("client", None)

    def _with_backoff(self, what: str, fn):
        delay = 1.0
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn()
            except HttpResponseError as exc:
                if exc.status_code is None:
                    # No HTTP answer from the vault: azure-identity could not get us a token (ClientAuthenticationError,
                    # CredentialUnavailableError: the managed identity endpoint is down or refusing). It has retried
                    # already; the caller reschedules (the sender) or retries next run (the keep-alive).
                    raise TemporarilyUnavailable(
                        detail=f"Key Vault {what}: no credential ({type(exc).__name__})"
                    ) from exc
                if exc.status_code in (401, 403):
                    # Key Vault refused our credential: a token it no longer accepts (revoked, or clocks
                    # disagree) or a missing role. Start over with a new credential; if it persists, the
                    # caller waits and retries (an operator can fix RBAC) rather than losing the message.
                    self.reset_clients()
                    if attempt == self.max_attempts:
                        raise TemporarilyUnavailable(
                            detail=f"Key Vault {what} refused the app's credential ({exc.status_code})"
                        ) from exc
                    time.sleep(delay)
                    delay = min(delay * 2, 16.0)
                    continue
                if exc.status_code not in (429, 500, 502, 503, 504):
                    raise
                retry_after = _retry_after(exc) or delay
                if attempt == self.max_attempts:
                    # Out of patience: tell callers this is transient (the sender reschedules the message,
                    # the keep-alive retries next run) rather than leaking the SDK's raw error.
                    if exc.status_code == 429:
                        raise Throttled(detail=f"Key Vault {what} throttled", retry_after=retry_after) from exc
                    raise TemporarilyUnavailable(detail=f"Key Vault {what} answered {exc.status_code}") from exc
                logger.warning(
                    "Key Vault %s throttled/unavailable (%s); retrying in %.1fs", what, exc.status_code, retry_after
                )
                time.sleep(min(retry_after, 16.0) * (0.8 + 0.4 * random.random()))
                delay = min(delay * 2, 16.0)
            except AzureError as exc:  # no HTTP status: connection refused or dropped, timeouts
                if attempt == self.max_attempts:
                    raise TemporarilyUnavailable(detail=f"Key Vault unreachable during {what}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 16.0)
        raise AssertionError("unreachable")


class TokenCacheVault(_KeyVaultCalls):
    """Legacy plain token caches, one secret per connection (before issue 26): read once by the upgrade path and
    deleted (soft: Key Vault keeps them for its retention, purge protection forbids purging them early)."""

    @cached_property
    def client(self) -> SecretClient:
        return SecretClient(
            vault_url=self.settings.key_vault_url,
            credential=key_vault_credential(self.settings),
            **_client_kwargs(self.settings),
        )

    def read(self, name: str) -> str | None:
        """The latest value, or None when the secret does not exist."""
        try:
            return self._with_backoff("get", lambda: self.client.get_secret(name).value)
        except ResourceNotFoundError:
            return None

    def write(self, name: str, value: str, *, tags: dict[str, str] | None = None) -> None:
        """Store a new version; SecretTooLarge over 25 KB, SecretNameDeleted when the name is soft-deleted."""
        if len(value.encode()) > MAX_SECRET_BYTES:
            raise SecretTooLarge(detail=f"{len(value.encode())} bytes")
        try:
            self._with_backoff(
                "set",
                lambda: self.client.set_secret(name, value, content_type="application/json", tags=tags or {}),
            )
        except ResourceExistsError as exc:
            raise SecretNameDeleted(detail=name) from exc
        except HttpResponseError as exc:
            if exc.status_code == 409:
                raise SecretNameDeleted(detail=name) from exc
            raise

    def write_new_name(self, connection_id: str, generation: int, value: str, attempts: int = 5) -> tuple[str, int]:
        """Write ``value`` under the first generation from ``generation`` on whose name is not soft-deleted;
        returns (name, generation). Used by connect (first write, reconnect) and by version rotation."""
        for gen in range(generation, generation + attempts):
            name = secret_name(connection_id, gen)
            try:
                self.write(name, value, tags={"connection": connection_id})
                return name, gen
            except SecretNameDeleted:
                continue
        raise TemporarilyUnavailable(detail="no free Key Vault secret name")

    def delete(self, name: str) -> bool:
        """Soft-delete the secret (Key Vault keeps it for the retention period); False when it did not exist."""
        try:
            self._with_backoff("delete", lambda: self.client.begin_delete_secret(name))
            return True
        except ResourceNotFoundError:
            return False


WRAP_ALGORITHM = KeyWrapAlgorithm.rsa_oaep_256


class TokenKey(_KeyVaultCalls):
    """The vault's RSA key (KEY_VAULT_KEY_NAME) that wraps each connection's data key (RSA-OAEP-256).

    Wrapping needs only the public half: the SDK's ``CryptographyClient`` fetches the key once (Get Key) and wraps
    locally, as Microsoft's throttling guidance advises ("wrap, encrypt and verify ... can be performed locally
    with the public key", https://learn.microsoft.com/en-us/azure/key-vault/general/overview-throttling). Unwrapping
    is a vault call (the private half never leaves it); callers cache what they unwrapped. ``calls`` counts
    ``wrap`` (local) and ``unwrap`` (vault) for the cost tests."""

    def __init__(self, settings: Settings, max_attempts: int = 5) -> None:
        super().__init__(settings, max_attempts)
        self.calls = {"wrap": 0, "unwrap": 0}
        self._by_kid: dict[str, CryptographyClient] = {}
        self._kid_lock = threading.Lock()
        self._credential_lock = threading.Lock()
        self._credential: TokenCredential | None = None

    @property
    def credential(self) -> TokenCredential:
        """One credential (one token cache) for every client of the key: a cold instance signs in to the vault once,
        not once per client (wrap, each key version's unwrap) nor once per concurrent first caller."""
        with self._credential_lock:
            if self._credential is None:
                self._credential = key_vault_credential(self.settings)
            return self._credential

    @cached_property
    def client(self) -> CryptographyClient:
        """The latest version of the key (wraps)."""
        key_id = f"{self.settings.key_vault_url.rstrip('/')}/keys/{self.settings.key_vault_key_name}"
        return CryptographyClient(key_id, self.credential, **_client_kwargs(self.settings))

    def reset_clients(self) -> None:
        super().reset_clients()
        with self._kid_lock:
            self._by_kid.clear()
        with self._credential_lock:
            self._credential = None

    def _for_kid(self, kid: str) -> CryptographyClient:
        """A client unwrapping with the version ``kid`` names (the latest one, or an older one after a rotation)."""
        with self._kid_lock:
            return self._by_kid.get(kid) or self._new_for_kid(kid)

    def _new_for_kid(self, kid: str) -> CryptographyClient:
        client = CryptographyClient(kid, self.credential, **_client_kwargs(self.settings))
        # Unwrapping needs the private half, which never leaves the vault: without this the SDK would first
        # Get Key to try a local unwrap it cannot do (one more vault call on every cold instance's first send).
        # The flag is the SDK's own "keys/get is forbidden" switch (azure-keyvault-keys 4.11.3, pinned).
        client._keys_get_forbidden = True
        self._by_kid[kid] = client
        return client

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """(versioned key id, wrapped data key)."""
        result = self._with_backoff("wrap", lambda: self.client.wrap_key(WRAP_ALGORITHM, data_key))
        self.calls["wrap"] += 1
        return result.key_id, result.encrypted_key

    def unwrap(self, kid: str, wrapped: bytes) -> bytes:
        """The data key ``wrapped`` holds (one vault call)."""
        result = self._with_backoff("unwrap", lambda: self._for_kid(kid).unwrap_key(WRAP_ALGORITHM, wrapped))
        self.calls["unwrap"] += 1
        return result.key


def _retry_after(exc: HttpResponseError) -> float | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    raw = response.headers.get("Retry-After")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None
