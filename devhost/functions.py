"""Load a v2-model function app and call its functions the way the Python worker does."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import inspect
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func

from devhost.config import resolve_setting_refs


class Out(func.Out):
    """The holder the worker passes for an output binding: the function ``set``s a value, the host writes it."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


# Set while a worker thread runs the user's function (not the host's receive, delete, poison handling or output
# binding writes), so that measurements can tell the function's Storage requests and CPU from the host's: in
# Azure the host is another process (bench/harness.py counts with it). The trigger listeners set it around
# their call (devhost/queues.py); writing output bindings clears it meanwhile.
in_function = threading.local()

_queue_clients: dict[tuple[str, str], Any] = {}
_queue_clients_lock = threading.Lock()


def _queue_client(connection: str, name: str) -> Any:
    """One client per (connection, queue), the queue created on first use (the host's output binding creates a
    missing queue too)."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueClient

    with _queue_clients_lock:
        client = _queue_clients.get((connection, name))
        if client is None:
            client = _queue_clients[(connection, name)] = QueueClient.from_connection_string(connection, name)
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
    return client


@dataclass
class FunctionSpec:
    """One indexed function: its name, trigger binding (as function.json would hold it) and Python callable."""

    name: str
    trigger: dict[str, Any]
    bindings: list[dict[str, Any]]
    callable: Any
    params: list[str] = field(default_factory=list)
    message_encoding: str = "none"  # host.json queues.messageEncoding: how queue outputs are written
    # CPU (thread time) spent writing output bindings: the host's work in Azure, inside invoke() here.
    output_cpu_s: float = 0.0
    _output_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def trigger_type(self) -> str:
        return str(self.trigger.get("type"))

    @property
    def queue_outputs(self) -> list[dict[str, Any]]:
        """The function's queue output bindings (function.json ``direction: out``, ``type: queue``)."""
        return [
            b
            for b in self.bindings
            if str(b.get("direction")).lower() == "out" and b.get("type") == "queue" and b.get("name") in self.params
        ]

    def invoke(self, trigger_value: Any) -> Any:
        """Call the function with its trigger argument (and ``context`` when it asks for one); then, as the host
        does once the function has returned (and before the trigger message is completed), write what it set on
        its queue output bindings. A function that raises writes nothing."""
        kwargs: dict[str, Any] = {self.trigger["name"]: trigger_value}
        if "context" in self.params:
            kwargs["context"] = None
        outputs = [(b, Out()) for b in self.queue_outputs]
        kwargs.update({b["name"]: out for b, out in outputs})
        result = self.callable(**kwargs)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        if outputs:
            self._write_outputs(outputs)
        return result

    def _write_outputs(self, outputs: list[tuple[dict[str, Any], Out]]) -> None:
        """Write queue outputs (a str, bytes or QueueMessage, or a list of them: one message each). The requests
        and CPU are the host's, not the function's (``in_function`` is off meanwhile)."""
        cpu = time.thread_time()
        was = getattr(in_function, "active", False)
        in_function.active = False
        try:
            for binding, out in outputs:
                value = out.get()
                if value is None:
                    continue
                name = resolve_setting_refs(binding["queueName"]).lower()
                client = _queue_client(os.environ[binding.get("connection") or "AzureWebJobsStorage"], name)
                for item in value if isinstance(value, list | tuple) else [value]:
                    client.send_message(self._encode(item))
        finally:
            in_function.active = was
            with self._output_lock:
                self.output_cpu_s += time.thread_time() - cpu

    def _encode(self, item: Any) -> str:
        if isinstance(item, func.QueueMessage):
            item = item.get_body()
        raw = item.encode() if isinstance(item, str) else bytes(item)
        return base64.b64encode(raw).decode() if self.message_encoding == "base64" else raw.decode()


def load_app(app_dir: Path, script: str = "function_app.py") -> func.FunctionApp:
    """Import ``script`` from ``app_dir`` and return its FunctionApp, as the worker's indexer does."""
    app_dir = app_dir.resolve()
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    spec = importlib.util.spec_from_file_location("function_app", app_dir / script)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(app_dir / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules["function_app"] = module
    spec.loader.exec_module(module)
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionApp)]
    if len(apps) != 1:
        raise RuntimeError(f"{script} must define exactly one FunctionApp, found {len(apps)}")
    return apps[0]


def index_functions(app: func.FunctionApp) -> list[FunctionSpec]:
    """The app's functions with their bindings in host (function.json) form; duplicate names are an error."""
    specs: list[FunctionSpec] = []
    seen: set[str] = set()
    for fn in app.get_functions():
        meta = json.loads(fn.get_function_json())
        name = fn.get_function_name()
        if name in seen:
            raise RuntimeError(f"duplicate function name {name!r}")
        seen.add(name)
        triggers = [b for b in meta["bindings"] if str(b["type"]).endswith("Trigger")]
        if len(triggers) != 1:
            raise RuntimeError(f"function {name!r} must have exactly one trigger")
        user_fn = fn.get_user_function()
        specs.append(
            FunctionSpec(
                name=name,
                trigger=triggers[0],
                bindings=meta["bindings"],
                callable=user_fn,
                params=list(inspect.signature(user_fn).parameters),
            )
        )
    return specs
