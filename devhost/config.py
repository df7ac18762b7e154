"""host.json and local.settings.json, read the way the Functions host reads them."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?$")


def parse_timespan(value: str | None, default: float) -> float:
    """Seconds in a .NET TimeSpan string like ``00:00:30`` or ``1.00:00:00``."""
    if value is None:
        return default
    match = _TIMESPAN.match(str(value).strip())
    if not match:
        raise ValueError(f"not a TimeSpan (d.hh:mm:ss): {value!r}")
    days, hours, minutes, seconds, frac = match.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (float(f"0.{frac}") if frac else 0.0)


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues`` of host.json, with the host's documented defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"


@dataclass(frozen=True)
class HostConfig:
    """The parts of host.json the dev host honours."""

    route_prefix: str = "api"
    queues: QueueOptions = QueueOptions()
    function_timeout: float = 600.0

    @classmethod
    def load(cls, path: Path) -> HostConfig:
        data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        if data.get("version") not in (None, "2.0"):
            raise ValueError(f"{path}: host.json version must be 2.0")
        ext = data.get("extensions", {})
        q = ext.get("queues", {})
        batch = int(q.get("batchSize", 16))
        if not 1 <= batch <= 32:
            raise ValueError("host.json extensions.queues.batchSize must be 1..32")
        encoding = str(q.get("messageEncoding", "base64")).lower()
        if encoding not in {"base64", "none"}:
            raise ValueError("host.json extensions.queues.messageEncoding must be base64 or none")
        queues = QueueOptions(
            batch_size=batch,
            new_batch_threshold=int(q.get("newBatchThreshold", batch // 2)),
            max_polling_interval=parse_timespan(q.get("maxPollingInterval"), 60.0),
            visibility_timeout=parse_timespan(q.get("visibilityTimeout"), 0.0),
            max_dequeue_count=int(q.get("maxDequeueCount", 5)),
            message_encoding=encoding,
        )
        prefix = ext.get("http", {}).get("routePrefix", "api").strip("/")
        return cls(
            route_prefix=prefix,
            queues=queues,
            function_timeout=parse_timespan(data.get("functionTimeout"), 600.0),
        )


@dataclass(frozen=True)
class LocalSettings:
    """local.settings.json: ``Values`` become environment variables, ``Host.LocalHttpPort`` the port."""

    values: dict[str, str]
    http_port: int
    path: Path | None

    @classmethod
    def load(cls, app_dir: Path, explicit: Path | None = None) -> LocalSettings:
        """Read ``explicit``, else local.settings.json, else local.settings.sample.json (like a fresh clone)."""
        defaults = [app_dir / "local.settings.json", app_dir / "local.settings.sample.json"]
        candidates = [explicit] if explicit else defaults
        for path in candidates:
            if path and path.exists():
                data = json.loads(path.read_text())
                values = {str(k): "" if v is None else str(v) for k, v in data.get("Values", {}).items()}
                port = int(data.get("Host", {}).get("LocalHttpPort", 7071))
                return cls(values=values, http_port=port, path=path)
        return cls(values={}, http_port=7071, path=None)

    def apply(self, environ: dict[str, str] | None = None) -> None:
        """Export the values; variables already in the environment win, so a shell or test can override."""
        env = os.environ if environ is None else environ
        for key, value in self.values.items():
            env.setdefault(key, value)


def resolve_setting_refs(value: str, environ: dict[str, str] | None = None) -> str:
    """Replace ``%NAME%`` binding expressions by app settings, as the host does for schedules and queue names."""
    env = os.environ if environ is None else environ

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise KeyError(f"binding expression %{name}% names an app setting that is not set")
        return env[name]

    return re.sub(r"%([A-Za-z0-9_.:-]+)%", repl, value)
