"""`python -m stack up` (what `make run` runs) brings up Azurite + emulator + app from nothing, and stops it all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

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


def _up(run_dir: Path, port: int, ready: Path, *extra: str, env: dict[str, str] | None = None) -> dict:
    ready.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "stack", "up", "--no-wait", "--port", str(port), "--run-dir", str(run_dir)]
        + ["--ready-file", str(ready), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(ready.read_text())


def _connect_and_send(info: dict, user: str = "alice@contoso.example") -> str:
    """The whole flow over HTTP as a backend + browser would: link, start (cookie), sign-in, callback, claim, test."""
    from emulator.client import EmulatorAdmin

    key = {"x-functions-key": info["function_key"]}
    browser = requests.Session()
    browser.trust_env = False
    link = browser.post(
        info["base_url"] + "/api/connections",
        json={"user_ref": "restart-user", "return_url": info["ui_url"]},
        headers=key,
        timeout=10,
    ).json()["connect_url"]
    start = browser.get(link, allow_redirects=False, timeout=10)
    assert start.status_code == 302 and browser.cookies, start.text
    callback = EmulatorAdmin(info["emulator_url"], info["emulator_ca_file"]).complete_authorize(
        start.headers["Location"], user
    )
    back = browser.get(callback, allow_redirects=False, timeout=10)
    query = dict(parse_qsl(urlsplit(back.headers["Location"]).query))
    assert query["status"] == "connected", query
    claimed = browser.post(
        info["base_url"] + "/api/connections/claim",
        json={"result": query["result"], "user_ref": "restart-user"},
        headers=key,
        timeout=10,
    )
    assert claimed.status_code == 200, claimed.text
    return claimed.json()["connection_id"]


def _send_test(info: dict, cid: str) -> dict:
    """A test send; when it was paced (a fresh instance waits for its share of the mailbox's budget), its
    final record through the queue."""
    http = requests.Session()
    http.trust_env = False
    key = {"x-functions-key": info["function_key"]}
    record = http.post(f"{info['base_url']}/api/connections/{cid}/test", json={}, headers=key, timeout=30).json()
    if record.get("status") != "queued":
        return record

    def final():
        now = http.get(record["status_url"], headers=key, timeout=10).json()
        return now if now["status"] not in ("queued", "sending") else None

    return wait_for(final, 90, "the paced test message")


@pytest.mark.slow
def test_a_restarted_stack_keeps_connections_ports_keys_and_takes_settings_from_the_environment(tmp_path):
    from stack.azurite import free_port

    run_dir, ready, port = tmp_path / "run", tmp_path / "ready.json", free_port()
    try:
        first = _up(run_dir, port, ready)
        values = json.loads((run_dir / "local.settings.json").read_text())["Values"]
        assert values["ENABLE_SHARED_MAILBOXES"] == "true", "the local demo's shared mailbox works as advertised"
        cid = _connect_and_send(first)
        assert _send_test(first, cid)["status"] == "sent"
        assert run_stack("down", "--run-dir", str(run_dir)).returncode == 0

        second = _up(run_dir, port, ready, env={"ENABLE_SHARED_MAILBOXES": "false", "REFRESH_AFTER_DAYS": "30"})
        for key in ("base_url", "emulator_url", "emulator_ca_file", "function_key", "storage"):
            assert second[key] == first[key], key
        assert second["overridden"] == ["ENABLE_SHARED_MAILBOXES", "REFRESH_AFTER_DAYS"]
        values = json.loads((run_dir / "local.settings.json").read_text())["Values"]
        assert (values["ENABLE_SHARED_MAILBOXES"], values["REFRESH_AFTER_DAYS"]) == ("false", "30")
        sent = _send_test(second, cid)  # the connection made before the restart still sends
        assert sent["status"] == "sent", sent
        assert run_stack("down", "--run-dir", str(run_dir)).returncode == 0

        fresh = _up(run_dir, port, ready, "--fresh")
        assert fresh["function_key"] != first["function_key"]
        gone = requests.get(
            f"{fresh['base_url']}/api/connections/{cid}", headers={"x-functions-key": fresh["function_key"]}, timeout=10
        )
        assert gone.status_code == 404
    finally:
        run_stack("down", "--run-dir", str(run_dir))
