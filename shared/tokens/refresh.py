"""Keep-alive: refresh connections before the 90-day refresh-token inactivity expiry (DESIGN flow 6).

The sweep reads only the ``refresh-due`` index (no Key Vault scan), force-refreshes each due
connection through the one locked refresh path (shared/tokens/tokens.py), and is bounded: a time budget
below the host's function timeout, a concurrency cap, and backoff on throttling. What it does not
finish stays due in the index, so the next run resumes where this one stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from shared.base.errors import AppCredentialFailed, MailbridgeError, NotFound, ReauthRequired, TransientError
from shared.base.events import emit_event
from shared.base.telemetry import log_outcome
from shared.tokens.store import Connection, ConnectionStore

if TYPE_CHECKING:
    from shared.base.settings import Settings
    from shared.base.storage import StorageClients
    from shared.tokens.tokens import TokenService

logger = logging.getLogger(__name__)


class KeepAliveServices(Protocol):
    """What the sweep uses of the composition root (shared.services.Services provides it)."""

    settings: Settings
    storage: StorageClients
    connections: ConnectionStore
    tokens: TokenService
    clock: Callable[[], float]


@dataclass
class SweepReport:
    """What one sweep did; logged at the end and returned to the trigger."""

    due_seen: int = 0
    refreshed: int = 0
    skipped: int = 0
    reauth_required: int = 0
    transient_failures: int = 0
    stopped_early: bool = False
    app_credential_failed: bool = False  # Entra refused the app's own credential: the rest waits for the fix
    reauth_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "reauth_ids"}


class KeepAlive:
    """``KeepAlive(services).sweep()``: refresh every connection whose refresh token is about to go idle."""

    def __init__(self, services: KeepAliveServices, *, concurrency: int = 4, page_size: int = 200) -> None:
        self.s = services
        self.concurrency = concurrency
        self.page_size = page_size
        self._backoff_lock = threading.Lock()
        self._pause_until = 0.0

    def sweep(self, budget_seconds: float = 480.0, max_connections: int | None = None) -> SweepReport:
        """Refresh due connections until done, ``budget_seconds`` elapse, or ``max_connections`` are handled."""
        report = SweepReport()
        deadline = time.monotonic() + budget_seconds
        now = self.s.clock()
        after = ""

        def out_of_budget() -> bool:
            # A refused app credential fails every connection alike: stop spending Key Vault reads and token
            # calls on them; all stay due and the next run (after the operator's fix) refreshes them.
            return (
                time.monotonic() > deadline
                or report.app_credential_failed
                or (max_connections is not None and report.due_seen >= max_connections)
            )

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="keepalive") as pool:
            pending: set[Future] = set()
            while True:
                if out_of_budget():
                    report.stopped_early = True
                    break
                page = self.s.connections.due_for_refresh(now, self.page_size, after_key=after)
                if not page:
                    break
                for key, connection_id in page:
                    after = key
                    if out_of_budget():
                        report.stopped_early = True
                        break
                    while len(pending) >= self.concurrency:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    if report.app_credential_failed:  # learnt while waiting for a free worker
                        report.stopped_early = True
                        break
                    report.due_seen += 1
                    self._respect_backoff(deadline)
                    pending.add(pool.submit(self._refresh_one, key, connection_id, now, report))
                if report.stopped_early:
                    break
                logger.info("Keep-alive progress: %d due seen, %d refreshed", report.due_seen, report.refreshed)
            wait(pending)
        logger.info(
            "Keep-alive sweep: %d due, %d refreshed, %d skipped, %d reauth_required, %d transient failures%s",
            report.due_seen,
            report.refreshed,
            report.skipped,
            report.reauth_required,
            report.transient_failures,
            " (stopped at the time budget; the rest stays due for the next run)" if report.stopped_early else "",
        )
        return report

    def _respect_backoff(self, deadline: float) -> None:
        with self._backoff_lock:
            pause = self._pause_until - time.monotonic()
        if pause > 0:
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))

    def _back_off(self, seconds: float) -> None:
        with self._backoff_lock:
            self._pause_until = max(self._pause_until, time.monotonic() + seconds)

    def _refresh_one(self, key: str, connection_id: str, now: float, report: SweepReport) -> None:
        threshold = self.s.settings.refresh_after_days * 86400
        started = time.monotonic()

        def outcome(status: str, code: str | None = None) -> None:
            elapsed_ms = (time.monotonic() - started) * 1000
            log_outcome("refresh", status, code=code, connection_id=connection_id, duration_ms=elapsed_ms)

        # The row is read once, under the lease (refresh_if_due); the rare reauth event reads it again.
        try:
            done = self.s.tokens.refresh_if_due(connection_id, now - threshold)
            if isinstance(done, Connection):
                # Disconnected, already marked, or refreshed by a send since the index row was written.
                self.s.connections.drop_due_key(key)
                if done.status == "connected":
                    self.s.connections.set_refresh_due(done, done.last_refreshed_at + threshold)
                    self.s.connections.save(done, index=False)
                report.skipped += 1
                return
            report.refreshed += 1
            outcome("refreshed")
        except NotFound:
            self.s.connections.drop_due_key(key)
            return
        except ReauthRequired as exc:
            report.reauth_required += 1
            outcome("reauth_required", exc.code)
            report.reauth_ids.append(connection_id)
            try:
                emit_event(
                    self.s.settings,
                    self.s.storage,
                    "connection.reauth_required",
                    {
                        "connection_id": connection_id,
                        "user_ref": getattr(self.s.connections.find(connection_id), "user_ref", None),
                        "reason": exc.extra.get("reason") or exc.code,
                        "detail": exc.detail,
                    },
                )
            except Exception:  # the connection is already marked; a lost event must not stop the sweep
                logger.exception("Keep-alive: could not emit reauth event for %s", connection_id)
        except AppCredentialFailed as exc:
            report.transient_failures += 1
            report.app_credential_failed = True
            outcome("transient_failure", exc.code)
            logger.warning("Keep-alive: the app's credential was refused (%s); sweep stopped, all stay due", exc.detail)
        except TransientError as exc:
            report.transient_failures += 1
            outcome("transient_failure", exc.code)
            self._back_off(getattr(exc, "retry_after", 2.0))
            logger.warning(
                "Keep-alive: connection %s transient failure (%s); retried next run", connection_id, exc.code
            )
        except MailbridgeError as exc:
            report.transient_failures += 1
            outcome("failed", exc.code)
            logger.warning("Keep-alive: connection %s failed (%s); retried next run", connection_id, exc.code)
        except Exception:
            # One broken connection must not stop the sweep; it stays due and is retried next run.
            report.transient_failures += 1
            outcome("failed", "internal_error")
            logger.exception("Keep-alive: connection %s failed unexpectedly; retried next run", connection_id)
