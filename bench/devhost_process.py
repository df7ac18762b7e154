"""devhost as a process of its own: ``python -m <module>`` on a local.settings.json, in its own process group,
started (waiting for its ready file), SIGKILLed as a whole, or stopped gracefully. The crash run
(bench/crash.py), the fleet of instances (bench/fleet.py) and the two-instance tests use it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass
class DevhostTimings:
    """How long to wait for a devhost process to be ready, and the two leases (10 minutes in production)
    shortened for it; see tests/workers/crash_host.py."""

    queue_lease_s: int = 15
    send_lease_s: float = 10.0
    start_timeout_s: float = 60.0


class DevhostProcess:
    """devhost in its own process group: start (wait for the ready file), SIGKILL the group, stop."""

    def __init__(
        self,
        settings: Path,
        workdir: Path,
        timings: DevhostTimings,
        env: dict[str, str],
        args: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.workdir = workdir
        self.timings = timings
        self.env = env
        self.args = list(args)  # more devhost arguments, e.g. --no-timers
        self.module = "tests.workers.crash_host"  # devhost's main with the two leases shortened
        self.proc: subprocess.Popen | None = None
        self.logs: list[Path] = []

    def start(self) -> int:
        n = len(self.logs)
        ready = self.workdir / f"ready-{n}.json"
        log_path = self.workdir / f"devhost-{n}.log"
        self.logs.append(log_path)
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "--app-dir", str(REPO)]
                + ["--settings", str(self.settings), "--port", "0", "--ready-file", str(ready), *self.args],
                cwd=REPO,
                env={
                    **self.env,
                    "PYTHONPATH": str(REPO),
                    "CRASH_QUEUE_LEASE_S": str(self.timings.queue_lease_s),
                    "CRASH_SEND_LEASE_S": str(self.timings.send_lease_s),
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, killed as a whole
            )
        deadline = time.monotonic() + self.timings.start_timeout_s
        while not ready.exists() and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.proc.poll() is not None or not ready.exists():
            self.kill()
            raise RuntimeError(f"devhost did not start:\n{log_path.read_text()[-3000:]}")
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the whole process group: no handler, no cleanup, no drain."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self.proc = None

    def stop(self) -> None:
        """Graceful stop (devhost drains in-flight invocations), SIGKILL if it hangs."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(45)
            self.proc = None
        except (ProcessLookupError, subprocess.TimeoutExpired):
            self.kill()

    def count_in_logs(self, text: str) -> int:
        return sum(p.read_text(errors="replace").count(text) for p in self.logs if p.exists())


def devhost_settings(kit: Any, extra: dict[str, str]) -> dict[str, Any]:
    """The sample's local defaults, then exactly the app settings the in-process kit runs with, then ``extra``."""
    values = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    return {"IsEncrypted": False, "Values": {**values, **kit.mb.env, **extra}}
