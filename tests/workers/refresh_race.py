"""A separate process hammering one connection's refresh path (used by test_keepalive's race test).

Env: the app settings, plus RACE_CONNECTION_ID, RACE_THREADS, RACE_MODE:

- ``timer``: the keep-alive path, a forced refresh of a connection read beforehand, as
  ``KeepAlive._refresh_one`` does;
- ``sender``: the sender's path, ``TokenService.access_token`` (what ``Sender._token`` calls), which
  redeems the refresh token on demand when MSAL's access token has expired (less than 5 minutes left).

Handshake, so that two processes start together: prints ``ready`` once its threads wait at the barrier,
then waits for a line on stdin. Prints one JSON line at the end: {"ok": n, "errors": [...], "spans":
[[start, end], ...], "writes": [[read, written], ...]}: epoch seconds of each call (to show the processes ran at
the same time), and for each write of the token cache the refresh token the writing thread read last (under the
lease) and the one it wrote, as SHA-256 digests (the store keeps no versions: the test chains these instead).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time

from shared.services import get_services


def main() -> None:
    services = get_services()
    cid = os.environ["RACE_CONNECTION_ID"]
    threads = int(os.environ.get("RACE_THREADS", "10"))
    mode = os.environ.get("RACE_MODE", "timer")
    if mode not in ("timer", "sender"):
        raise SystemExit(f"RACE_MODE must be timer or sender, not {mode!r}")
    barrier = threading.Barrier(threads + 1)  # the threads and the main thread (released on "go")
    ok: list[int] = []
    errors: list[str] = []
    spans: list[list[float]] = []
    writes: list[list[str | None]] = []
    store, seen = services.token_caches, threading.local()
    read, write = store.read, store.write

    def refresh_token_digest(serialized: str | None) -> str | None:
        if not serialized:
            return None
        (entry,) = json.loads(serialized)["RefreshToken"].values()
        return hashlib.sha256(entry["secret"].encode()).hexdigest()

    def reading(name: str) -> str | None:
        value = read(name)
        seen.last = refresh_token_digest(value)
        return value

    def writing(name: str, value: str, **kwargs) -> None:
        write(name, value, **kwargs)
        writes.append([getattr(seen, "last", None), refresh_token_digest(value)])

    store.read, store.write = reading, writing

    def run() -> None:
        conn = services.connections.get(cid)
        barrier.wait()
        start = time.time()
        try:
            if mode == "timer":
                services.tokens.refresh(conn, force=True)
            else:
                services.tokens.access_token(conn)
            ok.append(1)
        except Exception as exc:  # reported to the test, which asserts there were none
            errors.append(f"{type(exc).__name__}: {exc}")
        spans.append([start, time.time()])

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    while barrier.n_waiting < threads:
        time.sleep(0.01)
    print("ready", flush=True)
    sys.stdin.readline()
    barrier.wait()
    for w in workers:
        w.join()
    print(json.dumps({"ok": len(ok), "errors": errors, "spans": spans, "writes": writes}), flush=True)


if __name__ == "__main__":
    main()
