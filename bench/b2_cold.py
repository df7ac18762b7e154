"""B2: cold start. Each run is a fresh interpreter that imports the app and serves one send."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_child(argv: list[str], env: dict[str, str], timeout: float = 120) -> dict[str, Any]:
    """Run one child; returns its JSON line plus the parent-measured wall time (interpreter start included)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def summarize(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs (and every run, for the plot)."""
    return {
        "name": name,
        "runs": len(runs),
        "import_s": statistics.median(r["import_s"] for r in runs),
        "first_send_s": statistics.median(r["first_send_s"] for r in runs),
        "process_wall_s": statistics.median(r["process_wall_s"] for r in runs),
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "statuses": sorted({r["status"] for r in runs}),
        "all": runs,
    }


def run_mailbridge(kit: Any, runs: int = 7) -> dict[str, Any]:
    """Cold starts of Mailbridge for one connected mailbox of ``kit`` (a SendKit)."""
    cid = kit.connect(next(iter(kit.mb.kit.users)))
    env = {**os.environ, **kit.mb.env, "PYTHONDONTWRITEBYTECODE": "1"}
    results = [run_child([sys.executable, "-m", "bench.cold_mailbridge", cid], env) for _ in range(runs)]
    return summarize("Mailbridge", results)


PEER_NOTES = {
    "msgraph-sdk": "not in the table yet. It can be pointed at the emulator (GraphRequestAdapter.base_url, an "
    "httpx client trusting the emulator CA, an AccessTokenProvider over MSAL), but in bench/cold_peers.py the "
    "`/me` URL-replacement middleware did not run, so `me.send_mail` reached Graph as "
    "`/users/me-token-to-replace` (404). Unfinished, not a limit of the SDK.",
    "O365": "not in the table yet. Its Graph root can be overridden (MSGraphProtocol subclass), but its MSAL "
    "authority is hard-coded to login.microsoftonline.com with instance discovery on (only replacing the "
    "private `con._msal_client` points it elsewhere), `verify_ssl` did not reach its Graph session "
    "(REQUESTS_CA_BUNDLE does), and it then refused the loaded MSAL cache with TokenExpiredError. Unfinished.",
}


def run_peers(stack: Any, runs: int = 7) -> list[dict[str, Any]]:
    """The same cold start for msgraph-sdk and O365 (run by .venv-bench's python), each with its own MSAL
    token cache from a sign-in of a fresh user; the first send redeems nothing while the token is valid."""
    import tempfile

    import msal

    bench_py = ROOT / ".venv-bench" / "bin" / "python"
    if not bench_py.exists():
        return []
    kit = stack.tenant(("peer",))
    cache = msal.SerializableTokenCache()
    kit.sign_in("peer", app=kit.msal_app(token_cache=cache))
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    (work / "cache.json").write_text(cache.serialize())
    cfg = {
        "base_url": stack.emulator.base_url,
        "ca": str(stack.emulator.ca_path),
        "tid": kit.tid,
        "client_id": kit.client_id,
        "client_secret": kit.client_secret,
        "cache": str(work / "cache.json"),
        "dir": str(work),
        "to": "someone@example.com",
    }
    # O365's requests session ignores verify_ssl for its Graph calls here; the standard variable works.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "REQUESTS_CA_BUNDLE": cfg["ca"]}
    out = []
    for kind, name in (("msgraph", "msgraph-sdk"), ("o365", "O365")):
        argv = [str(bench_py), str(ROOT / "bench" / "cold_peers.py"), kind, json.dumps(cfg)]
        try:
            out.append(summarize(name, [run_child(argv, env) for _ in range(runs)]))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            PEER_NOTES[name] = f"could not be measured in this run: {str(exc)[-300:]}"
    return out
