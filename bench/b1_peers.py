"""B1 for the peers: msgraph-sdk and O365 sending the same emails with their own token handling.

For each peer: a fresh tenant with ``mailboxes`` users, each signed in once (the one-off connect, done here
with MSAL like the naive baseline, its token cache written to one file per mailbox: what both peers start
from), then ONE child process (``.venv-bench/bin/python bench/peer_send.py``) that builds one client per
mailbox, reports ready, and on our signal sends ``emails`` messages round-robin. The emulator's counters
are read between the ready signal and the child's exit, so client construction (MSAL's OIDC discovery) is
outside the count like the naive design's connect; the wall time is the child's send loop. Neither peer has
a Key Vault in its design: the token caches stay in memory / in their files.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.b1_cost import _cost, _delta

ROOT = Path(__file__).resolve().parent.parent
BENCH_PY = ROOT / ".venv-bench" / "bin" / "python"
PEERS = (  # (child kind, peer name = PEER_NOTES key, design = the row's name)
    ("msgraph", "msgraph-sdk", "msgraph-sdk + MSAL cache per mailbox (memory; no Key Vault)"),
    ("o365", "O365", "O365 token file per mailbox (no Key Vault)"),
)
PEER_NOTES: dict[str, str] = {
    "msgraph-sdk": "msgraph-sdk keeps no delegated tokens of its own. Its azure-identity route for web apps, "
    "AuthorizationCodeCredential, keeps them in one process's memory only and sends no PKCE code_verifier, so the "
    "emulator (PKCE mandatory, stricter than Entra) refuses its code redemption (AADSTS501481). The client's "
    "public auth hook (kiota AccessTokenProvider) is therefore served by MSAL over the mailbox's token cache: "
    "acquire_token_silent per request, refresh before expiry (MSAL treats a token as due 5 min before it "
    "expires). One GraphServiceClient per mailbox, sequential awaits.",
    "O365": "O365 loads each mailbox's token file natively (FileSystemTokenBackend is an MSAL token cache) and "
    "puts the access token on its requests session. It refreshes only after Graph answers 401/403 and its cached "
    "token has expired, so every expiry costs one failed Graph call as well as the refresh. Its default "
    "`requests_delay` (200 ms between two requests of one Account) is kept, as the library ships: it paces each "
    "mailbox and shows in the wall time.",
}


def child_env() -> dict[str, str]:
    """Environment of a peer child: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's
    ``verify`` (psf/requests#3829), which would silently replace O365's ``verify_ssl=<emulator CA>`` with this
    machine's global bundle; the children run without them. Nothing turns verification off."""
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def connect(kit: Any, users: list[str], work: Path, prefix: str = "") -> list[str]:
    """Sign each user in once (auth code + PKCE through the consent page, MSAL); one token cache file each."""
    import msal

    files = []
    for user in users:
        cache = msal.SerializableTokenCache()
        kit.sign_in(user, app=kit.msal_app(token_cache=cache))
        path = work / f"{prefix}{user}.json"
        path.write_text(cache.serialize())
        files.append(str(path))
    return files


def peer_config(stack: Any, kit: Any) -> dict[str, Any]:
    return {
        "base_url": stack.emulator.base_url,
        "ca": str(stack.emulator.ca_path),
        "tid": kit.tid,
        "client_id": kit.client_id,
        "client_secret": kit.client_secret,
        "to": "someone@example.com",
    }


def run_peer(
    stack: Any, kind: str, name: str, design: str, emails: int, mailboxes: int, timeout: float
) -> dict[str, Any]:
    """One peer: connect, start the child, count between its ready line and its exit."""
    admin = stack.admin
    users = [f"u{i}" for i in range(mailboxes)]
    kit = stack.tenant(tuple(users))
    work = Path(tempfile.mkdtemp(prefix=f"bench-b1-{kind}-", dir=getattr(stack, "root", None)))
    cfg = {**peer_config(stack, kit), "emails": emails, "mailboxes": connect(kit, users, work)}
    (work / "config.json").write_text(json.dumps(cfg))
    argv = [str(BENCH_PY), str(ROOT / "bench" / "peer_send.py"), kind, str(work / "config.json")]
    admin.graph_limits(messages_per_window=100_000, requests_per_window=1_000_000)
    try:
        with open(work / "stderr.log", "w") as err:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
            )
            try:
                ready = proc.stdout.readline() if select.select([proc.stdout], [], [], 120)[0] else ""
                if not ready.strip():
                    raise RuntimeError(f"{kind} child not ready: {(work / 'stderr.log').read_text()[-2000:]}")
                before = admin.counters()
                proc.stdin.write("go\n")
                proc.stdin.flush()
                out, _ = proc.communicate(timeout=timeout)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        after = admin.counters()
    finally:
        admin.reset_graph_limits()
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed: {(work / 'stderr.log').read_text()[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    if result["error"]:
        PEER_NOTES[name] += f" In this run {result['failed']} of {emails} sends failed; first: {result['error']}"
    return _cost(design, emails, mailboxes, result["sent"], _delta(before, after), result["wall_s"]).as_dict()


def run_peers(stack: Any, emails: int, mailboxes: int) -> list[dict[str, Any]]:
    """B1 rows (``b1_cost.Cost.as_dict()`` keys) for msgraph-sdk and O365; empty without .venv-bench."""
    if not BENCH_PY.exists():
        return []
    out = []
    for kind, name, design in PEERS:
        try:
            out.append(run_peer(stack, kind, name, design, emails, mailboxes, timeout=120 + emails * 1.0))
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            PEER_NOTES[name] += f" Not measured at {emails} / {mailboxes}: {str(exc)[-300:]}"
    return out
