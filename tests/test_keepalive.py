"""Keep-alive: connections outlive the 90-day refresh-token inactivity limit; races never lose the newest token."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import msal
import pytest

from shared.base.errors import ReauthRequired, TemporarilyUnavailable
from shared.base.storage import StorageClients
from shared.tokens import locks as locks_module
from shared.tokens.locks import ConnectionLocks
from shared.tokens.refresh import KeepAlive

REPO = Path(__file__).resolve().parent.parent
DAY = 86400


@pytest.fixture
def mb_clock(mailbridge, emulator):
    """A Mailbridge living on the emulator's clock (so 'days later' is the same for both)."""

    def make(**kwargs):
        mb = mailbridge(**kwargs)
        mb.services.clock = emulator.state.clock.now
        return mb

    return make


def advance(mb, emulator, seconds: float) -> None:
    """Jump the shared clock. Key Vault tokens cached by azure-identity live on real time, so drop them
    (a real clock never jumps 60 days between two calls)."""
    emulator.state.clock.advance(seconds)
    mb.services.token_key.reset_clients()


def _events(mb) -> list[dict]:
    queue = mb.services.storage.queue(mb.env["EVENTS_QUEUE"])
    return [json.loads(m.content) for m in queue.peek_messages(max_messages=32)]


def _newest_refresh_token(emulator, oid: str, client_id: str) -> str:
    # The emulator's grant table is insertion-ordered, i.e. in issue order (its timestamps are whole seconds).
    issued = [rt for rt, g in emulator.state.entra.refresh.items() if g.oid == oid and g.client_id == client_id]
    return issued[-1]


def _stored_refresh_token(mb, cid: str) -> str:
    cache = json.loads(mb.services.token_caches.read(mb.services.connections.get(cid).secret_name))
    (entry,) = cache["RefreshToken"].values()
    return entry["secret"]


def test_timer_keeps_an_idle_connection_alive_for_150_days(mb_clock, emulator):
    mb = mb_clock()
    cid = mb.connect("alice")["connection_id"]
    for _ in ("day 61", "day 122"):
        advance(mb, emulator, 61 * DAY)
        report = KeepAlive(mb.services).sweep()
        assert (report.due_seen, report.refreshed) == (1, 1), report
    advance(mb, emulator, 28 * DAY)  # day 150: no send for 150 days, the last refresh was 28 days ago
    outcome = mb.services.tokens.refresh(mb.services.connections.get(cid), force=False)
    assert outcome.token
    assert mb.services.connections.get(cid).status == "connected"


def test_the_timer_sweeps_with_the_keepalive_settings(mb_clock, emulator, monkeypatch):
    """KEEPALIVE_CONCURRENCY and KEEPALIVE_RUN_SECONDS reach the sweep the timer function runs (docs/capacity.md
    sizes them); the due connection is refreshed by that run."""
    from types import SimpleNamespace

    mb = mb_clock(KEEPALIVE_CONCURRENCY="7", KEEPALIVE_RUN_SECONDS="45")
    cid = mb.connect("alice")["connection_id"]
    advance(mb, emulator, 61 * DAY)
    seen: list[tuple[int, float]] = []
    real_sweep = KeepAlive.sweep

    def recorded(self, budget_seconds=480.0, max_connections=None):
        seen.append((self.concurrency, budget_seconds))
        return real_sweep(self, budget_seconds, max_connections)

    monkeypatch.setattr(KeepAlive, "sweep", recorded)
    before = mb.services.connections.get(cid).last_refreshed_at
    mb.functions["keep_alive"].get_user_function()(SimpleNamespace(past_due=False))  # the host's TimerRequest
    assert seen == [(7, 45)]
    assert mb.services.connections.get(cid).last_refreshed_at > before


def test_without_the_timer_a_91_day_idle_connection_needs_reauth(mb_clock, emulator):
    mb = mb_clock()
    cid = mb.connect("alice")["connection_id"]
    advance(mb, emulator, 91 * DAY)
    with pytest.raises(ReauthRequired) as info:
        mb.services.tokens.refresh(mb.services.connections.get(cid), force=True)
    assert "700082" in info.value.detail
    view = mb.json(mb.http("get_connection", route_params={"connection_id": cid}))
    assert view["status"] == "reauth_required" and view["last_error"]["code"] == "reauth_required"


def test_only_due_connections_cost_a_token_call_and_no_key_vault_write(mb_clock, emulator, emulator_admin):
    mb = mb_clock()
    due = mb.connect("alice", user_ref="a")["connection_id"]
    advance(mb, emulator, 30 * DAY)
    fresh = mb.connect("bob", user_ref="b")["connection_id"]
    advance(mb, emulator, 31 * DAY)  # alice idle 61 days, bob 31
    emulator_admin.reset_counters()
    report = KeepAlive(mb.services).sweep()
    counters = emulator_admin.counters()
    assert (report.due_seen, report.refreshed, report.skipped) == (1, 1, 0)
    assert counters.get("entra.grant.refresh_token", 0) == 1
    assert counters.get("calls.kv.setSecret", 0) == 0  # the sealed cache's row is rewritten in Storage (issue 26)
    assert counters.get("calls.kv.listSecrets", 0) == 0  # no Key Vault scan
    before = mb.services.connections.get(fresh).last_refreshed_at
    assert mb.services.connections.get(fresh).last_refreshed_at == before
    assert mb.services.connections.get(due).last_refreshed_at > before


def test_a_sweep_that_runs_out_of_time_resumes_next_run(mb_clock, emulator, emu_tenant):
    mb = mb_clock(users=("u1", "u2", "u3", "u4", "u5"))
    for i, user in enumerate(("u1", "u2", "u3", "u4", "u5")):
        mb.connect(user, user_ref=f"ref{i}")
    advance(mb, emulator, 61 * DAY)
    keepalive = KeepAlive(mb.services, concurrency=2)
    nothing = keepalive.sweep(budget_seconds=0)
    assert nothing.stopped_early and nothing.refreshed == 0
    first = keepalive.sweep(max_connections=2)  # stands in for the host's time budget running out
    assert first.stopped_early and first.refreshed == 2
    second = keepalive.sweep()
    assert not second.stopped_early and second.refreshed == 3
    assert keepalive.sweep().due_seen == 0


def test_permanent_refresh_failure_marks_reauth_and_emits_an_event(mb_clock, emulator):
    mb = mb_clock()
    cid = mb.connect("alice")["connection_id"]
    mb.admin.password_reset(mb.kit.users["alice"]["upn"])
    advance(mb, emulator, 61 * DAY)
    report = KeepAlive(mb.services).sweep()
    assert report.reauth_required == 1 and report.reauth_ids == [cid]
    conn = mb.services.connections.get(cid)
    assert conn.status == "reauth_required" and "50173" in (conn.last_error_message or "")
    events = _events(mb)
    matching = [e for e in events if e.get("type") == "mailbridge.connection.reauth_required"]
    assert len(matching) == 1, events
    data = matching[0]["data"]
    assert data["connection_id"] == cid and data["user_ref"] == "user-1" and "50173" in data["detail"]
    assert KeepAlive(mb.services).sweep().due_seen == 0  # no longer in the due index


def _issued_refresh_tokens(emulator, oid: str, client_id: str) -> list[str]:
    """Every refresh token the emulator issued to this user and app, in issue order."""
    return [rt for rt, g in list(emulator.state.entra.refresh.items()) if g.oid == oid and g.client_id == client_id]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize(
    "modes",
    [("timer", "sender"), ("timer", "timer"), ("sender", "sender")],
    ids=["keepalive-vs-sender", "keepalive-vs-keepalive", "sender-vs-sender"],
)
def test_twenty_concurrent_refreshes_in_two_processes_keep_the_newest_token(mailbridge, emulator, modes):
    """Two processes, ten threads each, refresh one connection at once: the keep-alive path (forced
    refresh) and/or the sender's (access token expired -> refresh on demand). Every refresh token the
    emulator issues must be stored, each written over the one it was redeemed from, in issue order; the stored
    one is the last. The store keeps no versions (issue 26), so each process reports its writes as (refresh token
    read under the lease, refresh token written) and the test chains them from the one the connect stored."""
    # Access tokens live 60 s, inside MSAL's 5-minute margin: every sender-path call finds the token expired
    # (in memory and in the stored cache) and redeems the refresh token, like a send after an idle hour.
    emulator.state.entra.settings.access_token_lifetime_s = 60
    mb = mailbridge()
    cid = mb.connect("alice")["connection_id"]
    oid, client_id = mb.kit.users["alice"]["oid"], mb.env["ENTRA_CLIENT_ID"]
    secret_name = mb.services.connections.get(cid).secret_name
    issued_before = len(_issued_refresh_tokens(emulator, oid, client_id))
    stored_before = _digest(_stored_refresh_token(mb, cid))
    env = {**os.environ, **mb.env, "PYTHONPATH": str(REPO), "RACE_CONNECTION_ID": cid, "RACE_THREADS": "10"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.workers.refresh_race"],
            env={**env, "RACE_MODE": mode},
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode in modes
    ]
    try:
        for proc in procs:  # both ready (imports done, threads at the barrier) before either starts
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:]
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [r["errors"] for r in results] == [[], []]
    assert [r["ok"] for r in results] == [10, 10]
    # The two processes really ran at the same time (each one's calls overlap the other's).
    (a_start, a_end), (b_start, b_end) = (
        (min(s for s, _ in r["spans"]), max(e for _, e in r["spans"])) for r in results
    )
    assert a_start < b_end and b_start < a_end, results
    issued = _issued_refresh_tokens(emulator, oid, client_id)[issued_before:]
    assert len(issued) == 20, "every call redeemed the refresh token (forced, or on demand after expiry)"
    # No refresh token issued and then lost: each was written, once, over the one it was redeemed from, in the
    # order the emulator issued them (so every later write supersedes an earlier one, never the other way round).
    written_over = {}
    for read, wrote in (pair for r in results for pair in r["writes"]):
        assert read not in written_over, "two writes over the same stored token: one of them was lost"
        written_over[read] = wrote
    stored, at = [], stored_before
    while at in written_over:
        at = written_over[at]
        stored.append(at)
    assert len(written_over) == 20 and stored == [_digest(t) for t in issued]
    assert _stored_refresh_token(mb, cid) == issued[-1] == _newest_refresh_token(emulator, oid, client_id)
    conn = mb.services.connections.get(cid)
    assert conn.status == "connected" and conn.secret_name == secret_name
    cache = msal.SerializableTokenCache()
    cache.deserialize(mb.services.token_caches.read(conn.secret_name))
    app = mb.services.msal.app(token_cache=cache)
    assert "access_token" in app.acquire_token_silent_with_error(
        ["Mail.Send"], account=app.get_accounts()[0], force_refresh=True
    )


def test_the_data_key_rotates_by_moving_to_a_new_row_and_the_old_one_is_erased(mailbridge, emulator):
    """Every ``max_secret_versions`` writes the cache moves to the next generation under a new data key; the old
    row (and so its wrapped data key) is deleted for real, and nothing of it is left in Key Vault."""
    mb = mailbridge()
    cid = mb.connect("alice")["connection_id"]
    mb.services.tokens.max_secret_versions = 3
    first = mb.services.connections.get(cid).secret_name
    for _ in range(7):
        mb.services.tokens.refresh(mb.services.connections.get(cid), force=True)
    conn = mb.services.connections.get(cid)
    assert conn.secret_generation == 3 and conn.secret_name != first
    assert mb.services.token_caches.read(first) is None
    caches = mb.services.storage.table("tokencaches")
    rows = list(caches.query_entities("connection eq @c", parameters={"c": cid}, select=["PartitionKey"]))
    assert [r["PartitionKey"] for r in rows] == [conn.secret_name]
    assert not [n for n in emulator.state.keyvault.secrets if cid in n], "no token cache secret in Key Vault"
    assert mb.services.tokens.refresh(conn, force=True).refreshed


@pytest.mark.slow
def test_the_refresh_lease_outlives_a_slow_key_vault_inside_it(mailbridge, emulator, emulator_admin, monkeypatch):
    """BUG (issue 14 item 8): the Blob lease (30 s) was never renewed, while Key Vault back-off inside it can
    sleep 31 s per call: the lease expired under the holder and a second refresher (another instance) got in,
    so two refreshers could each store their own cache. Now a renewal thread keeps it while the work runs.
    Here the lease is 15 s (Azure's minimum) and one Key Vault call (the unwrap of the cache's data key on an
    instance that does not hold it yet) takes 18 s."""
    monkeypatch.setattr(locks_module, "LEASE_SECONDS", 15)
    mb = mailbridge()
    cid = mb.connect("alice")["connection_id"]
    mb.services.token_caches.forget_keys()
    emulator_admin.add_fault("kv.unwrapKey", "latency", count=1, latency_ms=18_000)
    outcome: dict[str, object] = {}

    def slow_refresh() -> None:
        try:
            outcome["result"] = mb.services.tokens.refresh(mb.services.connections.get(cid), force=True)
        except Exception as exc:  # reported below
            outcome["error"] = exc

    holder = threading.Thread(target=slow_refresh)
    holder.start()
    time.sleep(16.5)  # past the lease's own 15 s, while the holder still waits for Key Vault
    other_instance = ConnectionLocks(StorageClients(mb.services.settings), wait_seconds=0.5)
    with pytest.raises(TemporarilyUnavailable):
        with other_instance.hold(cid):
            pass
    holder.join(timeout=60)
    assert "error" not in outcome, outcome
    assert outcome["result"].refreshed and outcome["result"].wrote_cache
    with other_instance.hold(cid):  # released at the end: the next refresher gets in at once
        pass
