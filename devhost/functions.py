"""Load a v2-model function app and call its functions the way the Python worker does."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func


@dataclass
class FunctionSpec:
    """One indexed function: its name, trigger binding (as function.json would hold it) and Python callable."""

    name: str
    trigger: dict[str, Any]
    bindings: list[dict[str, Any]]
    callable: Any
    params: list[str] = field(default_factory=list)

    @property
    def trigger_type(self) -> str:
        return str(self.trigger.get("type"))

    def invoke(self, trigger_value: Any) -> Any:
        """Call the function with its trigger argument (and ``context`` when it asks for one)."""
        kwargs: dict[str, Any] = {self.trigger["name"]: trigger_value}
        if "context" in self.params:
            kwargs["context"] = None
        result = self.callable(**kwargs)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return result


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
