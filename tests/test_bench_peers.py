"""Smoke test of the peer benchmarks (bench/b1_peers.py, bench/b2_cold.run_peers): msgraph-sdk and O365 send
through the emulator from their own clients. Needs .venv-bench (bench/setup.sh); skipped without it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench import b1_peers, b2_cold

pytestmark = pytest.mark.skipif(not b1_peers.BENCH_PY.exists(), reason=".venv-bench missing (bash bench/setup.sh)")


@pytest.fixture
def peer_stack(emulator, emulator_admin, emu_tenant):
    """What the peer benchmarks use of a BenchStack, on the test session's emulator."""
    return SimpleNamespace(emulator=emulator, admin=emulator_admin, tenant=lambda users: emu_tenant(users=users))


def test_b1_peers_send_every_email_with_one_graph_call_and_no_token_call(peer_stack):
    rows = b1_peers.run_peers(peer_stack, emails=6, mailboxes=2)
    assert [r["design"] for r in rows] == [design for _, _, design in b1_peers.PEERS], b1_peers.PEER_NOTES
    for row in rows:
        assert row.keys() >= {
            "design",
            "emails",
            "mailboxes",
            "sent",
            "graph_calls",
            "token_calls",
            "refresh_grants",
            "kv_ops",
            "wall_s",
        }
        # The function/host split (CPU, Storage) is Mailbridge's own: peers run in their own process.
        assert all(
            row[k] is None for k in ("function_cpu_ms", "host_cpu_ms", "function_storage", "host_storage") if k in row
        ), row
        assert row["sent"] == 6 and row["graph_calls"] == 6, row
        assert row["token_calls"] == 0 and row["kv_ops"] == 0, "tokens from connect are still valid: " + str(row)


def test_b2_peers_cold_start_sends(peer_stack):
    results = b2_cold.run_peers(peer_stack, runs=1)
    assert [r["name"] for r in results] == ["msgraph-sdk", "O365"], b2_cold.PEER_NOTES
    for r in results:
        assert r["statuses"] == ["sent"] and 0 < r["import_s"] < r["first_send_s"], r
        assert 10 < r["peak_rss_mb"] < 1000, r
