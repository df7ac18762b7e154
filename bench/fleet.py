"""Several Mailbridge instances as separate devhost processes on one storage account (the way Flex
Consumption scales the queue function out), for tests/test_scaleout.py and bench B6.

Each instance is ``python -m bench.fleet_host`` (devhost's own ``main``, plus a count of the Storage HTTP
requests the process makes and its CPU time, written to a JSON file when it stops) in its own process
group and work directory. ``kill(i)`` SIGKILLs one (no stats from that life), ``start(i)`` brings it back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.devhost_process import DevhostProcess, DevhostTimings, devhost_settings


@dataclass
class Fleet:
    kit: Any  # tests.fixtures.sender.SendKit: the app settings every instance runs with
    workdir: Path
    size: int = 3
    app_settings: dict[str, str] = field(default_factory=dict)
    timers_on_first_only: bool = False  # devhost models the timer singleton (devhost/timers.py) itself
    hosts: list[DevhostProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        settings = self.workdir / "local.settings.json"
        settings.write_text(json.dumps(devhost_settings(self.kit, self.app_settings), indent=2))
        env = {**os.environ, **self.kit.mb.env, **self.app_settings}
        timings = DevhostTimings(start_timeout_s=90.0)
        for i in range(self.size):
            home = self.workdir / f"instance-{i}"
            home.mkdir(exist_ok=True)
            args = ("--no-timers",) if (self.timers_on_first_only and i) else ()
            host = DevhostProcess(settings, home, timings, {**env, "FLEET_STATS_DIR": str(home)}, args)
            host.module = "bench.fleet_host"
            self.hosts.append(host)

    def start(self, i: int | None = None) -> None:
        for host in self.hosts if i is None else [self.hosts[i]]:
            host.start()

    def kill(self, i: int) -> None:
        self.hosts[i].kill()

    def stop(self) -> None:
        for host in self.hosts:
            host.stop()

    def stats(self) -> dict[str, float]:
        """Storage requests and CPU seconds of every instance life that ended gracefully, summed."""
        total = {"storage_calls": 0.0, "cpu_s": 0.0, "budget_calls": 0.0, "lives": 0.0}
        for host in self.hosts:
            for path in sorted(host.workdir.glob("stats-*.json")):
                data = json.loads(path.read_text())
                for key in ("storage_calls", "cpu_s", "budget_calls"):
                    total[key] += data.get(key, 0)
                total["lives"] += 1
        return total

    def count_in_logs(self, text: str) -> int:
        return sum(host.count_in_logs(text) for host in self.hosts)
