"""B2 peer child, run with .venv-bench's python: one send through msgraph-sdk or O365 against the emulator.

``python bench/cold_peers.py {msgraph|o365} <json config>``; config: base_url, ca, tid, client_id,
client_secret, cache (path of the peer's token cache file: a serialized MSAL cache from a sign-in), to.
The clients are built exactly as in B1 (bench/peer_send.py). Prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def peak_rss_mb() -> float:
    """Peak RSS of this process image: VmHWM (reset by exec). ``ru_maxrss`` is not: Linux carries the parent's
    high-water mark across fork + exec, so a child of a 300 MiB parent reports at least 300 MiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(kind: str, config: str) -> None:
    start = time.perf_counter()
    cfg = json.loads(config)
    import peer_send  # bench/ is sys.path[0]; stdlib-only at module level

    if kind == "msgraph":
        import asyncio

        peer_send.import_msgraph()
        imported = time.perf_counter()

        async def once() -> None:
            await peer_send.msgraph_sender(cfg, cfg["cache"])("cold start")

        asyncio.run(once())
    else:
        peer_send.import_o365()
        imported = time.perf_counter()
        peer_send.o365_sender(cfg, cfg["cache"])("cold start")
    done = time.perf_counter()
    result = {
        "import_s": imported - start,
        "first_send_s": done - start,
        "peak_rss_mb": peak_rss_mb(),
        "status": "sent",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
