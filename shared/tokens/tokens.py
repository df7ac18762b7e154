"""Access tokens for a connection: memory first, else Key Vault + MSAL silent refresh, under the lock.

One refresh path serves the sender and the keep-alive timer. The stored MSAL token cache is written
back only when MSAL changed it, always under the connection's lease, after re-reading what is stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import msal

from shared.base.errors import (
    AppCredentialFailed,
    MailbridgeError,
    ReauthRequired,
    TemporarilyUnavailable,
    TransientError,
)
from shared.base.identity import MsalFactory
from shared.base.settings import Settings
from shared.tokens.app_credential import AppCredentialHealth, AppCredentialProbe
from shared.tokens.cache_store import TokenCacheStore
from shared.tokens.entra_errors import (
    OPERATOR_CODES,
    TOKEN_ENDPOINT_OUTAGES,
    aadsts_codes,
    classify,
    map_entra_error,
    token_endpoint_outage,
)
from shared.tokens.locks import ConnectionLocks
from shared.tokens.scopes import refresh_scopes
from shared.tokens.store import Connection, ConnectionStore

logger = logging.getLogger(__name__)

EARLY_REFRESH_SECONDS = 300  # never hand out a token with less than 5 minutes to live
# At most one refresh forced by Graph's 401 per connection in this long, whatever the instance (issue 25 item 3):
# a tenant without Exchange Online answers 401 whatever the token, and Entra throttles a client that redeems the
# same refresh token in a loop (AADSTS50196).
FORCED_REFRESH_FLOOR_S = 60.0


@dataclass
class _Cached:
    token: str
    expires_at: float


@dataclass
class RefreshOutcome:
    token: str
    expires_at: float
    refreshed: bool  # the refresh token was redeemed (a token-endpoint call happened)
    wrote_cache: bool


class TokenService:
    """Hands out Graph access tokens per connection; marks connections reauth_required when the grant is dead."""

    def __init__(
        self,
        settings: Settings,
        msal_factory: MsalFactory,
        vault: TokenCacheStore,
        connections: ConnectionStore,
        locks: ConnectionLocks,
        max_cached: int = 5000,
        max_secret_versions: int = 100,
        clock: Callable[[], float] = time.time,
        credential_health: AppCredentialHealth | None = None,
        credential_probe: AppCredentialProbe | None = None,
    ) -> None:
        self.settings = settings
        self.credential_probe = credential_probe  # asked before a refusal naming no credential is blamed on the app
        self.credential_health = credential_health  # told when Entra refuses (or accepts again) the app credential
        self.msal = msal_factory
        self.vault = vault
        self.connections = connections
        self.locks = locks
        self.max_cached = max_cached
        self.max_secret_versions = max_secret_versions
        self.clock = clock  # injectable so tests can live on the emulator's clock
        self._memory: OrderedDict[str, _Cached] = OrderedDict()
        self._mem_lock = threading.Lock()

    def forget(self, connection_id: str) -> None:
        with self._mem_lock:
            self._memory.pop(connection_id, None)

    def _remembered(self, connection_id: str) -> _Cached | None:
        """The in-memory token when it has more than 5 minutes left (marked recently used), else None."""
        with self._mem_lock:
            hit = self._memory.get(connection_id)
            if hit and hit.expires_at - self.clock() > EARLY_REFRESH_SECONDS:
                self._memory.move_to_end(connection_id)
                return hit
        return None

    def _remember(self, connection_id: str, cached: _Cached) -> _Cached:
        """Keep ``cached`` as the connection's token (most recently used; the oldest dropped past max_cached)."""
        with self._mem_lock:
            self._memory[connection_id] = cached
            self._memory.move_to_end(connection_id)
            while len(self._memory) > self.max_cached:
                self._memory.popitem(last=False)
        return cached

    def access_token(self, conn: Connection) -> str:
        """A token with at least 5 minutes left: from memory, else from the stored cache when it holds one
        (no lease, no MSAL client), else via a locked refresh."""
        hit = self._remembered(conn.connection_id)
        if hit:
            return hit.token
        stored = self._stored_access_token(conn)
        return stored.token if stored else self.refresh(conn, force=False).token

    def _stored_access_token(self, conn: Connection) -> _Cached | None:
        """A still-valid access token from the stored MSAL cache, read without the lease: a cold instance's first
        send (the cache an earlier connect or refresh left holds an access token for an hour or more) then costs
        one Key Vault read, not a lease acquire + release, a re-read of the row and MSAL's authority discovery.

        Nothing is written, so nothing can store an older cache over a newer one (what the lease is for): whichever
        version of the cache we read, an access token in it that has not expired is good. The test is MSAL's own
        silent-acquisition rule, applied through its public ``TokenCache.search``: this app's tokens for the user,
        the authority's host and the scopes, more than 5 minutes left and not past ``refresh_on``. Anything else
        (no cache, a name the row no longer points at, no such token) returns None and the locked path decides."""
        serialized = self.vault.read(conn.secret_name)
        if not serialized:
            return None  # the locked path re-reads the row: a rotated name, a disconnect, or reauth_required
        cache = msal.SerializableTokenCache()
        cache.deserialize(serialized)
        now = self.clock()
        environment = urlsplit(self.settings.authority_host).hostname  # MSAL keys tokens by host, no port
        query = {"client_id": self.settings.entra_client_id, "environment": environment}
        target = refresh_scopes(self.settings.graph_scopes, conn.scopes)
        for entry in cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN, target=target, query=query, now=now):
            if not str(entry.get("home_account_id", "")).startswith(conn.object_id):
                continue
            if entry.get("token_type", "Bearer").lower() != "bearer" or "key_id" in entry:
                continue  # bound to a key (PoP, SSH certificates): not a bearer token for Graph
            expires_on = float(entry["expires_on"])
            if expires_on - now <= EARLY_REFRESH_SECONDS or float(entry.get("refresh_on", expires_on)) < now:
                continue
            return self._remember(conn.connection_id, _Cached(entry["secret"], expires_on))
        return None

    def refresh(self, conn: Connection, *, force: bool) -> RefreshOutcome:
        """Under the connection's lease: read the stored cache, acquire silently (forced or not), write back."""
        with self.locks.hold(conn.connection_id) as held:
            if not force:
                # Another thread may have refreshed while we waited for the lock: reuse its token.
                hit = self._remembered(conn.connection_id)
                if hit:
                    return RefreshOutcome(hit.token, hit.expires_at, refreshed=False, wrote_cache=False)
            fresh = self.connections.get(conn.connection_id)
            if fresh.status != "connected":
                raise ReauthRequired(detail=f"connection is {fresh.status}", reason=fresh.last_error_code)
            return self._refresh_held(held, fresh, force=force)

    def refresh_rejected(self, conn: Connection) -> bool:
        """Graph refused a token that has not expired by our clock (revoked, clocks disagree): forget it and redeem
        the refresh token, unless a refresh was forced for this connection less than FORCED_REFRESH_FLOOR_S ago by
        any instance (the row says when, read under the lease): then the stored cache holds that fresh token and
        the next :meth:`access_token` reads it. True when this call redeemed. ReauthRequired when the grant is dead."""
        self.forget(conn.connection_id)
        with self.locks.hold(conn.connection_id) as held:
            fresh = self.connections.get(conn.connection_id)
            if fresh.status != "connected":
                raise ReauthRequired(detail=f"connection is {fresh.status}", reason=fresh.last_error_code)
            now = self.clock()
            if fresh.token_forced_at <= now < fresh.token_forced_at + FORCED_REFRESH_FLOOR_S:
                return False
            fresh.token_forced_at = now
            self._refresh_held(held, fresh, force=True)
            return True

    def refresh_if_due(self, connection_id: str, refreshed_before: float) -> RefreshOutcome | Connection:
        """The keep-alive's refresh: under the lease, read the row once and, when it is connected and its
        refresh token was last redeemed before ``refreshed_before``, force a refresh. Returns the outcome, or
        the row itself when there was nothing to do (not connected, or refreshed since the index said so).
        NotFound when the connection does not exist. One row read per refresh, not one before the lock too."""
        with self.locks.hold(connection_id) as held:
            fresh = self.connections.get(connection_id)
            if fresh.status != "connected" or fresh.last_refreshed_at >= refreshed_before:
                return fresh
            return self._refresh_held(held, fresh, force=True)

    def _refresh_held(self, held, fresh: Connection, *, force: bool) -> RefreshOutcome:
        """The refresh itself; the caller holds the lease and has just read ``fresh``."""
        serialized = self.vault.read(fresh.secret_name)
        if not serialized:
            self._mark_reauth(fresh, ReauthRequired(detail="no stored token cache"))
            raise ReauthRequired(detail="no stored token cache")
        cache = msal.SerializableTokenCache()
        cache.deserialize(serialized)
        app = self.msal.app(token_cache=cache)
        accounts = app.get_accounts()
        account = next((a for a in accounts if a.get("home_account_id", "").startswith(fresh.object_id)), None) or (
            accounts[0] if accounts else None
        )
        if account is None:
            self._mark_reauth(fresh, ReauthRequired(detail="token cache holds no account"))
            raise ReauthRequired(detail="token cache holds no account")
        try:
            # The grant's own scopes, never wider (scopes.py): a feature turned on later must not kill old grants.
            scopes = refresh_scopes(self.settings.graph_scopes, fresh.scopes)
            result = app.acquire_token_silent_with_error(scopes, account=account, force_refresh=force)
        except TOKEN_ENDPOINT_OUTAGES as exc:
            raise token_endpoint_outage(exc) from exc
        if not result or "access_token" not in result:
            err = self._refusal(result or {"error": "interaction_required"})
            if isinstance(err, AppCredentialFailed) and self.credential_health:
                # The operator's problem: the connection stays connected and due; the caller waits and retries.
                self.credential_health.failed(err)
            if isinstance(err, TransientError):
                raise err
            reauth = err if isinstance(err, ReauthRequired) else ReauthRequired(detail=err.detail)
            self._mark_reauth(fresh, reauth)
            raise reauth
        refreshed = result.get("token_source") == "identity_provider"
        if refreshed and self.credential_health:
            self.credential_health.succeeded()
        wrote = False
        old_secret = None
        if cache.has_state_changed:
            held.check()  # never write under a lease someone else holds now (their cache may be newer)
            old_secret = self._write_back(fresh, cache.serialize())
            wrote = True
        if refreshed or wrote:
            if refreshed:
                fresh.last_refreshed_at = self.clock()
            due = fresh.last_refreshed_at + self.settings.refresh_after_days * 86400
            self.connections.set_refresh_due(fresh, due)
            self.connections.save(fresh, index=False)
        if old_secret:
            # Only after the row points at the new name: the old one (and all its versions) goes to soft delete.
            self.vault.delete(old_secret)
        expires_at = self.clock() + float(result.get("expires_in", 3600))
        self._remember(fresh.connection_id, _Cached(result["access_token"], expires_at))
        return RefreshOutcome(result["access_token"], expires_at, refreshed, wrote)

    def _refusal(self, payload: dict) -> MailbridgeError:
        """What a refused refresh means, deciding "the operator's credential is broken" from the app's own credential,
        never from one user's refresh (issue 25). A refusal naming the credential (wrong or expired secret, federated
        credential mismatch: the same credential goes with every request) is the operator's. One naming a tenant's
        copy of the app (AADSTS700016, 7000112), or none we know, is checked against the home tenant first:
        refused there too -> the operator's; works there -> that tenant's (its connections need a reconnect) or this
        connection's alone (it stays connected and due, retried later; health and the sweep carry on)."""
        err = map_entra_error(payload, during="refresh")
        party = classify(payload)
        if party == "tenant" or (party == "operator" and _unrecognised(payload)):
            works = self.credential_probe.works() if self.credential_probe else None
            if works is False:
                detail = f"{err.detail}; the app's credential is refused in its home tenant too"
                return AppCredentialFailed(detail=detail)
            if party == "operator" and works:
                return TemporarilyUnavailable(detail=f"{err.detail}: refused for this connection only")
        return err

    def _write_back(self, conn: Connection, serialized: str) -> str | None:
        """Store the rotated cache (the store replaces its row: no versions). After ``max_secret_versions`` writes
        the cache moves to the next generation's name under a new data key, and the old row is erased
        (shared/tokens/cache_store.py). Returns the name to erase once the connection row points at the new one,
        or None."""
        if conn.secret_writes < self.max_secret_versions:
            self.vault.write(conn.secret_name, serialized, tags={"connection": conn.connection_id})
            conn.secret_writes += 1
            return None
        old = conn.secret_name
        conn.secret_name, conn.secret_generation = self.vault.write_new_name(
            conn.connection_id, conn.secret_generation + 1, serialized
        )
        conn.secret_writes = 1
        logger.info("Connection %s token cache moved to generation %d", conn.connection_id, conn.secret_generation)
        return old

    def _mark_reauth(self, conn: Connection, err: ReauthRequired) -> None:
        """Record that the user must reconnect; the caller emits the event."""
        self.forget(conn.connection_id)
        conn.status = "reauth_required"
        conn.last_error_code = err.code
        conn.last_error_reason = err.extra.get("reason")
        conn.last_error_message = f"{err.message} ({err.detail})" if err.detail else err.message
        self.connections.set_refresh_due(conn, None)
        self.connections.save(conn, index=False)
        logger.warning("Connection %s needs re-authorisation: %s", conn.connection_id, err.detail)


def _unrecognised(payload: dict) -> bool:
    """A refusal whose AADSTS code names no credential problem we know (``classify`` calls those the operator's)."""
    return not any(c in OPERATOR_CODES for c in aadsts_codes(payload))
