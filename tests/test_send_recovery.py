"""What the long soak found (docs/reliability.md, bugs 11-14): failures outside Graph must never leave a message
without a final record. Key Vault refusing a stale credential and the token endpoint failing are transient;
whatever still makes the function fail ends, via the poison queue, ``failed`` (or ``unknown``) with an event."""

from __future__ import annotations

import json
import time

from shared.send.deliveries import Delivery
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)


def test_key_vault_refusing_a_token_it_no_longer_accepts_is_retried_with_a_new_credential(send_kit):
    """BUG 11: after Key Vault's clock passed our cached vault token's expiry (AKV10032, 401), the SDK's raw
    ClientAuthenticationError failed the queue function five times and the message went to poison ``queued``."""
    kit = send_kit()
    cid = kit.connect("alice")
    kit.services.token_caches.read(kit.services.connections.get(cid).secret_name)  # a vault token is now cached
    kit.mb.admin.advance_clock(2 * 86400)  # Key Vault (and Entra) now consider every issued token expired
    try:
        kit.services.tokens.forget(cid)
        msg = kit.message(cid)
        first = kit.services.sender.process(msg, "q-kv-401")
        # MSAL judges the cached access token on real time, Graph on its own clock: Graph's 401 makes the
        # sender redeem the refresh token and come back in a second (the designed path). No raw SDK error.
        assert first.status == "queued" and first.error.extra.get("token_rejected"), first
        second = kit.services.sender.process(msg, "q-kv-401")
    finally:
        kit.mb.admin.reset_clock()
    assert second.status == "sent", (second, second.error and second.error.detail)


def test_a_token_endpoint_5xx_during_a_refresh_is_a_transient_reschedule(send_kit):
    """BUG 12: MSAL raises MsalServiceError (instead of returning an error) for a 5xx from the token endpoint."""
    kit = send_kit()
    cid = kit.connect("alice")
    kit.mb.admin.add_fault("entra.token", "503", count=1)
    try:
        kit.services.tokens.forget(cid)
        kit.services.tokens.refresh(kit.services.connections.get(cid), force=True)
    except Exception as exc:  # noqa: BLE001 - the type is the assertion
        assert type(exc).__name__ == "TemporarilyUnavailable" and exc.transient, exc
    else:
        raise AssertionError("the injected 503 did not fire")
    finally:
        kit.mb.admin.clear_faults("entra.token")


def test_a_message_the_host_gives_up_on_ends_failed_with_an_event_not_queued(send_kit, monkeypatch):
    """BUG 13 (the safety net): a function that keeps failing for a reason we did not foresee sends the message to
    ``<queue>-poison`` after maxDequeueCount; the poison function records it ``failed`` (processing_failed)."""
    kit = send_kit()
    cid = kit.connect("alice")
    real = kit.services.connections.find

    def broken(connection_id):
        raise RuntimeError("an unforeseen bug")

    monkeypatch.setattr(kit.services.connections, "find", broken)
    msg = kit.message(cid)
    with kit.listener(max_dequeue_count=2, visibility_timeout=0.2) as listener:
        kit.put(msg)
        kit.wait_until(lambda: listener.poisoned >= 1, timeout=60)
        monkeypatch.setattr(kit.services.connections, "find", real)
        rec = kit.wait_final([(cid, msg["id"])], timeout=60)[(cid, msg["id"])]
    assert rec.status == "failed" and rec.error_code == "processing_failed", rec
    assert [e["type"] for e in kit.events_for(msg["id"])] == ["mailbridge.message.failed"]
    assert rec.attempts == 0, "no attempt reached Graph"


def test_the_poison_function_ends_a_row_left_sending_unknown_and_leaves_final_rows_alone(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    sender = kit.services.sender
    stuck = kit.message(cid)
    row = Delivery(cid, stuck["id"], status="sending", attempts=1, lease_until=time.time() - 1, created_at=time.time())
    kit.services.deliveries.create(row)
    assert sender.handle_poisoned(json.dumps(stuck), "p1").status == "unknown"
    done = kit.message(cid)
    assert sender.process(done, "q").status == "sent"
    assert sender.handle_poisoned(json.dumps(done), "p2").status == "duplicate"
    assert kit.record(cid, done["id"]).status == "sent"
    assert sender.handle_poisoned(b"\xff not json", "p3").status == "rejected"
