"""Outlook throttling and fault injection on the emulated Graph."""

from __future__ import annotations

import threading

import pytest
import requests

from tests import emulator_graph_support as support
from tests.emulator_graph_support import GraphKit, unique

graph_kit = support.graph_kit
graph_limits = support.graph_limits


def test_fifth_concurrent_request_gets_429(graph_kit: GraphKit, graph_limits, emulator_admin) -> None:
    graph_limits.update({"concurrency_hold_ms": 1000})
    token = graph_kit.token("alice")
    barrier = threading.Barrier(5)
    results: list[requests.Response] = []
    lock = threading.Lock()

    def worker() -> None:
        session = graph_kit.tenant.http()
        session.get(f"{graph_kit.base}/_emulator/health", timeout=30)  # TLS handshake done up front
        message = graph_kit.simple(unique())
        barrier.wait()
        resp = session.post(
            f"{graph_kit.base}/v1.0/me/sendMail",
            json={"message": message},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        with lock:
            results.append(resp)
        session.close()

    before = emulator_admin.counters("graph.throttled").get("graph.throttled", 0)
    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes == [202, 202, 202, 202, 429]
    [throttled] = [r for r in results if r.status_code == 429]
    assert int(throttled.headers["Retry-After"]) >= 1
    error = throttled.json()["error"]
    assert error["code"] == "ApplicationThrottled" and "MailboxConcurrency" in error["message"]
    stats = emulator_admin.graph_stats()
    assert stats["max_concurrency"][graph_kit.addr("alice").lower()] == 5
    assert emulator_admin.counters("graph.throttled")["graph.throttled"] == before + 1


def test_sequential_client_never_exceeds_one(graph_kit: GraphKit, emulator_admin) -> None:
    token = graph_kit.token("bob")
    for _ in range(3):
        assert graph_kit.send(token, graph_kit.simple()).status_code == 202
    assert emulator_admin.graph_stats()["max_concurrency"][graph_kit.addr("bob").lower()] == 1


def test_message_rate_limit_scaled_and_window_passes(graph_kit: GraphKit, emulator_admin) -> None:
    emulator_admin.graph_limits(messages_per_window=3, message_window_s=60)
    try:
        token = graph_kit.token("alice", lifetime_s=7200)
        for _ in range(3):
            assert graph_kit.send(token, graph_kit.simple()).status_code == 202
        key = unique()
        resp = graph_kit.send(token, graph_kit.simple(key))
        assert resp.status_code == 429
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        assert resp.json()["error"]["code"] == "ApplicationThrottled"
        assert emulator_admin.deliveries(key=key)["count"] == 0  # a refused send is not sent
        other = graph_kit.token("bob")  # limits are per mailbox
        assert graph_kit.send(other, graph_kit.simple()).status_code == 202
        emulator_admin.advance_clock(61)
        assert graph_kit.send(token, graph_kit.simple(key)).status_code == 202
        assert emulator_admin.deliveries(key=None)["count"] >= 5
    finally:
        emulator_admin.reset_graph_limits()


def test_request_rate_and_recipient_limits(graph_kit: GraphKit, graph_limits) -> None:
    graph_limits.update({"requests_per_window": 4, "request_window_s": 10, "recipients_per_window": 3})
    token = graph_kit.token("alice", lifetime_s=7200)
    three = [{"emailAddress": {"address": f"r{i}@x.example"}} for i in range(3)]
    assert graph_kit.send(token, graph_kit.simple(toRecipients=three)).status_code == 202
    resp = graph_kit.send(token, graph_kit.simple())
    assert resp.status_code == 202, "over the recipient rate limit Exchange accepts and NDRs (test_emulator_ndr.py)"
    graph_kit.send(token, graph_kit.simple())
    graph_kit.send(token, graph_kit.simple())
    resp = graph_kit.send(token, graph_kit.simple())
    assert resp.status_code == 429 and "RequestRate" in resp.json()["error"]["message"]
    assert 1 <= int(resp.headers["Retry-After"]) <= 10


def test_limits_admin_api_validates(emulator_admin) -> None:
    from emulator.client import EmulatorAdminError

    with pytest.raises(EmulatorAdminError):
        emulator_admin.graph_limits(no_such_limit=1)
    defaults = emulator_admin.reset_graph_limits()
    assert defaults["max_concurrency"] == 4 and defaults["messages_per_window"] == 30
    assert defaults["requests_per_window"] == 10_000 and defaults["recipients_per_window"] == 10_000


def test_fault_429_and_503_on_send_mail(graph_kit: GraphKit, emulator_admin) -> None:
    token = graph_kit.token("alice")
    key = unique()
    emulator_admin.add_fault("graph.sendMail", "429", count=1, retry_after=7)
    resp = graph_kit.send(token, graph_kit.simple(key))
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
    assert resp.headers["request-id"]
    emulator_admin.add_fault("graph.sendMail", "503", count=1)
    assert graph_kit.send(token, graph_kit.simple(key)).status_code == 503
    assert emulator_admin.deliveries(key=key)["count"] == 0
    assert graph_kit.send(token, graph_kit.simple(key)).status_code == 202
    assert emulator_admin.deliveries(key=key)["count"] == 1


def test_fault_504_after_applies_the_send(graph_kit: GraphKit, emulator_admin) -> None:
    token = graph_kit.token("alice")
    key = unique()
    emulator_admin.add_fault("graph.sendMail", "504_after", count=1)
    resp = graph_kit.send(token, graph_kit.simple(key))
    assert resp.status_code == 504
    # The mail went out although the client saw a gateway timeout: exactly the duplicate trap.
    assert len(emulator_admin.sent_items(graph_kit.addr("alice"), key=None)) >= 1
    assert [m["subject"] for m in emulator_admin.sent_items(graph_kit.addr("alice"))].count(key) == 1
    assert graph_kit.send(token, graph_kit.simple(key)).status_code == 202  # fault used up
    assert [m["subject"] for m in emulator_admin.sent_items(graph_kit.addr("alice"))].count(key) == 2


def test_fault_reset_drops_the_connection(graph_kit: GraphKit, emulator_admin) -> None:
    token = graph_kit.token("alice")
    key = unique()
    emulator_admin.add_fault("graph.sendMail", "reset", count=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        graph_kit.send(token, graph_kit.simple(key))
    assert emulator_admin.deliveries(key=key)["count"] == 0
    assert graph_kit.send(token, graph_kit.simple(key)).status_code == 202
