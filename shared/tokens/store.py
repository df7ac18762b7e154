"""Table storage for connections, in-flight OAuth flows and tenant approvals.

Table ``connections`` holds three kinds of rows:
- the connection itself: PartitionKey = connection id, RowKey = ``connection``;
- a per-user index row: PartitionKey = ``user-<sha256(user_ref)>``, RowKey = connection id;
- the keep-alive index: PartitionKey = ``refresh-due``, RowKey = ``<due epoch, 12 digits>-<connection id>``,
  so the timer range-queries what is due without scanning connections or Key Vault.
Table ``authflows``: PartitionKey = ``s<sha256(state)>`` (a flow, consumed once with an ETag-matched delete),
``ticket-<id>`` (a used ticket), ``adminconsent-<id>`` (an answered admin-consent state) or
``grant-<sha256(grant id)>`` (a pending grant waiting for its claim, shared/connect/grants.py). Every row carries
``expires_at``; the housekeeping timer purges them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode

from shared.base.errors import ExpiredLink, InvalidState, NotFound
from shared.base.formats import is_safe_key
from shared.base.settings import AUTHFLOWS_TABLE, CONNECTIONS_TABLE
from shared.base.storage import StorageClients

logger = logging.getLogger(__name__)

CONNECTION_ROW = "connection"
REFRESH_PARTITION = "refresh-due"
# How long the sender may act on a connection row this instance read earlier (ConnectionStore.recent): the
# bound within which a disconnect or ``reauth_required`` written by another instance stops this one's sends
# (docs/sending.md "Connection rows"; tests/test_disconnect_bound.py). Writes made by this instance apply at once.
CONNECTION_CACHE_S = 5.0


def connection_id_for(tenant_id: str, object_id: str, user_ref: str | None = None) -> str:
    """Stable connection id for one ``user_ref`` and one mailbox (Entra tenant id + object id, never an email
    address). A connection never changes ``user_ref``: a second user_ref connecting the same mailbox gets its
    own id. Without ``user_ref`` this is the id of connections made before ids were per user_ref (they keep it)."""
    ident = f"{tenant_id.lower()}:{object_id.lower()}"
    if user_ref is not None:
        ident += ":" + hashlib.sha256(user_ref.encode()).hexdigest()
    return "c" + hashlib.sha256(ident.encode()).hexdigest()[:31]


def user_partition(user_ref: str) -> str:
    return "user-" + hashlib.sha256(user_ref.encode()).hexdigest()[:40]


@dataclass
class Connection:
    """A connected mailbox. Timestamps are epoch seconds (UTC)."""

    connection_id: str
    user_ref: str
    tenant_id: str
    object_id: str
    mailbox: str
    display_name: str = ""
    scopes: list[str] = field(default_factory=list)
    status: str = "connected"  # connected | reauth_required | disconnected
    is_default: bool = False
    secret_name: str = ""
    secret_generation: int = 1
    secret_writes: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    last_refreshed_at: float = 0.0  # when the stored refresh token was last redeemed
    last_used_at: float = 0.0  # rows written before the outgoing log gave it (public_view takes the newer)
    last_error_code: str | None = None
    last_error_message: str | None = None
    # Why a reauth_required connection needs the user (app_removed_in_tenant, app_disabled_in_tenant, mfa_required...)
    last_error_reason: str | None = None
    refresh_due_at: float = 0.0
    # Whether the mailbox may send, as Graph last said (shared/send/mailbox_state.py; "" = it sends): shared by
    # every instance, cleared by a reconnect or a successful re-probe.
    mailbox_state: str = ""  # "" | mailbox_unavailable | sending_blocked | mailbox_full | sending_quota
    mailbox_state_code: str = ""  # Graph's error code that put it there
    mailbox_state_since: float = 0.0  # when this episode began
    mailbox_probe_at: float = 0.0  # when one message may next go to Graph as the re-probe
    mailbox_probes: int = 0  # re-probes refused in this episode (the backoff grows with it)
    token_forced_at: float = 0.0  # last refresh forced by a Graph 401 (the per-connection floor, tokens.py)

    def clear_mailbox_state(self) -> None:
        """The mailbox sends again (a reconnect, or a re-probe Graph accepted)."""
        self.mailbox_state = self.mailbox_state_code = ""
        self.mailbox_state_since = self.mailbox_probe_at = 0.0
        self.mailbox_probes = 0

    def to_entity(self) -> dict[str, Any]:
        data = asdict(self)
        data["scopes"] = json.dumps(self.scopes)
        data = {k: v for k, v in data.items() if v is not None}
        return {"PartitionKey": self.connection_id, "RowKey": CONNECTION_ROW, **data}

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> Connection:
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in entity.items() if k in known}
        data["scopes"] = json.loads(entity.get("scopes") or "[]")
        return cls(**data)

    def public_view(
        self, last_used_at: float | None = None, features_missing: list[str] | None = None
    ) -> dict[str, Any]:
        """What the status API shows: no secret names, no internal counters. ``last_used_at``: when the
        connection last took a message (DeliveryStore.last_logged_at), if the caller looked it up;
        ``features_missing``: configured features this grant lacks (tokens/scopes.py missing_features)."""
        return {
            "connection_id": self.connection_id,
            "user_ref": self.user_ref,
            "tenant_id": self.tenant_id,
            "mailbox": self.mailbox,
            "display_name": self.display_name,
            "scopes": self.scopes,
            "status": self.status,
            "is_default": self.is_default,
            "created_at": _iso(self.created_at),
            "last_refreshed_at": _iso(self.last_refreshed_at),
            "last_used_at": _iso(max(self.last_used_at, last_used_at or 0.0)),
            "last_error": (
                {"code": self.last_error_code, "reason": self.last_error_reason, "message": self.last_error_message}
                if self.last_error_code
                else None
            ),
            "mailbox_state": (
                {
                    "state": self.mailbox_state,
                    "graph_code": self.mailbox_state_code or None,
                    "since": _iso(self.mailbox_state_since),
                    "next_check_at": _iso(self.mailbox_probe_at),
                }
                if self.mailbox_state
                else None
            ),
            "features_missing": features_missing or [],
        }


def _iso(ts: float) -> str | None:
    if not ts:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class ConnectionStore:
    """Connections and their indexes in the ``connections`` table."""

    def __init__(self, clients: StorageClients) -> None:
        self.clients = clients
        self._recent: dict[str, tuple[float, Connection]] = {}  # id -> (monotonic time read, row)
        self._recent_lock = threading.Lock()

    @property
    def table(self):
        return self.clients.table(CONNECTIONS_TABLE)

    def recent(self, connection_id: str, max_age_s: float | None = None) -> Connection | None:
        """The connection as this instance read (or wrote) it at most ``max_age_s`` (CONNECTION_CACHE_S) ago,
        else read now. For the send path only, where one read per connection every few seconds replaces one
        read per email; status and API routes read the row itself. A missing row is not remembered."""
        max_age = CONNECTION_CACHE_S if max_age_s is None else max_age_s
        now = time.monotonic()
        with self._recent_lock:
            hit = self._recent.get(connection_id)
        if hit is not None and now - hit[0] < max_age:
            return hit[1]
        conn = self.find(connection_id)
        with self._recent_lock:
            if conn is None:
                self._recent.pop(connection_id, None)
            else:
                self._recent[connection_id] = (now, conn)
                if len(self._recent) > 10_000:  # bounded: drop the oldest reads
                    for key, _ in sorted(self._recent.items(), key=lambda kv: kv[1][0])[:1000]:
                        self._recent.pop(key, None)
        return conn

    def _remember(self, conn: Connection) -> None:
        """A row this instance just wrote is what its sends must see at once (a local disconnect or reauth)."""
        with self._recent_lock:
            if conn.connection_id in self._recent:
                self._recent[conn.connection_id] = (time.monotonic(), conn)

    def get(self, connection_id: str, *, user_ref: str | None = None) -> Connection:
        """The connection; NotFound when there is none, or when ``user_ref`` is given and is not the one the
        connection belongs to (the same answer, so a caller cannot learn that another user's id exists)."""
        if not is_safe_key(connection_id):
            raise NotFound("No such connection.")
        try:
            entity = self.table.get_entity(connection_id, CONNECTION_ROW)
        except ResourceNotFoundError:
            raise NotFound(f"No connection {connection_id}.") from None
        conn = Connection.from_entity(entity)
        if user_ref is not None and conn.user_ref != user_ref:
            raise NotFound(f"No connection {connection_id}.")
        conn._etag = entity.metadata.get("etag", "")  # not a field: never stored (save_fields compares it)
        return conn

    def find(self, connection_id: str, *, user_ref: str | None = None) -> Connection | None:
        try:
            return self.get(connection_id, user_ref=user_ref)
        except NotFound:
            return None

    def save(self, conn: Connection, *, index: bool = True) -> None:
        """Upsert the row and keep the per-user index in step. A connection never changes ``user_ref``, so
        updates of an existing connection (refresh, reauth) pass ``index=False``: its index row is there."""
        conn.updated_at = time.time()
        self.table.upsert_entity(conn.to_entity(), mode="replace")
        self._remember(conn)
        if index:
            self.table.upsert_entity({"PartitionKey": user_partition(conn.user_ref), "RowKey": conn.connection_id})

    def save_fields(self, conn: Connection, names: tuple[str, ...]) -> None:
        """Write ``conn`` (read by :meth:`get`) if nobody wrote its row since; else write only the fields ``names`` onto
        the row as it is now. For a writer that owns some fields and must not undo what others changed meanwhile:
        the token refresh owns the refresh fields, while a mailbox state or a forced-refresh mark may be recorded by
        another instance at the same moment (ETag-guarded :meth:`change`), and a blind replace would erase it. One
        request when nothing changed in between, as :meth:`save`."""
        if getattr(conn, "_etag", "") and self._replace_if_unchanged(conn):
            return

        def copy(row: Connection) -> bool:
            for name in names:
                setattr(row, name, getattr(conn, name))
            return True

        self.change(conn.connection_id, copy)

    def _replace_if_unchanged(self, conn: Connection) -> bool:
        """Replace the row ``conn`` was read from (:meth:`get`) if nobody wrote it since; False when someone did."""
        conn.updated_at = time.time()
        entity, unchanged = conn.to_entity(), MatchConditions.IfNotModified
        try:
            meta = self.table.update_entity(entity, mode=UpdateMode.REPLACE, etag=conn._etag, match_condition=unchanged)
        except ResourceModifiedError:
            return False
        conn._etag = (meta or {}).get("etag", "")  # the row as written now
        self._remember(conn)
        return True

    def change(self, connection_id: str, edit: Callable[[Connection], bool], tries: int = 5) -> tuple[Connection, bool]:
        """Read the row, let ``edit`` change it (False: nothing to change) and write it back only if no one wrote it
        in between (ETag); on a conflict read again. Returns the row as read or written and whether this call wrote
        it: of several instances making the same change, exactly one gets True (it emits the event). NotFound when
        there is no such connection."""
        for _ in range(tries):
            conn = self.get(connection_id)
            if not edit(conn):
                self._remember(conn)
                return conn, False
            if self._replace_if_unchanged(conn):
                return conn, True
        return self.get(connection_id), False

    def for_user(self, user_ref: str) -> list[Connection]:
        rows = self.table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": user_partition(user_ref)}, select=["RowKey"]
        )
        found = [self.find(r["RowKey"]) for r in rows]
        return sorted((c for c in found if c and c.user_ref == user_ref), key=lambda c: c.created_at)

    def for_user_and_mailbox(self, user_ref: str, tenant_id: str, object_id: str) -> Connection | None:
        """This user_ref's connection of this mailbox (connected or not), if it ever had one."""
        for conn in self.for_user(user_ref):
            if conn.tenant_id.lower() == tenant_id.lower() and conn.object_id.lower() == object_id.lower():
                return conn
        return None

    # --- keep-alive index -------------------------------------------------------------------------
    def set_refresh_due(self, conn: Connection, due_at: float | None) -> None:
        """Move the connection's keep-alive index row to ``due_at`` (None removes it). A move is one
        entity-group transaction (delete the old row, insert the new one: same partition), one round trip."""
        old = _due_key(conn.refresh_due_at, conn.connection_id) if conn.refresh_due_at else None
        new = _due_key(due_at, conn.connection_id) if due_at else None
        conn.refresh_due_at = due_at or 0.0
        if old and new and old != new:
            try:
                self.table.submit_transaction(
                    [
                        ("delete", {"PartitionKey": REFRESH_PARTITION, "RowKey": old}),
                        ("upsert", {"PartitionKey": REFRESH_PARTITION, "RowKey": new}),
                    ]
                )
                return
            except (TableTransactionError, ResourceNotFoundError):
                pass  # the old row was gone already (a sweep dropped it): do the two steps on their own
        if old and old != new:
            try:
                self.table.delete_entity(REFRESH_PARTITION, old)
            except ResourceNotFoundError:
                pass
        if new:
            self.table.upsert_entity({"PartitionKey": REFRESH_PARTITION, "RowKey": new})

    def due_for_refresh(self, now: float, limit: int, after_key: str = "") -> list[tuple[str, str]]:
        """(index key, connection id) pairs due by ``now``, in due order, starting after ``after_key``."""
        upper = f"{int(now):012d}~"
        rows = self.table.query_entities(
            "PartitionKey eq @pk and RowKey gt @lo and RowKey le @hi",
            parameters={"pk": REFRESH_PARTITION, "lo": after_key, "hi": upper},
            select=["RowKey"],
            results_per_page=min(limit, 1000),
        )
        out: list[tuple[str, str]] = []
        for row in rows:
            out.append((row["RowKey"], row["RowKey"].split("-", 1)[1]))
            if len(out) >= limit:
                break
        return out

    def drop_due_key(self, key: str) -> None:
        try:
            self.table.delete_entity(REFRESH_PARTITION, key)
        except ResourceNotFoundError:
            pass


def _due_key(due_at: float, connection_id: str) -> str:
    return f"{int(due_at):012d}-{connection_id}"


class FlowStore:
    """Server-side OAuth flow state (PKCE verifier, nonce, return URL), single use, 10-minute TTL."""

    TTL_SECONDS = 600

    def __init__(self, clients: StorageClients) -> None:
        self.clients = clients

    @property
    def table(self):
        return self.clients.table(AUTHFLOWS_TABLE)

    def claim_ticket(self, ticket_id: str, expires_at: int) -> None:
        """Record a ticket as used; a second use raises ExpiredLink (replay)."""
        if not self._claim_once("ticket-", ticket_id, expires_at):
            raise ExpiredLink(detail="ticket already used")

    def claim_admin_consent_state(self, state_id: str, expires_at: float) -> None:
        """Record an admin-consent state as answered; a second answer raises InvalidState (replay). The state
        itself is signed, not stored (an anonymous start writes nothing): only an answer that passed its
        signature, expiry and browser checks writes this row, which lives as long as the state could."""
        if not self._claim_once("adminconsent-", state_id, expires_at):
            raise InvalidState(
                "This approval response was already used (each one works once). To check or repeat the approval,"
                " open the admin consent link again.",
                detail="admin-consent state already used",
            )

    def _claim_once(self, prefix: str, one_time_id: str, expires_at: float) -> bool:
        """Insert the "used" row of a one-time id; False when it exists. An insert is atomic in Table storage
        (409 for the second writer), so two instances answering the same id at once cannot both win."""
        try:
            self.table.create_entity(
                {"PartitionKey": prefix + self._key(one_time_id), "RowKey": "used", "expires_at": float(expires_at)}
            )
        except ResourceExistsError:
            return False
        return True

    @staticmethod
    def _key(state: str) -> str:
        # Rows are keyed by a hash of the state: storage request URLs (which libraries log) never carry it.
        return "s" + hashlib.sha256(state.encode()).hexdigest()

    @staticmethod
    def binding_cookie_suffix(state: str) -> str:
        """Short per-flow suffix of the browser-binding cookie's name (two tabs connecting keep two cookies)."""
        return hashlib.sha256(b"cookie:" + state.encode()).hexdigest()[:12]

    def put(self, state: str, kind: str, data: dict[str, Any]) -> None:
        self.table.create_entity(
            {
                "PartitionKey": self._key(state),
                "RowKey": kind,
                "data": json.dumps(data),
                "expires_at": time.time() + self.TTL_SECONDS,
            }
        )

    def consume(
        self, state: str | None, kind: str, check: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """Load and delete the flow for ``state``; a missing, expired or already-used one raises InvalidState.
        ``check`` sees the flow first and may raise: then nothing is consumed (a request from another
        browser cannot burn the flow of the one that started it)."""
        if not isinstance(state, str) or not state or len(state) > 256:
            raise InvalidState(detail="missing state")
        key = self._key(state)
        try:
            entity = self.table.get_entity(key, kind)
        except (ResourceNotFoundError, ValueError):
            raise InvalidState(detail="unknown or used state") from None
        if check is not None:
            check(json.loads(entity["data"]))
        try:
            self.table.delete_entity(
                key, kind, etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified
            )
        except (ResourceNotFoundError, ResourceModifiedError):
            raise InvalidState(detail="state already used") from None
        if float(entity.get("expires_at", 0)) < time.time():
            raise InvalidState(detail="flow expired")
        return json.loads(entity["data"])

    def purge_expired(self, now: float | None = None, limit: int = 1000) -> int:
        """Delete expired flow, used-ticket and answered admin-consent rows (not pending grants: connect/grants.py
        purges those, with their Key Vault secret); returns how many. Called by the housekeeping timer."""
        cutoff = time.time() if now is None else now
        count = 0
        for row in self.table.query_entities(
            "expires_at lt @cutoff and (PartitionKey lt 'grant-' or PartitionKey ge 'grant.')",
            parameters={"cutoff": cutoff},
            select=["PartitionKey", "RowKey"],
        ):
            try:
                self.table.delete_entity(row["PartitionKey"], row["RowKey"])
                count += 1
            except ResourceNotFoundError:
                pass
            if count >= limit:
                break
        return count
