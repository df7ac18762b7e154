"""The dev host honours host.json and the decorators the way the Functions host does (real Azurite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from azure.storage.queue import QueueClient

from devhost.config import HostConfig, LocalSettings, parse_timespan, resolve_setting_refs
from devhost.routing import Route
from devhost.timers import ncrontab_to_croniter

REPO = Path(__file__).resolve().parent.parent
TEST_APP = Path(__file__).resolve().parent / "devhost_app"


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def devhost(azurite, tmp_path_factory):
    out = tmp_path_factory.mktemp("devhost-out")
    queue = "devhost-" + os.urandom(4).hex()
    env = {
        **os.environ,
        "AzureWebJobsStorage": azurite.connection_string,
        "TEST_QUEUE": queue,
        "DEVHOST_TEST_OUT": str(out),
        "PYTHONPATH": str(REPO),
    }
    ready = out / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "devhost", "--app-dir", str(TEST_APP), "--port", "0", "--ready-file", str(ready)],
        cwd=REPO,
        env=env,
        stdout=open(out / "devhost.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, timeout=30)
        assert proc.poll() is None, (out / "devhost.log").read_text()
        info = json.loads(ready.read_text())
        yield {"url": info["base_url"], "out": out, "queue": queue, "conn": azurite.connection_string}
    finally:
        proc.terminate()
        proc.wait(15)


def test_function_route_requires_a_key(devhost):
    url = devhost["url"] + "/api/items/42"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, headers={"x-functions-key": "wrong"}, timeout=5).status_code == 401
    ok = requests.get(url, params={"q": "x"}, headers={"x-functions-key": "fkey-1"}, timeout=5)
    assert ok.status_code == 200
    assert ok.json() == {"id": "42", "method": "GET", "q": "x"}
    assert requests.get(url, params={"code": "fkey-2"}, timeout=5).status_code == 200
    assert requests.get(url, params={"code": "mkey"}, timeout=5).status_code == 200
    assert requests.delete(url, params={"code": "fkey-1"}, timeout=5).json()["method"] == "DELETE"


def test_routing_methods_prefix_and_errors(devhost):
    base = devhost["url"]
    assert requests.post(base + "/api/items/42", params={"code": "fkey-1"}, timeout=5).status_code == 404
    assert requests.get(base + "/items/42", params={"code": "fkey-1"}, timeout=5).status_code == 404
    assert requests.get(base + "/api/nope", timeout=5).status_code == 404
    special = requests.get(base + "/api/items/special", timeout=5)
    assert special.status_code == 200 and special.text == "literal route wins"
    echo = requests.post(base + "/api/open", data=b"payload", timeout=5)
    assert echo.status_code == 201 and echo.content == b"payload" and echo.headers["X-Echo"] == "yes"
    assert echo.headers["Content-Type"].startswith("text/plain")
    assert requests.get(base + "/api/boom", timeout=5).status_code == 500


def test_admin_level_needs_the_master_key(devhost):
    url = devhost["url"] + "/api/adminonly"
    assert requests.get(url, params={"code": "fkey-1"}, timeout=5).status_code == 401
    assert requests.get(url, headers={"x-functions-key": "mkey"}, timeout=5).text == "admin"


def test_queue_message_from_the_plain_sdk_reaches_the_function(devhost):
    client = QueueClient.from_connection_string(devhost["conn"], devhost["queue"])
    client.send_message('{"hello": "world"}')
    seen = wait_for(
        lambda: [r for r in read_jsonl(devhost["out"] / "queue.jsonl") if r["body"] == '{"hello": "world"}']
    )
    assert seen[0]["dequeue_count"] == 1
    wait_for(lambda: client.get_queue_properties().approximate_message_count == 0)


def test_failing_message_is_retried_after_visibility_timeout_then_poisoned(devhost):
    client = QueueClient.from_connection_string(devhost["conn"], devhost["queue"])
    poison = QueueClient.from_connection_string(devhost["conn"], devhost["queue"] + "-poison")
    body = "fail-" + os.urandom(3).hex()
    client.send_message(body)
    peeked = wait_for(lambda: [m for m in poison.peek_messages(max_messages=32) if m.content == body], timeout=40)
    assert len(peeked) == 1
    attempts = [r for r in read_jsonl(devhost["out"] / "queue.jsonl") if r["body"] == body]
    assert [a["dequeue_count"] for a in attempts] == [1, 2, 3]  # maxDequeueCount = 3
    gaps = [b["t"] - a["t"] for a, b in zip(attempts, attempts[1:], strict=False)]
    # visibilityTimeout is 2 s: a retry can never come sooner than that (a lower bound, not a speed claim).
    assert all(gap >= 1.8 for gap in gaps), gaps


def test_timer_fires_on_startup_and_on_schedule_and_by_admin_call(devhost):
    timer_log = devhost["out"] / "timer.jsonl"
    wait_for(lambda: len(read_jsonl(timer_log)) >= 3, timeout=15)
    before = len(read_jsonl(timer_log))
    denied = requests.post(devhost["url"] + "/admin/functions/ticker", params={"code": "fkey-1"}, timeout=5)
    assert denied.status_code == 401
    ran = requests.post(devhost["url"] + "/admin/functions/ticker", headers={"x-functions-key": "mkey"}, timeout=5)
    assert ran.status_code == 202
    wait_for(lambda: len(read_jsonl(timer_log)) > before)


def test_a_second_instance_of_the_app_does_not_run_the_timer_too(devhost, tmp_path):
    """The timer singleton: two devhosts of one app on one storage account, one runs each occurrence."""
    env = {**os.environ, "AzureWebJobsStorage": devhost["conn"], "TEST_QUEUE": devhost["queue"]}
    env.update(DEVHOST_TEST_OUT=str(devhost["out"]), PYTHONPATH=str(REPO))
    ready = tmp_path / "ready.json"
    second = subprocess.Popen(
        [sys.executable, "-m", "devhost", "--app-dir", str(TEST_APP), "--port", "0", "--ready-file", str(ready)],
        cwd=REPO,
        env=env,
        stdout=open(tmp_path / "second.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: ready.exists() or second.poll() is not None, timeout=30)
        started = time.time()
        time.sleep(7)  # three or four occurrences of */2 s
        runs = [r for r in read_jsonl(devhost["out"] / "timer.jsonl") if r["t"] > started]
    finally:
        second.terminate()
        second.wait(15)
    assert len(runs) >= 2, runs
    assert {r["pid"] for r in runs} != {second.pid}, "the first instance holds the lock"
    assert second.pid not in {r["pid"] for r in runs}, "the second instance skipped every occurrence"


def test_host_json_parsing(tmp_path):
    cfg = HostConfig.load(TEST_APP / "host.json")
    assert cfg.queues.batch_size == 4 and cfg.queues.new_batch_threshold == 2
    assert cfg.queues.visibility_timeout == 2 and cfg.queues.max_dequeue_count == 3
    assert cfg.queues.message_encoding == "none" and cfg.queues.max_polling_interval == 0.5
    defaults = HostConfig.load(tmp_path / "missing.json")
    assert defaults.queues.message_encoding == "base64" and defaults.queues.batch_size == 16
    (tmp_path / "bad.json").write_text('{"version": "2.0", "extensions": {"queues": {"batchSize": 64}}}')
    with pytest.raises(ValueError, match="batchSize"):
        HostConfig.load(tmp_path / "bad.json")
    assert parse_timespan("1.02:03:04", 0) == 93784
    with pytest.raises(ValueError):
        parse_timespan("5 minutes", 0)


def test_real_host_json_is_what_the_sender_expects():
    cfg = HostConfig.load(REPO / "host.json")
    assert cfg.queues.message_encoding == "none"  # producers drop plain JSON
    assert cfg.route_prefix == "api"


def test_ncrontab_schedules_are_six_field_utc():
    from croniter import croniter

    expr = ncrontab_to_croniter("0 30 2 * * *")
    nxt = croniter(expr, datetime(2026, 1, 1, 3, 0, tzinfo=UTC)).get_next(datetime)
    assert nxt == datetime(2026, 1, 2, 2, 30, tzinfo=UTC)
    every_ten = ncrontab_to_croniter("*/10 * * * * *")
    assert croniter(every_ten, datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC)).get_next(datetime).second == 10
    with pytest.raises(ValueError):
        ncrontab_to_croniter("0 0 * * *")


def test_settings_file_and_binding_expressions(tmp_path):
    (tmp_path / "local.settings.sample.json").write_text(
        '{"Values": {"A": "1", "B": "2"}, "Host": {"LocalHttpPort": 9}}'
    )
    loaded = LocalSettings.load(tmp_path)
    env = {"B": "from-shell"}
    loaded.apply(env)
    assert env == {"A": "1", "B": "from-shell"} and loaded.http_port == 9
    assert resolve_setting_refs("%A%-q", env) == "1-q"
    with pytest.raises(KeyError, match="MISSING"):
        resolve_setting_refs("%MISSING%", env)


def test_route_templates():
    route = Route.compile("connections/{id}/test", ["POST"], "function", None)
    assert route.match("/connections/abc/test") == {"id": "abc"}
    assert route.match("/connections/abc") is None
    optional = Route.compile("things/{id:int?}", None, "anonymous", None)
    assert optional.match("/things") == {} and optional.match("/things/7") == {"id": "7"}
    assert optional.match("/things/x") is None
