"""Issue 14, "prove it, all together": messages through the real queue path while the app's own credential
is refused for a period and the managed identity endpoint is down for another (with an instance recycled in
it, so nothing is cached), with the emulator's Graph strictness on (at most 5 internetMessageHeaders, a
transport delay before Sent Items). Every message ends sent exactly once or with a reason, nothing is
poisoned, and no connection is marked ``reauth_required`` by an operator's or the platform's failure.

Draft mode (Mail.ReadWrite), with two messages of two 1.6 MB files each (Graph's 3 MB upload-session floor).
Short in the suite (about 30 messages, 4 mailboxes, seconds of outage); the reconciliation is the soak's
(bench/soak.py): delivery log and Sent Items against the delivery records.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid

from bench.soak import Report, reconcile, wait_final
from shared.base.identity import MsalFactory
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)

USERS = ("p0", "p1", "p2", "p3")
TRANSPORT_DELAY_S = 2.0


def test_credential_outages_lose_nothing_and_mark_no_connection(send_kit, secretless, emulator, emulator_admin):
    # Draft mode (Mail.ReadWrite): the idempotent path, and the one that takes attachments.
    kit = send_kit(users=USERS, ENABLE_MAIL_READWRITE="true")
    secretless(kit.mb)
    # Short-lived access tokens: every send redeems the refresh token, so every attempt meets the outages.
    emulator.state.entra.settings.access_token_lifetime_s = 120
    connections = {user: kit.connect(user) for user in USERS}
    emulator_admin.graph_limits(transport_delay_s=TRANSPORT_DELAY_S)
    run = uuid.uuid4().hex[:6]
    sent_to: dict[str, tuple[str, str]] = {}

    def put(n: int, start: int) -> None:
        for i in range(start, start + n):
            user = USERS[i % len(USERS)]
            headers = {f"x-p{h}": str(i) for h in range(4)}  # 4 producer headers + x-mailbridge-id = Graph's 5
            msg = kit.message(connections[user], id=f"cred-{run}-{i:03d}", subject=f"Cred {i}", headers=headers)
            sent_to[msg["id"]] = (connections[user], kit.address(user))
            kit.put(msg)

    refused_before, sessions_before = _refused(emulator_admin), _upload_sessions(emulator_admin)
    started = time.monotonic()
    with kit.listener(visibility_timeout=2.0) as listener:
        # Phase 1: Entra refuses the app's credential (an expired client secret / FIC) for every refresh.
        emulator_admin.entra_settings(app_credential_error={"code": 7000222, "grants": ["refresh_token"]})
        put(16, 0)
        for n in range(2):  # two files under 3 MB that together exceed one Graph request: no upload session
            user = USERS[n]
            files = [
                {"name": f"f{i}.bin", "content_base64": base64.b64encode(os.urandom(1_600_000)).decode()}
                for i in range(2)
            ]
            big = kit.message(connections[user], id=f"cred-{run}-big{n}", attachments=files)
            sent_to[big["id"]] = (connections[user], kit.address(user))
            assert kit.mb.http("enqueue_message", "POST", body=big).status_code == 202
        kit.wait_until(lambda: _app_credential_events(kit), timeout=60)
        kit.wait_until(lambda: _refused(emulator_admin) - refused_before >= 4, timeout=60)
        # Phase 2: the operator fixed the credential, but the managed identity endpoint is down and no
        # managed-identity token is cached any more (as on a fresh instance: MSAL's assertion and Key Vault's
        # credential must both ask the endpoint). It lasts until a message has had to wait for it.
        emulator_admin.entra_settings(app_credential_error=None)
        emulator_admin.add_fault("msi.token", "503", retry_after=0)
        _cold_credentials(kit.services, connections.values())
        put(12, 16)
        kit.wait_until(lambda: _waiting_on(kit, sent_to, "temporarily_unavailable"), timeout=90)
        emulator_admin.clear_faults()  # the platform recovered
        over_cap = kit.message(
            connections[USERS[0]], id=f"cred-{run}-headers", headers={f"x-h{h}": "v" for h in range(6)}
        )
        sent_to[over_cap["id"]] = (connections[USERS[0]], kit.address(USERS[0]))
        kit.put(over_cap)  # more headers than Graph takes: refused (at intake, or by Graph), never sent
        records = wait_final(kit, sent_to, started + 120)
        poisoned, failed = listener.poisoned, listener.failed
    emulator.state.clock.advance(TRANSPORT_DELAY_S + 1)  # transport moves every submitted item to Sent Items
    report = Report(len(sent_to), len(USERS), 0, seconds=time.monotonic() - started)
    reconcile(kit, sent_to, records, report)
    print(report.summary())
    assert not report.lost, report.lost
    assert not report.duplicated, report.duplicated
    assert not report.misreported, report.misreported
    assert not report.unexplained, report.unexplained
    refused = records[over_cap["id"]]
    assert refused.status in ("rejected", "failed") and refused.error_code, refused
    assert report.statuses.get("sent") == len(sent_to) - 1, report.summary()
    assert {records[mid].mode for mid in sent_to if mid != over_cap["id"]} == {"draft"}
    assert all(kit.mb.admin.drafts(kit.address(user)) == [] for user in USERS), "no draft left behind"
    assert _upload_sessions(emulator_admin) == sessions_before, "files under 3 MB never get an upload session"
    assert poisoned == 0 and failed == 0, "outages are reschedules, never host retries into the poison queue"
    for cid in connections.values():
        assert kit.services.connections.get(cid).status == "connected"
    events = kit.events()
    assert not [e for e in events if e["type"] == "mailbridge.connection.reauth_required"]
    assert emulator_admin.counters("faults.").get("faults.msi.token.503", 0) > 0, "the outage did happen"
    resp = kit.mb.http("health")
    assert resp.status_code == 200, json.loads(resp.get_body())


def _app_credential_events(kit) -> list[dict]:
    return [e for e in kit.events() if e["type"] == "mailbridge.app.credential_failed"]


def _refused(emulator_admin) -> int:
    return emulator_admin.counters("entra.").get("entra.app_credential_refused", 0)


def _waiting_on(kit, sent_to: dict[str, tuple[str, str]], code: str) -> bool:
    """Whether some message is queued again because of ``code`` (its record carries the error until it is sent)."""
    return any(
        (rec := kit.record(cid, mid)) is not None and rec.status == "queued" and rec.error_code == code
        for mid, (cid, _) in sent_to.items()
    )


def _cold_credentials(services, connection_ids) -> None:
    """Drop every cached credential and token of this process (what a recycled instance starts with), without
    a new process identity (which the shared per-mailbox budget would make wait for the old one's share)."""
    services.token_caches.forget_keys()  # new Key Vault credentials (their own managed-identity token), no data keys
    services.__dict__["msal"] = services.tokens.msal = MsalFactory(services.settings, services.http)
    for cid in connection_ids:
        services.tokens.forget(cid)


def _upload_sessions(emulator_admin) -> int:
    return emulator_admin.counters("calls.graph.").get("calls.graph.createUploadSession", 0)
