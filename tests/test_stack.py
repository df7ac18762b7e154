"""`python -m stack up` (what `make run` runs) brings up Azurite + emulator + app from nothing, and stops it all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from stack.local import MARKERS, pid_alive

REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout}s")


def run_stack(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stack", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_stack_up_serves_health_and_sample_page_then_stops_everything(tmp_path):
    run_dir = tmp_path / "run"
    ready = tmp_path / "ready.json"
    log = open(tmp_path / "stack.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "stack", "up", "--port", "0", "--run-dir", str(run_dir), "--ready-file", str(ready)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    pids: dict[str, int] = {}
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, 120, "stack ready file")
        assert proc.poll() is None, (tmp_path / "stack.log").read_text()
        info = json.loads(ready.read_text())
        pids = info["pids"]
        assert set(pids) == {"azurite", "emulator", "devhost", "supervisor"}
        assert pids["supervisor"] == proc.pid

        http = requests.Session()
        http.trust_env = False
        health = http.get(info["base_url"] + "/api/health", timeout=10)
        assert health.status_code == 200 and health.json()["ok"] is True
        page = http.get(info["ui_url"], timeout=10)
        assert page.status_code == 200 and '<button id="connect"' in page.text
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]

        # The settings file holds the real local values; the function key works on a function-level route.
        values = json.loads((run_dir / "local.settings.json").read_text())["Values"]
        assert values["PUBLIC_BASE_URL"] == info["base_url"] and values["ENABLE_SAMPLE_UI"] == "true"
        assert Path(values["MAILBRIDGE_CA_BUNDLE"]).is_file()
        link = http.post(
            info["base_url"] + "/api/connections",
            json={"user_ref": "u-1", "return_url": info["ui_url"]},
            headers={"x-functions-key": info["function_key"]},
            timeout=10,
        )
        assert link.status_code == 201, link.text
        assert http.post(info["base_url"] + "/api/connections", json={}, timeout=10).status_code == 401

        # The emulator is seeded: the demo users exist and the mailbox viewer answers over verified TLS.
        emu = requests.Session()
        emu.trust_env = False
        emu.verify = info["emulator_ca_file"]
        boxes = emu.get(info["emulator_url"] + "/_emulator/mailboxes", timeout=10).json()["mailboxes"]
        addresses = {b["address"] for b in boxes}
        assert {"alice@contoso.example", "bob@contoso.example", "team@contoso.example"} <= addresses
        assert emu.get(info["emulator_url"] + "/_emulator/ui/mailboxes", timeout=10).status_code == 200

        # A second `up` on the same run dir refuses and says so.
        second = run_stack("up", "--port", "0", "--run-dir", str(run_dir))
        assert second.returncode == 1 and "already running" in second.stderr

        down = run_stack("down", "--run-dir", str(run_dir))
        assert down.returncode == 0 and "stopped" in down.stdout
        assert proc.wait(30) == 0
        for name, pid in pids.items():
            wait_for(lambda pid=pid, name=name: not pid_alive(pid, MARKERS[name]), 15, f"{name} stopped")
        assert not (run_dir / "stack.json").exists()
        with pytest.raises(requests.ConnectionError):
            http.get(info["base_url"] + "/api/health", timeout=2)
    finally:
        log.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        for name, pid in pids.items():
            if pid_alive(pid, MARKERS[name]):
                os.killpg(pid, signal.SIGKILL)
