"""Pending grants and the claim step: a connect callback never attaches a mailbox to anyone by itself.

Why: a connect link (or the Microsoft sign-in URL it leads to) can be forwarded. Whoever finishes it
signs in with *their* mailbox; if the callback stored that as a connection of the link's ``user_ref``,
the link's owner could send mail from a stranger's mailbox (login / account-linking CSRF, RFC 9700
§4.7). So the callback only parks the new grant:

1. ``create``: the token cache is sealed into the token store under a pending name, a row in ``authflows``
   (``grant-<sha256(grant id)>``) remembers whose link it was, and the browser is sent to
   ``return_url?status=connected&result=<one-time code>``. The code is HMAC-signed (ticket key) and
   names the grant; it is single use and lives 10 minutes. Nothing can send with a pending grant.
2. ``claim``: the SaaS backend, which knows who is signed in on its side, posts ``{result, user_ref}``.
   Same ``user_ref`` as the link -> the connection is created or updated (its own cache name, the
   pending cache erased) and returned. Another ``user_ref`` -> ``claim_mismatch`` and the grant is
   discarded at once (its sealed cache erased, shared/tokens/cache_store.py). A second claim ->
   ``result_used``; after 10 minutes -> ``result_expired``.
3. ``purge``: the housekeeping timer deletes grants nobody claimed in time, erasing their cache.

The grant row's status moves ``pending -> claimed | discarded`` by ETag-matched updates, so of two
concurrent claims exactly one wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from shared.base import errors
from shared.base.settings import AUTHFLOWS_TABLE
from shared.connect.id_tokens import mailbox_address
from shared.connect.tickets import open_token, sign_token
from shared.tokens.store import Connection, connection_id_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.base.settings import Settings
    from shared.base.storage import StorageClients
    from shared.tokens.cache_store import TokenCacheStore

logger = logging.getLogger(__name__)

GRANT_TTL_SECONDS = 600
RESULT_PURPOSE = "connect-result"
_ROW = "grant"


@dataclass
class PendingGrant:
    """A signed-in mailbox waiting for the backend's claim. Timestamps are epoch seconds."""

    grant_id: str
    user_ref: str  # whose link it was
    tenant_id: str
    object_id: str
    mailbox: str
    display_name: str
    scopes: list[str]
    secret_name: str  # the pending token cache's name in the token store
    expires_at: float
    reconnect_id: str | None = None  # the link re-authorised this connection
    status: str = "pending"  # pending | claimed | discarded
    etag: str = field(default="", repr=False, compare=False)


def _partition(grant_id: str) -> str:
    # Hashed: storage request URLs (which libraries log) never carry the grant id of a live result code.
    return "grant-" + hashlib.sha256(grant_id.encode()).hexdigest()


class GrantServices(Protocol):
    """What pending grants use of the composition root (shared.services.Services provides it)."""

    settings: Settings
    storage: StorageClients
    token_caches: TokenCacheStore
    clock: Callable[[], float]


class PendingGrantStore:
    """Pending grants as rows of the ``authflows`` table."""

    def __init__(self, services: GrantServices) -> None:
        self.s = services

    @property
    def table(self):
        return self.s.storage.table(AUTHFLOWS_TABLE)

    def put(self, grant: PendingGrant) -> None:
        data = {k: v for k, v in asdict(grant).items() if k not in ("etag", "status", "expires_at")}
        self.table.create_entity(
            {
                "PartitionKey": _partition(grant.grant_id),
                "RowKey": _ROW,
                "data": json.dumps(data),
                "status": grant.status,
                "expires_at": grant.expires_at,
            }
        )

    def get(self, grant_id: str) -> PendingGrant | None:
        try:
            entity = self.table.get_entity(_partition(grant_id), _ROW)
        except ResourceNotFoundError:
            return None
        return PendingGrant(
            **json.loads(entity["data"]),
            status=entity["status"],
            expires_at=float(entity["expires_at"]),
            etag=entity.metadata["etag"],
        )

    def move(self, grant: PendingGrant, status: str) -> bool:
        """Set the status if nobody changed the row since it was read; False when someone else did."""
        entity = {"PartitionKey": _partition(grant.grant_id), "RowKey": _ROW, "status": status}
        try:
            self.table.update_entity(
                entity, mode="merge", etag=grant.etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        grant.status = status
        return True

    def expired(self, now: float, limit: int) -> list[tuple[str, str, str]]:
        """(partition key, status, pending secret name) of grant rows past their expiry."""
        rows = self.table.query_entities(
            "PartitionKey ge 'grant-' and PartitionKey lt 'grant.' and expires_at lt @now",
            parameters={"now": now},
            select=["PartitionKey", "status", "data"],
        )
        out = []
        for row in rows:
            out.append((row["PartitionKey"], row.get("status", ""), json.loads(row["data"]).get("secret_name", "")))
            if len(out) >= limit:
                break
        return out

    def delete_row(self, partition: str) -> None:
        try:
            self.table.delete_entity(partition, _ROW)
        except ResourceNotFoundError:
            pass


class GrantService:
    """Creates pending grants (connect callback), claims them (backend), purges the unclaimed."""

    def __init__(self, services: GrantServices) -> None:
        self.s = services
        self.store = PendingGrantStore(services)

    @property
    def _key(self) -> bytes:
        return self.s.settings.ticket_signing_key

    # callback ---------------------------------------------------------------------------------------
    def create(
        self, *, user_ref: str, claims: dict[str, Any], scopes: list[str], cache_text: str, reconnect_id: str | None
    ) -> str:
        """Park a signed-in mailbox; returns the one-time result code for the return URL."""
        grant_id = secrets.token_urlsafe(24)
        name = "mb-p" + hashlib.sha256(grant_id.encode()).hexdigest()[:40]
        self.s.token_caches.write(name, cache_text, tags={"pending": "true"})
        expires_at = self.s.clock() + GRANT_TTL_SECONDS
        self.store.put(
            PendingGrant(
                grant_id=grant_id,
                user_ref=user_ref,
                tenant_id=claims["tid"],
                object_id=claims["oid"],
                mailbox=mailbox_address(claims),
                display_name=claims.get("name") or "",
                scopes=scopes,
                secret_name=name,
                expires_at=expires_at,
                reconnect_id=reconnect_id,
            )
        )
        return sign_token(self._key, RESULT_PURPOSE, {"g": grant_id, "exp": int(expires_at)})

    # claim ------------------------------------------------------------------------------------------
    def claim(self, body: Any) -> Connection:
        """Activate the grant a result code names, for ``user_ref``; see the module docstring."""
        if not isinstance(body, dict):
            raise errors.InvalidRequest("The body must be a JSON object {result, user_ref}.")
        user_ref = body.get("user_ref")
        if not isinstance(user_ref, str) or not user_ref.strip() or len(user_ref) > 256:
            raise errors.InvalidRequest("user_ref is required: a string of 1-256 characters.")
        payload = open_token(self._key, RESULT_PURPOSE, body.get("result"))
        if payload is None or not isinstance(payload.get("g"), str):
            raise errors.InvalidResult()
        grant = self.store.get(payload["g"])
        expired = float(payload.get("exp", 0)) < self.s.clock()
        if grant is None:
            # Purged after its expiry, or never stored (a result signed with our key but never issued).
            raise errors.ResultExpired() if expired else errors.InvalidResult(detail="no such grant")
        if grant.status != "pending":
            raise errors.ResultUsed(detail=f"grant {grant.status}")
        if expired or grant.expires_at < self.s.clock():
            self._discard(grant, "expired")
            raise errors.ResultExpired()
        if user_ref != grant.user_ref:
            self._discard(grant, "claim_mismatch")
            raise errors.ClaimMismatch()
        if not self.store.move(grant, "claimed"):
            raise errors.ResultUsed(detail="claimed concurrently")
        try:
            return self._activate(grant)
        except Exception:
            # Give the backend another go with the same result (its secret is still there).
            self.store.move(self.store.get(grant.grant_id) or grant, "pending")
            raise

    def _discard(self, grant: PendingGrant, why: str) -> None:
        if self.store.move(grant, "discarded"):
            self.s.token_caches.delete(grant.secret_name)
            logger.warning(
                "Pending grant discarded (%s): mailbox of tenant %s was not attached to the link's user",
                why,
                grant.tenant_id,
            )

    def _activate(self, grant: PendingGrant) -> Connection:
        """Create or update the connection of (user_ref, mailbox); a connection never changes user_ref."""
        s = self.s
        now = s.clock()
        conn = None
        if grant.reconnect_id:
            conn = s.connections.find(grant.reconnect_id)
            if conn is not None and (
                conn.user_ref != grant.user_ref
                or conn.tenant_id != grant.tenant_id
                or conn.object_id != grant.object_id
            ):
                conn = None  # checked at the callback already; never re-home on a mismatch
        conn = conn or s.connections.for_user_and_mailbox(grant.user_ref, grant.tenant_id, grant.object_id)
        others = [c for c in s.connections.for_user(grant.user_ref) if c.status == "connected"]
        if conn is None:
            conn = Connection(
                connection_id=connection_id_for(grant.tenant_id, grant.object_id, grant.user_ref),
                user_ref=grant.user_ref,
                tenant_id=grant.tenant_id,
                object_id=grant.object_id,
                mailbox=grant.mailbox,
                created_at=now,
                is_default=not others,
            )
        elif conn.status == "disconnected":
            conn.secret_generation += 1  # a new name and a new data key; the old generation is erased below
            conn.is_default = not any(c.connection_id != conn.connection_id for c in others)
        old_secret = conn.secret_name
        cache_text = s.token_caches.read(grant.secret_name)
        if cache_text is None:
            raise errors.TemporarilyUnavailable(detail="the pending token cache is missing")
        with s.locks.hold(conn.connection_id):
            # Under the connection's lock, so a refresh elsewhere cannot write an older cache over this one.
            conn.secret_name, conn.secret_generation = s.token_caches.write_new_name(
                conn.connection_id, conn.secret_generation, cache_text
            )
            conn.secret_writes = 1
            conn.mailbox = grant.mailbox or conn.mailbox
            conn.display_name = grant.display_name or conn.display_name
            conn.scopes = grant.scopes
            conn.status = "connected"
            conn.last_error_code = conn.last_error_message = conn.last_error_reason = None
            conn.clear_mailbox_state()  # the way back from a mailbox state (shared/send/mailbox_state.py)
            conn.last_refreshed_at = now
            s.connections.set_refresh_due(conn, now + s.settings.refresh_after_days * 86400)
            s.connections.save(conn)
            s.tokens.forget(conn.connection_id)
        s.token_caches.delete(grant.secret_name)
        if old_secret and old_secret != conn.secret_name:
            s.token_caches.delete(old_secret)
        logger.info("Connection %s connected (tenant %s)", conn.connection_id, conn.tenant_id)
        return conn

    # housekeeping -----------------------------------------------------------------------------------
    def purge(self, now: float | None = None, limit: int = 500) -> int:
        """Delete expired grant rows; unclaimed ones lose their Key Vault secret first. Returns how many."""
        count = 0
        for partition, status, secret_name in self.store.expired(self.s.clock() if now is None else now, limit):
            if status == "pending" and secret_name:
                self.s.token_caches.delete(secret_name)
            self.store.delete_row(partition)
            count += 1
        return count
