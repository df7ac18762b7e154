"""``python -m emulator --port PORT --state-dir DIR``: run the emulator in the foreground.

Prints the base URL and CA file, writes them to ``DIR/emulator.json``, stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from emulator.app import Emulator


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0 = pick a free one)")
    parser.add_argument("--state-dir", type=Path, default=Path(".run/emulator"), help="CA file + emulator.json")
    parser.add_argument("--public-host", default=None, help="host name put in URLs and the certificate")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--persist",
        action="store_true",
        help="keep the CA and the emulated world (tenants, users, consents, vault, mailboxes) in --state-dir",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")

    emulator = Emulator(
        args.state_dir, host=args.host, port=args.port, public_host=args.public_host, persist=args.persist
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    emulator.start()
    info = json.loads((args.state_dir / "emulator.json").read_text())
    print(f"EMULATOR_BASE_URL={emulator.base_url}", flush=True)
    print(f"EMULATOR_CA_FILE={emulator.ca_path}", flush=True)
    print(json.dumps(info), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
    print("emulator stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
