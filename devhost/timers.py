"""Timer triggers: six-field NCRONTAB schedules in UTC (``{second} {minute} {hour} {day} {month} {dow}``)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from azure.functions.timer import TimerRequest
from croniter import croniter

from devhost.config import parse_timespan, resolve_setting_refs
from devhost.functions import FunctionSpec

logger = logging.getLogger(__name__)


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

    def fire(self, past_due: bool = False) -> None:
        """Run the function once now; failures are logged, as the host does, and the schedule goes on."""
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
