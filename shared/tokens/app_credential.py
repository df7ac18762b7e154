"""Is Microsoft Entra accepting Mailbridge's own credential? Shared by every instance through one Table row.

A refused app credential (secret wrong or expired, federated credential mismatch: ``entra_errors.classify``
says ``operator``) is the operator's to fix, not the users'. Each failure logs an error line; the first one of
an episode (across all instances: an ETag-guarded change of the row) publishes ``mailbridge.app.credential_failed``;
``GET /api/health`` reports the row until a refresh succeeds again. Writes happen on failure (at most once a
minute per instance) and on the first success after one; a success reads the row at most once a minute per
instance, so the steady state costs nothing.

Row: table ``connections``, PartitionKey ``app-credential``, RowKey ``status`` (connection ids start with ``c``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import msal
from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.base.errors import AppCredentialFailed
from shared.base.identity import MsalFactory
from shared.base.settings import CONNECTIONS_TABLE, Settings
from shared.base.storage import StorageClients
from shared.tokens.entra_errors import TOKEN_ENDPOINT_OUTAGES, classify

logger = logging.getLogger(__name__)

PARTITION, ROW = "app-credential", "status"
RECHECK_SECONDS = 60.0  # how stale one instance's knowledge of the shared row may get
HEALTH_CACHE_SECONDS = 10.0  # GET /api/health is anonymous: at most one Table read per instance per 10 s

WHAT_TO_DO = (
    "Operator: fix the app registration's credential (ENTRA_CLIENT_ID and a valid client secret, or the "
    "federated identity credential of the managed identity: issuer, subject, audience api://AzureADTokenExchange). "
    "Connections stay connected; messages wait and are retried."
)


class AppCredentialHealth:
    """``failed(err)`` / ``succeeded()`` from the refresh path; ``status()`` for the health endpoint."""

    def __init__(self, settings: Settings, clients: StorageClients) -> None:
        self.settings = settings
        self.clients = clients
        self._lock = threading.Lock()
        self._failing = False  # what this instance last learnt
        self._looked_at = float("-inf")  # when this instance last wrote or read the row
        self._status: tuple[float, dict[str, Any]] | None = None

    @property
    def _table(self):
        return self.clients.table(CONNECTIONS_TABLE)

    def _due(self, failing: bool) -> bool:
        """Whether to touch the row now (and note that we do)."""
        now = time.monotonic()
        with self._lock:
            if self._failing == failing and now - self._looked_at < RECHECK_SECONDS:
                return False
            self._looked_at = now
            self._failing = failing
            self._status = None  # the health view must not show what this instance just changed
            return True

    def failed(self, err: AppCredentialFailed) -> None:
        """Log the failure; record it in the shared row (first of an episode: also publish the event)."""
        logger.error("Microsoft Entra refused the app's credential (%s). %s", err.detail, WHAT_TO_DO)
        if not self._due(failing=True):
            return
        try:
            self._record_failure(err)
        except AzureError:
            logger.warning("Could not record the app credential failure in Storage", exc_info=True)

    def _record_failure(self, err: AppCredentialFailed) -> None:
        now = time.time()
        row = self._read()
        fields = {"failing": True, "code": err.code, "reason": err.detail or "", "last_failed_at": now}
        if row is not None and row.get("failing"):
            self._table.upsert_entity({"PartitionKey": PARTITION, "RowKey": ROW, **_kept(row), **fields})
            return
        entity = {"PartitionKey": PARTITION, "RowKey": ROW, **fields, "since": now}
        try:
            # Only the instance that turns the row from "ok" to "failing" announces the episode.
            if row is None:
                self._table.create_entity(entity)
            else:
                self._table.update_entity(
                    entity, mode="replace", etag=row.metadata["etag"], match_condition=MatchConditions.IfNotModified
                )
        except (ResourceExistsError, ResourceModifiedError):
            return  # another instance recorded it first and announced it
        self._announce(err, now)

    def _announce(self, err: AppCredentialFailed, since: float) -> None:
        from shared.base.events import EventPublisher, build_event

        data = {"code": err.code, "reason": err.detail, "message": err.message, "what_to_do": WHAT_TO_DO}
        event = build_event("app.credential_failed", {**data, "since": _iso(since)}, "app/credential")
        EventPublisher(self.settings, self.clients).publish(event)

    def succeeded(self) -> None:
        """A refresh just redeemed a refresh token: the credential works. Clears the shared row if it says failing."""
        if not self._due(failing=False):
            return
        try:
            row = self._read()
            if row is None or not row.get("failing"):
                return
            entity = {
                "PartitionKey": PARTITION,
                "RowKey": ROW,
                **_kept(row),
                "failing": False,
                "recovered_at": time.time(),
            }
            self._table.update_entity(
                entity, mode="replace", etag=row.metadata["etag"], match_condition=MatchConditions.IfNotModified
            )
            logger.info("Microsoft Entra accepts the app's credential again (it failed since %s)", row.get("since"))
        except ResourceModifiedError:
            pass  # someone wrote in between: the next check (a minute on) looks again
        except AzureError:
            logger.warning("Could not clear the app credential failure in Storage", exc_info=True)

    def status(self) -> dict[str, Any]:
        """What GET /api/health shows: ``{"ok": True}`` or the failure (code, reason, since, what to do)."""
        now = time.monotonic()
        with self._lock:
            if self._status and now - self._status[0] < HEALTH_CACHE_SECONDS:
                return self._status[1]
        try:
            # No retries and no create-on-first-use: the health check answers fast when Storage is down.
            table = self.clients.tables.get_table_client(self.settings.table_prefix + CONNECTIONS_TABLE)
            row = self._read(table, retry_total=0)
        except AzureError as exc:
            return {"ok": None, "detail": f"storage unreachable ({type(exc).__name__})"}
        if row is None or not row.get("failing"):
            view: dict[str, Any] = {"ok": True}
        else:
            view = {
                "ok": False,
                "code": row.get("code"),
                "reason": row.get("reason"),
                "since": _iso(row.get("since")),
                "last_failed_at": _iso(row.get("last_failed_at")),
                "what_to_do": WHAT_TO_DO,
            }
        with self._lock:
            self._status = (now, view)
        return view

    def _read(self, table: Any = None, **kwargs: Any):
        try:
            return (table or self._table).get_entity(PARTITION, ROW, **kwargs)
        except ResourceNotFoundError:  # no row (never failed), or no table yet
            return None


def _kept(row: Any) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("PartitionKey", "RowKey")}


def _iso(ts: Any) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(ts))) if ts else None


class AppCredentialProbe:
    """Does Entra give the app a token in its *home* tenant right now? ``works()`` -> True, False, or None (no home
    tenant configured, or the answer was an outage).

    One user's refused refresh must not decide that the operator's credential is broken (issue 25): a customer
    tenant that deletes or disables the app's enterprise application refuses that tenant's refreshes only, with
    the very AADSTS700016 the app's own tenant would send if the registration were gone. So before such a refusal
    (or one nobody recognises) turns health to 503 and stops the keep-alive, the token service asks this: a
    client-credentials request to ENTRA_HOME_TENANT with a fresh token cache and a fresh MSAL HTTP cache (MSAL
    replays a remembered 400 and serves cached app tokens: neither proves anything now). One request per
    RECHECK_SECONDS per instance at most, and only while refusals happen; concurrent callers wait for the one.
    """

    def __init__(self, settings: Settings, msal_factory: MsalFactory) -> None:
        self.settings = settings
        self.msal = msal_factory
        self._lock = threading.Lock()
        self._known: tuple[float, bool | None] | None = None

    def works(self) -> bool | None:
        home = self.settings.entra_home_tenant
        if not home:
            return None
        with self._lock:
            if self._known and time.monotonic() - self._known[0] < RECHECK_SECONDS:
                return self._known[1]
            verdict = self._ask(home)
            self._known = (time.monotonic(), verdict)
        logger.info("App credential check in the home tenant: %s", {True: "works", False: "refused"}.get(verdict, "?"))
        return verdict

    def _ask(self, home: str) -> bool | None:
        app = self.msal.app(
            token_cache=msal.TokenCache(), authority=f"{self.settings.authority_host}/{home}", http_cache={}
        )
        try:
            result = app.acquire_token_for_client([f"{self.settings.cloud.graph_resource}/.default"])
        except TOKEN_ENDPOINT_OUTAGES:
            return None
        if result and "access_token" in result:
            return True
        return None if classify(result or {}) == "transient" else False
