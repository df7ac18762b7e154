"""Disconnect still wins (issue 18 goal 2): the sender acts on a connection row it read up to
``shared.tokens.store.CONNECTION_CACHE_S`` seconds ago, so a disconnect or ``reauth_required`` written by one
instance must stop the sends of every other instance within that bound.

Two processes on one storage account: this test's process (instance A: the HTTP disconnect, or TokenService
marking the grant dead) and devhost (instance B, tests/workers/cache_host.py: the queue function). B sends
one message first, so it holds the connection row and the access token in memory; then A changes the row, and
messages are enqueued every half second for the bound and a few seconds more. Every message enqueued later
than the bound after the change must end without a Graph call. Nothing times a request: the test counts
Graph deliveries and reads each message's final status."""

from __future__ import annotations

import json
import os
import time

import pytest

from bench.devhost_process import DevhostProcess, DevhostTimings, devhost_settings
from shared.tokens.store import CONNECTION_CACHE_S
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)

AFTER_S = CONNECTION_CACHE_S + 3.0  # keep enqueueing this long after the change
EVERY_S = 0.5


@pytest.mark.slow
@pytest.mark.parametrize("change", ["disconnect", "reauth_required"])
def test_a_disconnect_on_one_instance_stops_sends_on_another_within_the_cache_bound(send_kit, tmp_path, change):
    kit = send_kit()
    cid = kit.connect("alice")
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps(devhost_settings(kit, {}), indent=2))
    host = DevhostProcess(settings, tmp_path, DevhostTimings(), {**os.environ, **kit.mb.env}, args=("--no-timers",))
    host.module = "tests.workers.cache_host"
    admin = kit.mb.admin
    try:
        host.start()
        warm = kit.message(cid)
        kit.put(warm)
        assert kit.wait_final([(cid, warm["id"])])[(cid, warm["id"])].status == "sent"  # B holds row + token
        if change == "disconnect":
            gone = kit.mb.http("delete_connection", "DELETE", route_params={"connection_id": cid})
            assert gone.status_code == 200, gone.get_body()
        else:  # what TokenService does on instance A when Entra says the grant is dead
            conn = kit.services.connections.get(cid)
            conn.status = "reauth_required"
            kit.services.connections.save(conn, index=False)
        changed = time.monotonic()
        enqueued: list[tuple[float, dict]] = []
        while time.monotonic() - changed < AFTER_S:
            msg = kit.message(cid)
            kit.put(msg)
            enqueued.append((time.monotonic() - changed, msg))
            time.sleep(EVERY_S)
        records = kit.wait_final([(cid, m["id"]) for _, m in enqueued])
    finally:
        host.stop()
    late = [(at, m) for at, m in enqueued if at > CONNECTION_CACHE_S]
    assert len(late) >= 4, "the run covers the time after the bound"
    expected = ("rejected", "unknown_connection") if change == "disconnect" else ("failed", "reauth_required")
    for at, m in late:
        rec = records[(cid, m["id"])]
        assert (rec.status, rec.error_code) == expected, (at, rec.status, rec.error_code)
        assert rec.attempts == 0 and admin.deliveries(key=m["id"])["count"] == 0, f"sent {at:.1f}s after the change"
    early = sum(1 for _, m in enqueued if records[(cid, m["id"])].status == "sent")
    print(
        f"{change}: {len(enqueued)} messages over {AFTER_S:.0f}s, {early} sent within the {CONNECTION_CACHE_S}s bound"
    )
