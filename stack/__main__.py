"""``python -m stack up|down``: the whole local stack (what ``make run`` and ``scripts/dev.sh up`` run).

``up`` starts Azurite, the emulator (seeded with demo tenants, users and the Mailbridge app registration)
and the app under devhost, prints where to go and stays in the foreground until Ctrl-C / SIGTERM.
``down`` stops a running stack from its PID file (``.run/stack.json``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from stack.local import DEFAULT_PORT, REPO, LocalStack, StackError, banner, down


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start Azurite + emulator + app and stay in the foreground")
    up.add_argument("--port", type=int, default=DEFAULT_PORT, help="app port (default 7071; a free one if busy or 0)")
    up.add_argument("--ready-file", type=Path, default=None, help="write the stack's URLs and PIDs here once ready")
    up.add_argument(
        "--no-wait", action="store_true", help="return once ready, leaving the stack running (stop: `down`)"
    )
    up.add_argument("--run-dir", type=Path, default=REPO / ".run", help="state, settings and logs (default .run)")
    up.add_argument(
        "--fresh",
        action="store_true",
        help="wipe the run dir first: Azurite data, emulator state and CA, ports, keys (make run ARGS=--fresh)",
    )
    sub.add_parser("down", help="stop the running stack").add_argument(
        "--run-dir", type=Path, default=REPO / ".run", help="the --run-dir given to up"
    )
    args = parser.parse_args(argv)

    if args.command == "down":
        down(args.run_dir)
        return 0

    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM during start-up still stops what was started
    stack = LocalStack(run_dir=args.run_dir.resolve(), port=args.port, fresh=args.fresh)
    current = stack.running()
    if current is not None:
        print(
            f"A local stack is already running ({current.get('ui_url')}). "
            "Use it, or stop it first with `python -m stack down`.",
            file=sys.stderr,
        )
        return 1
    try:
        info = stack.up()
    except (StackError, KeyboardInterrupt) as exc:
        print(f"local stack failed to start: {exc}", file=sys.stderr)
        return 1
    print(banner(info, foreground=not args.no_wait), flush=True)
    if args.ready_file:
        args.ready_file.write_text(json.dumps(info, indent=2))
    if args.no_wait:
        return 0
    return stack.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
