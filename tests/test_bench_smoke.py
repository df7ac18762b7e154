"""Smoke tests of the benchmarks with tiny numbers, counts only, no timing: B1, B3, B5 and B7's harnesses on the
test session's services, and every benchmark (B1-B7) through ``python -m bench --smoke``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from bench.b1_cost import run_mailbridge, run_naive
from bench.b3_throughput import run as run_throughput
from bench.b5_keepalive import run as run_sweep
from bench.b7_capacity import run as run_capacity
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)


def test_b1_harness_counts_one_graph_call_per_email_and_fewer_token_calls_than_naive(send_kit, emu_tenant):
    users = ("u1", "u2")
    kit = send_kit(users=users)
    ours = run_mailbridge(kit, emails=10, mailboxes=2)
    naive = run_naive(emu_tenant(users=users), kit.mb.admin, emails=10, mailboxes=2)
    assert ours.sent == 10 and naive.sent == 10
    assert ours.graph_calls == 10, ours
    assert naive.graph_calls == 10, naive
    assert naive.refresh_grants == 10, "the naive design redeems its refresh token for every email"
    assert naive.kv_ops >= 20, "and reads and writes Key Vault for every email"
    assert ours.token_calls < naive.token_calls, (ours, naive)
    assert ours.kv_ops <= 2, "Mailbridge reads each mailbox's token cache once, then keeps it in memory"


def _stack(send_kit, azurite):
    """What B3/B5 use of a BenchStack, on the test session's services (the emulator runs in this process here,
    so its CPU column means nothing in this test; only counts are asserted)."""
    return SimpleNamespace(
        send_kit=lambda users: send_kit(users=users),
        emulator=SimpleNamespace(pid=os.getpid()),
        azurite=azurite,
    )


def test_b3_drains_a_backlog_under_exchange_limits_with_one_graph_call_each_and_no_429(send_kit, azurite):
    r = run_throughput(_stack(send_kit, azurite), messages=24, mailboxes=4, latency_ms=5, rate_limits=True)
    assert r["statuses"] == {"sent": 24}, r
    assert r["graph_calls"] == 24 and r["throttled_429"] == 0, r
    assert r["host_concurrency"] == 24 and len(r["completed_after_s"]) == 24
    assert r["app_cpu_ms_per_msg"] > 0


def test_b5_sweep_refreshes_exactly_the_due_third_with_one_token_call_and_one_unwrap_each(send_kit, azurite):
    """Issue 26: a keep-alive refresh on the timer's instance unwraps the connection's data key once and writes
    nothing to Key Vault (the rotated cache goes back to its Table row); each concurrency asked for sweeps again."""
    r = run_sweep(_stack(send_kit, azurite), connections=12, latency_ms=1, workers=2, concurrencies=(2, 3))
    assert [run["concurrency"] for run in r["runs"]] == [2, 3], r
    for run in r["runs"]:
        assert run["due"] == 4 and run["refreshed"] == 4 and run["still_due"] == 0, run
        counts = (run["refresh_grants"], run["kv_unwraps"], run["kv_reads"], run["kv_writes"], run["graph_calls"])
        assert counts == (4, 4, 0, 0, 0), run
        # Besides the refresh grants, at most the instance's one Key Vault sign-in (the emulator's app auth): not one
        # per key client nor one per concurrent first unwrap (TokenKey shares one credential; AppCredential asks
        # Entra once per tenant at a time).
        assert run["token_calls"] - run["refresh_grants"] <= 1, run
        assert run["sweep"]["skipped"] == 0 and run["sweep"]["transient_failures"] == 0, run


def test_b7_day_under_key_vault_limits_unwraps_and_writes_nothing_to_the_vault(send_kit, azurite):
    """B7's simulated day on the test session's services: the sealed store reads Key Vault only to unwrap (a
    first use per instance), writes nothing there, and the sweep refreshes exactly the connections made due."""
    r = run_capacity(
        _stack(send_kit, azurite), connections=12, instances=2, rounds=2, round_s=1.0, active_share=0.25, workers=2
    )
    # No Set Secret; the only writes are the claim's erasure of a pending grant's (absent) legacy secret.
    assert "setSecret" not in r["kv_calls"] and r["kv"]["ops_write"] <= r["new_connections"], r
    assert r["active"] <= r["kv"]["ops_unwrap"] <= r["active"] * (r["instances"] + r["rounds"]) + r["sweep_due"], r
    assert r["refresh_grants"] >= r["active"] + r["sweep_due"], r
    assert r["sweep"]["refreshed"] == r["sweep_due"] > 0 and r["sweep"]["transient_failures"] == 0, r
    assert r["emails"] == r["active"] * 10 and r["throttled"] == 0, r  # 10 emails per active connection a day
    # Per active connection: the senders' unwraps only (the sweep's cold instance unwraps each due one once).
    assert round(r["unwraps_per_active_day"] * r["active"]) == r["kv"]["ops_unwrap"] - r["sweep"]["refreshed"], r
    assert 0 < r["peak_window_usage"]["keys"] <= 1, r  # the busiest 10 s window's share of the scaled key budget


def test_every_benchmark_runs_end_to_end_at_its_smallest_size(tmp_path):
    """``python -m bench --smoke``: every benchmark (B1-B8) through the same CLI and stack as a real run, at the
    smallest sizes, so a refactor that breaks one (a file B2's child needs, a renamed function) fails the suite.
    Counts and statuses only: the figures of a smoke run mean nothing."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--no-doc", "--results", str(out)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    for run in r["b1"]:
        mailbridge = next(row for row in run if row["design"].startswith("Mailbridge"))
        assert mailbridge["sent"] == mailbridge["emails"] > 0, run
    assert [row["name"] for row in r["b2"][:2]] == ["Mailbridge", "Mailbridge (no .pyc)"], r["b2"]
    for row in r["b2"][:2]:
        assert row["statuses"] == ["sent"] * row["runs"], row
    assert [sum(run["statuses"].values()) == run["statuses"].get("sent") for run in r["b3"]] == [True, True], r["b3"]
    assert r["b4"]["sent"] == r["b4"]["messages"] and r["b4"]["throttled_429"] == 0, r["b4"]
    assert r["b5"]["refreshed"] == r["b5"]["due"] > 0 and r["b5"]["still_due"] == 0, r["b5"]
    assert len(r["b6"]) == 4, r["b6"]
    for run in r["b6"]:
        assert run["statuses"] == {"sent": run["messages"]} and run["throttled_429"] == 0, run
    assert r["b7"]["emails"] > 0 and "setSecret" not in r["b7"]["kv_calls"], r["b7"]
    assert r["b7"]["sweep"]["refreshed"] == r["b7"]["sweep_due"] > 0 and r["b7"]["throttled"] == 0, r["b7"]
    b8 = r["b8"]
    assert b8["statuses"] == {"sent": sum(b8["statuses"].values())}, b8
    assert b8["min_lateness_s"] >= 0, b8  # a scheduled message is never sent before its send_at
    assert b8["parked_left"] == b8["parked"] and b8["mailboxes"] == 2, b8
