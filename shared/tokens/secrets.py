"""One Key Vault secret per connection holding its serialized MSAL token cache.

Names: ``mb-<connection id>-g<generation>`` (1-127 of ``0-9a-zA-Z-``). A reconnect after a disconnect
moves to a new generation instead of recovering the soft-deleted name, so a recovered old version can
never bring back a stale refresh token. Values are at most 25 KB (Key Vault's limit).
"""

from __future__ import annotations

import logging
import random
import re
import time
from functools import cached_property
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
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


class TokenCacheVault:
    """Reads and writes token caches; retries Key Vault throttling (429) with exponential backoff."""

    def __init__(self, settings: Settings, max_attempts: int = 5) -> None:
        self.settings = settings
        self.max_attempts = max_attempts

    @cached_property
    def client(self) -> SecretClient:
        host = urlsplit(self.settings.key_vault_url).hostname or ""
        kwargs = {}
        if self.settings.ca_bundle:
            kwargs["connection_verify"] = self.settings.ca_bundle
        return SecretClient(
            vault_url=self.settings.key_vault_url,
            credential=key_vault_credential(self.settings),
            # The SDK checks that the challenge's resource matches the vault's DNS suffix; a local stand-in
            # on 127.0.0.1 cannot match, so only there is that check relaxed (TLS is still verified).
            verify_challenge_resource=host.endswith(self.settings.cloud.key_vault_suffix),
            retry_total=0,
            **kwargs,
        )

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
                    self.__dict__.pop("client", None)
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


def _retry_after(exc: HttpResponseError) -> float | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    raw = response.headers.get("Retry-After")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None
