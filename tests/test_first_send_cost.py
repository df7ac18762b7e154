"""First-send cost (issue 18 goal 4): the HTTP requests a cold instance makes for its first email, counted at
requests' transport (Storage and Key Vault through azure-core, Entra through MSAL and azure-identity, Graph),
against real Azurite and the emulator. bench/cold_mailbridge.py (B2) counts the same in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from urllib.parse import urlsplit

import requests

from bench.request_count import counting
from shared.services import reset_services
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)


def http_requests():
    """Every requests.Session request of the process, as ``METHOD path`` (the path cut at its first '(')."""

    def keys(request):
        yield f"{request.method} {urlsplit(request.url).path.split('(')[0]}"

    return counting(requests.Session, keys)


def _cold_first_send(kit, **fields):
    """Connect, then start over as a new instance would (no token, row or discovery in memory) and send once."""
    cid = kit.connect("alice")
    mid = kit.message(cid, **fields)
    reset_services()  # a cold instance: fresh Services (token memory, MSAL's discovery cache, clients)
    sender = kit.services.sender
    before = kit.mb.admin.counters().get("entra.grant.refresh_token", 0)
    with http_requests() as seen:
        outcome = sender.process(json.dumps(mid), "q-cold")
    assert kit.mb.admin.counters().get("entra.grant.refresh_token", 0) == before, "no refresh token redeemed"
    return cid, outcome, seen


def test_a_cold_instance_serves_its_first_send_from_the_stored_token_without_lease_or_msal_discovery(send_kit):
    """The access token the connect left in the stored cache is valid: one Table read and one unwrap give it. No Blob
    lease (acquire + release), no second read of the connection row under it, no openid-configuration of the
    users' authority (MSAL is not even built), no write to the connection row. Before: 2 lease requests, 2 row
    reads, the discovery GET and a last_used_at merge."""
    kit = send_kit()
    cid, outcome, seen = _cold_first_send(kit)
    assert outcome.status == "sent", outcome
    calls = sorted(seen.items())
    settings = kit.services.settings
    assert not [k for k in seen if "mailbridge-locks" in k], calls
    assert sum(n for k, n in seen.items() if k.startswith("GET ") and k.endswith("connections")) == 1, calls
    assert not [k for k in seen if f"/{settings.entra_tenant}/v2.0/.well-known/openid-configuration" in k], calls
    assert not [k for k in seen if k.endswith("/token") and settings.entra_tenant in k], calls
    # The sealed cache's row, then its data key's unwrap (+ the vault's 401 challenge); no Get Key, no secret read.
    assert sum(n for k, n in seen.items() if "tokencaches" in k) == 1, calls
    assert sum(n for k, n in seen.items() if "/unwrapkey" in k) == 1, calls
    assert not [k for k in seen if "/secrets/" in k or (k.startswith("GET ") and "/keys/" in k)], calls
    # last_used_at comes from the outgoing log (DeliveryStore.last_logged_at): no write to the connection row.
    assert not [k for k in seen if k.endswith("connections") and not k.startswith("GET ")], calls


def test_a_stored_token_with_five_minutes_left_is_not_used(send_kit):
    """Less than 5 minutes to live (MSAL's own margin): the first send refreshes under the lease instead."""
    kit = send_kit()
    cid = kit.connect("alice")
    services = kit.services
    conn = services.connections.get(cid)
    cache = json.loads(services.token_caches.read(conn.secret_name))
    for at in cache["AccessToken"].values():
        at["expires_on"] = str(int(time.time()) + 240)  # 4 minutes left
    services.token_caches.write(conn.secret_name, json.dumps(cache))
    reset_services()
    before = kit.mb.admin.counters().get("entra.grant.refresh_token", 0)
    outcome = kit.services.sender.process(json.dumps(kit.message(cid)), "q-late")
    assert outcome.status == "sent", outcome
    assert kit.mb.admin.counters().get("entra.grant.refresh_token", 0) == before + 1


def test_a_fresh_process_first_send_makes_at_most_ten_http_calls_and_loads_no_blob_queue_or_identity_sdk(send_kit):
    """B2's child (bench/cold_mailbridge.py) in a fresh interpreter: import function_app, serve one queued send.
    Azurite's create-if-missing calls do not happen in Azure (shared/base/storage.py ``creates_missing``); the event is
    the host's write (output binding). Before issue 18's changes: 16 calls, and azure.identity, the queue SDK and
    cryptography loaded (blob too). The calls: the connection row; the budget row's read and first insert; the Key
    Vault token (here tenant discovery + token of the app's credential; in Azure one managed-identity call for Key
    Vault and one for Storage); the vault's 401 challenge; the sealed token cache's row and the unwrap of its data
    key (issue 26: one call more than the secret read it replaces; 10 before; cryptography now loads, for AES-GCM);
    the claim (one insert, no batch);
    Graph; the final state (into the message's outgoing-log index row: one upsert)."""
    kit = send_kit()
    cid = kit.connect("alice")
    env = {**os.environ, **kit.mb.env}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cold_mailbridge", cid], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "sent", result
    calls = result["first_send_http_calls"] - result["first_send_creates"]
    assert calls <= 11, result["first_send_http_requests"]
    seen = result["first_send_http_requests"]
    deliveries = {k.split(" ")[0]: n for k, n in seen.items() if "deliveries" in k and "PartitionKey" not in k}
    assert not [k for k in seen if "$batch" in k], seen
    assert deliveries == {"POST": 1}, seen  # the claim; the final state is a PUT of the index row
    assert result["host_output_messages"] == 1
    assert not any(result["loaded"].values()), result["loaded"]
