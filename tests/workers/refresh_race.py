"""A separate process hammering one connection's refresh path (used by test_keepalive's race test).

Env: the app settings, plus RACE_CONNECTION_ID, RACE_THREADS, RACE_MODE (``timer`` = forced refresh,
``sender`` = forget the in-memory token and ask for one, which refreshes when MSAL's copy is stale).
Prints one JSON line: {"ok": n, "errors": [...]}.
"""

from __future__ import annotations

import json
import os
import threading

from shared.services import get_services


def main() -> None:
    services = get_services()
    cid = os.environ["RACE_CONNECTION_ID"]
    threads = int(os.environ.get("RACE_THREADS", "10"))
    mode = os.environ.get("RACE_MODE", "timer")
    barrier = threading.Barrier(threads)
    ok: list[int] = []
    errors: list[str] = []

    def run() -> None:
        conn = services.connections.get(cid)
        barrier.wait()
        try:
            if mode == "timer":
                services.tokens.refresh(conn, force=True)
            else:
                services.tokens.forget(cid)
                services.tokens.refresh(conn, force=True)
            ok.append(1)
        except Exception as exc:  # reported to the test, which asserts there were none
            errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps({"ok": len(ok), "errors": errors}))


if __name__ == "__main__":
    main()
