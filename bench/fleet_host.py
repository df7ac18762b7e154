"""``python -m bench.fleet_host``: one instance of a bench.fleet Fleet — tests/workers/crash_host.py (devhost's
main, leases shortened) plus a count of this process's Storage HTTP requests (every azure-core request to the
account of AzureWebJobsStorage: queues, tables, blobs; Key Vault is not counted) and its CPU time, written to
``$FLEET_STATS_DIR/stats-<pid>.json`` when the process stops (SIGTERM; a SIGKILLed life writes nothing)."""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

from azure.core.pipeline.transport import RequestsTransport

from bench.request_count import start_counting, storage_hosts

_seen: Counter[str] = Counter()


def _count_storage_requests() -> Counter:
    hosts = storage_hosts(os.environ.get("AzureWebJobsStorage", ""))
    return start_counting(RequestsTransport, lambda r: ["storage"] if urlsplit(r.url).netloc in hosts else [])[0]


def _write_stats() -> None:
    out = Path(os.environ.get("FLEET_STATS_DIR", "."))
    budget_calls, budget_calls_by = 0, {}
    try:
        from shared.services import _services

        if _services is not None and "budget" in _services.__dict__:
            budget_calls, budget_calls_by = _services.budget.storage_calls, dict(_services.budget.calls_by)
    except Exception as exc:  # stats are best effort at exit
        print(f"fleet_host: no budget count ({exc})", file=sys.stderr)
    data = {"storage_calls": _seen["storage"], "cpu_s": time.process_time(), "budget_calls": budget_calls}
    data["budget_calls_by"] = budget_calls_by
    (out / f"stats-{os.getpid()}.json").write_text(json.dumps(data))


if __name__ == "__main__":
    _seen = _count_storage_requests()
    atexit.register(_write_stats)
    import runpy

    sys.argv = ["tests.workers.crash_host", *sys.argv[1:]]
    runpy.run_module("tests.workers.crash_host", run_name="__main__")
