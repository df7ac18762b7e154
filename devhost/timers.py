"""Timer triggers: six-field NCRONTAB schedules in UTC (``{second} {minute} {hour} {day} {month} {dow}``).

Like the Functions host, a timer function runs on one instance at a time however many run the app: the
instance holding a Blob lease on ``azure-webjobs-hosts/locks/<host id>/<function>`` (AzureWebJobsStorage;
host id ``AzureFunctionsWebHost__hostid``, default ``devhost``)
fires it and renews the lease at every occurrence; the others skip. A holder that dies loses the lease when
it expires (LOCK_SECONDS) and another instance takes over. A manual run (``POST /admin/functions/{name}``)
runs where it is asked, as on the host.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobClient, ContainerClient
from croniter import croniter

from devhost.config import parse_timespan, resolve_setting_refs
from devhost.functions import FunctionSpec

logger = logging.getLogger(__name__)

LOCK_CONTAINER = "azure-webjobs-hosts"
LOCK_SECONDS = 60  # Blob leases are 15-60 s


def ncrontab_to_croniter(expr: str) -> str:
    """NCRONTAB puts seconds first; croniter takes them as an optional sixth field at the end."""
    fields = expr.split()
    if len(fields) != 6:
        raise ValueError(f"NCRONTAB needs six fields (sec min hour day month dow): {expr!r}")
    second, rest = fields[0], fields[1:]
    converted = " ".join([*rest, second])
    if not croniter.is_valid(converted):
        raise ValueError(f"invalid NCRONTAB expression: {expr!r}")
    return converted


class TimerRunner:
    """Fires one timer function on its schedule (and once at start when ``runOnStartup``)."""

    def __init__(self, spec: FunctionSpec, environ: dict[str, str]) -> None:
        self.spec = spec
        self.schedule = resolve_setting_refs(str(spec.trigger["schedule"]), environ)
        self.run_on_startup = bool(spec.trigger.get("runOnStartup"))
        self._interval: float | None = None
        if ":" in self.schedule and len(self.schedule.split()) == 1:
            self._interval = parse_timespan(self.schedule, 0)  # TimeSpan schedules (Dedicated plans)
        else:
            self._cron = ncrontab_to_croniter(self.schedule)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"devhost-timer-{spec.name}", daemon=True)
        self.fired = 0
        self.skipped = 0  # occurrences another instance ran (it holds the singleton lock)
        conn = environ.get("AzureWebJobsStorage")
        host_id = environ.get("AzureFunctionsWebHost__hostid") or "devhost"  # instances of one app share it
        self._container = ContainerClient.from_connection_string(conn, LOCK_CONTAINER) if conn else None
        self._lock_blob = self._container.get_blob_client(f"locks/{host_id}/{spec.name}") if self._container else None
        self._lease = None

    def next_after(self, moment: datetime) -> datetime:
        """The next occurrence strictly after ``moment`` (UTC)."""
        if self._interval is not None:
            return datetime.fromtimestamp(moment.timestamp() + self._interval, UTC)
        return croniter(self._cron, moment).get_next(datetime)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._lease is not None:
            try:
                self._lease.release()
            except HttpResponseError:
                pass

    def holds_lock(self) -> bool:
        """Renew the singleton lease if this instance has it, else try to take it (False: another has it)."""
        if self._lock_blob is None:
            return True
        if self._lease is not None:
            try:
                self._lease.renew()
                return True
            except HttpResponseError:
                self._lease = None  # expired and taken by another instance
        for _ in range(2):
            try:
                self._lease = self._lock_blob.acquire_lease(lease_duration=LOCK_SECONDS)
                return True
            except ResourceNotFoundError:
                _create_lock_blob(self._container, self._lock_blob)
            except HttpResponseError as exc:
                if exc.status_code == 409:  # LeaseAlreadyPresent
                    return False
                raise
        return False

    def fire(self, past_due: bool = False, manual: bool = False) -> None:
        """Run the function once now (a scheduled run only on the lock holder); failures are logged, as the
        host does, and the schedule goes on."""
        try:
            if not manual and not self.holds_lock():
                self.skipped += 1
                return
        except Exception:  # storage briefly unreachable: skip this occurrence, like a lost lock
            logger.warning("Timer %s: singleton lock unavailable; occurrence skipped", self.spec.name, exc_info=True)
            return
        self.fired += 1
        try:
            self.spec.invoke(TimerRequest(past_due=past_due))
        except Exception:
            logger.exception("Timer function %s failed", self.spec.name)

    def _run(self) -> None:
        if self.run_on_startup:
            self.fire()
        due = self.next_after(datetime.now(UTC))
        while not self._stop.is_set():
            wait = (due - datetime.now(UTC)).total_seconds()
            if wait > 0 and self._stop.wait(min(wait, 1.0)):
                break
            if wait > 0:
                continue
            past_due = wait < -5
            self.fire(past_due=past_due)
            due = self.next_after(datetime.now(UTC))


def _create_lock_blob(container: ContainerClient, blob: BlobClient) -> None:
    try:
        container.create_container()
    except ResourceExistsError:
        pass
    try:
        blob.upload_blob(b"", overwrite=False)
    except ResourceExistsError:
        pass
