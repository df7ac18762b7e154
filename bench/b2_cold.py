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


def run_child(argv: list[str], env: dict[str, str], timeout: float = 120, cwd: Path = ROOT) -> dict[str, Any]:
    """Run one child; returns its JSON line plus the parent-measured wall time (interpreter start included)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
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
        "import_rss_mb": statistics.median(r["import_rss_mb"] for r in runs) if "import_rss_mb" in runs[0] else None,
        "first_send_http_calls": (
            statistics.median(r["first_send_http_calls"] for r in runs) if "first_send_http_calls" in runs[0] else None
        ),
        "first_send_creates": (
            statistics.median(r["first_send_creates"] for r in runs) if "first_send_creates" in runs[0] else None
        ),
        "statuses": sorted({r["status"] for r in runs}),
        "all": runs,
    }


# What the deployment package holds of the app (.funcignore keeps tests, bench, devhost... out), plus what the
# B2 child itself needs: bench/cold_mailbridge.py, the two stdlib-only bench modules it imports, and
# devhost.functions' Out (stdlib + azure.functions only).
APP_FILES = ("function_app.py", "host.json", "blueprints", "shared")
# What the child imports beyond the deployed app (tests/test_bench_smoke.py runs B2: a missing file fails it).
CHILD_FILES = (
    "bench/__init__.py",
    "bench/cold_mailbridge.py",
    "bench/cold_peers.py",
    "bench/request_count.py",
    "devhost",
)


def app_copy(compiled: bool) -> Path:
    """A copy of the app without any __pycache__ (as .funcignore deploys it), byte-compiled if ``compiled``
    (``python -m compileall``, checked-hash pycs: valid whatever the files' times)."""
    import compileall
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="bench-b2-app-"))
    for name in APP_FILES + CHILD_FILES:
        src, dst = ROOT / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    if compiled:
        import py_compile

        compileall.compile_dir(root, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    return root


def run_mailbridge(kit: Any, runs: int = 7) -> list[dict[str, Any]]:
    """Cold starts of Mailbridge for one connected mailbox of ``kit`` (a SendKit): the app byte-compiled, and as
    the package deploys it (.funcignore drops __pycache__; Flex Consumption runs the package read-only, so an
    instance cannot keep the bytecode it compiles). PYTHONDONTWRITEBYTECODE: no run leaves bytecode behind."""
    cid = kit.connect(next(iter(kit.mb.kit.users)))
    out = []
    for compiled, name in ((True, "Mailbridge"), (False, "Mailbridge (no .pyc)")):
        root = app_copy(compiled)
        env = {**os.environ, **kit.mb.env, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(root)}
        argv = [sys.executable, "-m", "bench.cold_mailbridge", cid]
        out.append(summarize(name, [run_child(argv, env, cwd=root) for _ in range(runs)]))
    return out


PEER_NOTES = {
    "msgraph-sdk": "pointed at the emulator with public knobs: `GraphRequestAdapter(auth, client=<httpx client "
    "trusting the emulator CA>)`, `adapter.base_url = <emulator>/v1.0`, tokens from MSAL (emulator authority, "
    "`instance_discovery=False`) behind kiota's `AccessTokenProvider`. Trap: GraphRequestAdapter applies the SDK's "
    "middleware options, among them the `/users/me-token-to-replace` -> `/me` URL replacement, only to an HTTP "
    "client it builds itself; a custom client (the way to give it a CA file other than SSL_CERT_FILE for the "
    "whole process) sends every `client.me` call to `/users/me-token-to-replace` (404; msgraph-sdk-python#544, "
    "#1271) unless it is built with "
    "`GraphClientFactory.create_with_default_middleware(client=..., options=msgraph.graph_request_adapter.options)` "
    "(an undocumented module attribute).",
    "O365": "Graph root: an `MSGraphProtocol` subclass overriding `_protocol_url` (the override O365's Protocol "
    "invites subclasses to make). Tokens: the mailbox's MSAL cache file, loaded by O365's own "
    "FileSystemTokenBackend (`BaseTokenBackend.deserialize` returns the dict without loading it, so feeding it a "
    "cache that way leaves the backend empty and the send fails with TokenExpiredError). TLS: `verify_ssl=<CA>` "
    "reaches its requests sessions, but requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's "
    "`verify` (psf/requests#3829): with this machine's global REQUESTS_CA_BUNDLE the send fails the TLS handshake, "
    "so the children run without those two variables. Authority: no public knob. O365 builds its MSAL client "
    "(used only to refresh) from the private `_msal_authority`, `https://login.microsoftonline.com/<tenant>`, with "
    "instance discovery on; even with that attribute replaced, MSAL asks login.microsoftonline.com for instance "
    "discovery. The bench replaces the private `Connection._msal_client` with an MSAL client for the emulator "
    "(`instance_discovery=False`).",
}


def run_peers(stack: Any, runs: int = 7) -> list[dict[str, Any]]:
    """The same cold start for msgraph-sdk and O365 (run by .venv-bench's python, clients built as in B1 by
    bench/peer_send.py), each from its own token cache file of a fresh user's sign-in: the first send redeems
    nothing while the access token is valid."""
    import tempfile

    from bench.b1_peers import BENCH_PY, child_env, connect, peer_config

    if not BENCH_PY.exists():
        return []
    kit = stack.tenant(("peer",))
    work = Path(tempfile.mkdtemp(prefix="bench-b2-peers-", dir=getattr(stack, "root", None)))
    env = child_env()
    out = []
    for kind, name in (("msgraph", "msgraph-sdk"), ("o365", "O365")):
        cfg = {**peer_config(stack, kit), "cache": connect(kit, ["peer"], work, prefix=f"{kind}-")[0]}
        argv = [str(BENCH_PY), str(ROOT / "bench" / "cold_peers.py"), kind, json.dumps(cfg)]
        try:
            out.append(summarize(name, [run_child(argv, env) for _ in range(runs)]))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            PEER_NOTES[name] = f"could not be measured in this run: {str(exc)[-300:]}"
    return out
