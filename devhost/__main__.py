"""``python -m devhost``: run function_app.py locally like ``func start`` (see docs/devhost.md)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from devhost.host import DevHost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    parser.add_argument("--app-dir", type=Path, default=Path.cwd(), help="folder holding function_app.py and host.json")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default: Host.LocalHttpPort or 7071)")
    parser.add_argument("--settings", type=Path, default=None, help="local.settings.json to load")
    parser.add_argument("--ready-file", type=Path, default=None, help="write {base_url, pid} here once listening")
    parser.add_argument("--no-queues", action="store_true", help="do not start queue triggers")
    parser.add_argument("--no-timers", action="store_true", help="do not start timer triggers")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    host = DevHost(
        app_dir=args.app_dir,
        port=args.port,
        settings_file=args.settings,
        enable_queues=not args.no_queues,
        enable_timers=not args.no_timers,
    )
    try:
        base_url = host.start()
    except Exception as exc:
        logging.getLogger("devhost").error("devhost failed to start: %s", exc)
        return 1
    print(f"devhost listening on {base_url}", flush=True)
    if args.ready_file:
        import os

        args.ready_file.write_text(json.dumps({"base_url": base_url, "pid": os.getpid()}))
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
