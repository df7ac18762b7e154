"""The dev host: index function_app.py, then run its HTTP, queue and timer triggers together."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from devhost.config import HostConfig, LocalSettings
from devhost.functions import FunctionSpec, index_functions, load_app
from devhost.http_server import HttpFront, serve
from devhost.queues import QueueListener
from devhost.timers import TimerRunner

logger = logging.getLogger(__name__)


@dataclass
class DevHost:
    """One running app. ``start()`` returns once every trigger listens; ``stop()`` drains and stops."""

    app_dir: Path
    port: int | None = None
    bind: str = "127.0.0.1"
    settings_file: Path | None = None
    enable_http: bool = True
    enable_queues: bool = True
    enable_timers: bool = True
    functions: list[FunctionSpec] = field(default_factory=list)
    queues: list[QueueListener] = field(default_factory=list)
    timers: list[TimerRunner] = field(default_factory=list)

    def start(self) -> str:
        """Load settings and the app, start every trigger; returns the base URL."""
        local = LocalSettings.load(self.app_dir, self.settings_file)
        local.apply()
        self.config = HostConfig.load(self.app_dir / "host.json")
        app = load_app(self.app_dir)
        self.functions = index_functions(app)
        env = dict(os.environ)
        front = HttpFront(
            self.functions,
            route_prefix=self.config.route_prefix,
            function_keys=env.get("DEVHOST_FUNCTION_KEYS", "").split(","),
            master_key=env.get("DEVHOST_MASTER_KEY", ""),
            admin_invoke=self.invoke_by_name,
        )
        port = local.http_port if self.port is None else self.port
        self.base_url = ""
        if self.enable_http:
            self.http_server, _ = serve(front, self.bind, port)
            self.base_url = f"http://{self.bind}:{self.http_server.server_address[1]}"
        for spec in self.functions:
            if spec.trigger_type == "queueTrigger" and self.enable_queues:
                spec.message_encoding = self.config.queues.message_encoding  # queue outputs as the trigger reads
                listener = QueueListener(spec, self.config.queues, env)
                listener.start()
                self.queues.append(listener)
            elif spec.trigger_type == "timerTrigger" and self.enable_timers:
                runner = TimerRunner(spec, env)
                runner.start()
                self.timers.append(runner)
        names = ", ".join(f"{s.name} ({s.trigger_type})" for s in self.functions)
        logger.info("devhost: %d functions: %s", len(self.functions), names)
        return self.base_url

    def invoke_by_name(self, name: str, body: bytes) -> bool:
        """Run a timer function now (the host's admin endpoint); False when no such non-HTTP function."""
        for runner in self.timers:
            if runner.spec.name.lower() == name.lower():
                threading.Thread(target=runner.fire, kwargs={"manual": True}, daemon=True).start()
                return True
        return False

    def stop(self) -> None:
        for runner in self.timers:
            runner.stop()
        for listener in self.queues:
            listener.stop()
        if self.enable_http and getattr(self, "http_server", None):
            self.http_server.shutdown()
            self.http_server.server_close()
