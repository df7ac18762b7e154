"""Emulator core: TLS trust, routing, counters, clock and fault injection over real HTTPS."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from emulator.core import Router
from emulator.state import Faults


def test_strict_session_trusts_the_emulator_ca(emulator, emu_http):
    resp = emu_http.get(f"{emulator.base_url}/_emulator/health", timeout=10)
    assert resp.status_code == 200
    assert resp.json()["base_url"] == emulator.base_url


def test_tls_fails_without_the_emulator_ca(emulator, tmp_path):
    session = requests.Session()
    session.trust_env = False  # system CA store only
    with pytest.raises(requests.exceptions.SSLError):
        session.get(f"{emulator.base_url}/_emulator/health", timeout=10)


def test_unknown_path_is_404_and_wrong_method_405(emulator, emu_http):
    assert emu_http.get(f"{emulator.base_url}/nope/nothing/here/at/all", timeout=10).status_code == 404
    assert emu_http.put(f"{emulator.base_url}/_emulator/health", timeout=10).status_code == 405


def test_router_is_case_insensitive_and_supports_path_params():
    router = Router()
    router.add("POST", "/v1.0/users/{user}/sendMail", "graph.userSendMail", lambda req, user: user)
    router.add("PUT", "/upload/{rest:path}", "graph.uploadChunk", lambda req, rest: rest)
    route, params = router.match("POST", "/V1.0/Users/Alice@X.example/SENDMAIL")
    assert route.name == "graph.userSendMail" and params == {"user": "Alice@X.example"}
    route, params = router.match("PUT", "/upload/a/b/c")
    assert params == {"rest": "a/b/c"}
    assert router.match("GET", "/upload/a") is False
    assert router.match("GET", "/elsewhere") is None


def test_counters_count_every_routed_call(emulator_admin):
    before = emulator_admin.counters("calls.admin.health").get("calls.admin.health", 0)
    for _ in range(3):
        emulator_admin.health()
    after = emulator_admin.counters("calls.admin.health")["calls.admin.health"]
    assert after - before == 3


def test_clock_advances_and_resets(emulator_admin):
    start = emulator_admin.clock()
    moved = emulator_admin.advance_clock(86400)
    assert moved["offset"] == pytest.approx(start["offset"] + 86400)
    assert moved["now"] - start["now"] >= 86400
    assert emulator_admin.reset_clock()["offset"] == 0


def test_fault_429_carries_retry_after_and_is_consumed(emulator_admin):
    emulator_admin.add_fault("admin.health", "429", count=1, retry_after=7)
    resp = emulator_admin.session.get(f"{emulator_admin.base_url}/_emulator/health", timeout=10)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
    assert emulator_admin.health()["ok"] is True  # count=1 is used up


def test_fault_503(emulator_admin):
    emulator_admin.add_fault("admin.heal*", "503", count=2)
    url = f"{emulator_admin.base_url}/_emulator/health"
    assert [emulator_admin.session.get(url, timeout=10).status_code for _ in range(3)] == [503, 503, 200]


def test_fault_504_after_applies_the_effect_first(emulator_admin):
    emulator_admin.add_fault("admin.tenants", "504_after", count=1)
    resp = emulator_admin.session.post(
        f"{emulator_admin.base_url}/_emulator/tenants", json={"tid": "504504aa-0000-4000-8000-000000000001"}
    )
    assert resp.status_code == 504
    assert emulator_admin.tenant("504504aa-0000-4000-8000-000000000001")["tid"].startswith("504504aa")


def test_fault_reset_drops_the_connection(emulator_admin):
    emulator_admin.add_fault("admin.health", "reset", count=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        emulator_admin.session.get(f"{emulator_admin.base_url}/_emulator/health", timeout=10)
    assert emulator_admin.health()["ok"]


def test_fault_latency_delays_the_answer(emulator_admin):
    emulator_admin.add_fault("admin.health", "latency", latency_ms=300, count=1)
    started = time.monotonic()
    emulator_admin.health()
    assert time.monotonic() - started >= 0.3


def test_rate_faults_are_reproducible_with_a_seed():
    def run() -> list[bool]:
        faults = Faults(seed=42)
        faults.add("graph.*", "503", rate=0.3)
        return [bool(faults.pick("graph.sendMail")) for _ in range(200)]

    first, second = run(), run()
    assert first == second
    assert 30 < sum(first) < 90


def test_faults_are_cleared_after_each_test_part1(emulator_admin):
    emulator_admin.add_fault("admin.health", "503")
    emulator_admin.advance_clock(1000)


def test_faults_are_cleared_after_each_test_part2(emulator_admin):
    assert emulator_admin.faults() == []
    assert emulator_admin.clock()["offset"] == 0


def test_python_m_emulator_runs_and_stops(tmp_path: Path):
    state_dir = tmp_path / "emu"
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", "0", "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        base_url = lines[0].strip().split("=", 1)[1]
        ca_file = lines[1].strip().split("=", 1)[1]
        info = json.loads((state_dir / "emulator.json").read_text())
        assert info["base_url"] == base_url and info["ca_file"] == ca_file and info["pid"] == proc.pid
        session = requests.Session()
        session.trust_env = False
        session.verify = ca_file
        assert session.get(f"{base_url}/_emulator/health", timeout=10).json()["ok"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
