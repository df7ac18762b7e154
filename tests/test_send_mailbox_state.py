"""One mailbox's (or one tenant's) trouble stays its own (issue 25 items 3 and 4), against the emulator's isolation
faults (docs/emulator.md): a Graph 401 that a fresh token does not cure costs one forced refresh, not a hundred;
a refusal about the mailbox becomes a state on its connection row (one event per episode), later messages fail
fast without calling Graph or wait for the next re-probe, the tenant's other mailboxes keep sending, and a
reconnect or a re-probe that Graph accepts brings the mailbox back.

Messages are processed with ``Sender.process`` (what the queue function runs), so each step is one attempt;
time passing is the mailbox-state policy's clock moved forward, not a sleep."""

from __future__ import annotations

import time
import uuid

import pytest

from shared.pacing.admission import CONSUMER_TENANT_ID
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)


def _count(kit, name: str) -> int:
    return kit.mb.admin.counters(name).get(name, 0)


def _process(kit, msg: dict):
    """One delivery of ``msg`` (a held message comes back this way after its delay)."""
    return kit.services.sender.process(msg, f"q-{uuid.uuid4().hex[:8]}")


def _later(kit, seconds: float) -> None:
    """From now on the mailbox-state policy (re-probe times, holds) lives ``seconds`` after the real time."""
    kit.services.mailbox_states.clock = lambda: time.time() + seconds


def _state_events(kit, cid: str, kind: str) -> list[dict]:
    kind = f"mailbridge.connection.{kind}"
    return [e for e in kit.events() if e["type"] == kind and e["data"]["connection_id"] == cid]


def _view(kit, cid: str) -> dict:
    return kit.mb.json(kit.mb.http("get_connection", route_params={"connection_id": cid}))


# --- item 3: a 401 that a fresh token does not cure -------------------------------------------------------------


def test_a_tenant_without_exchange_online_costs_one_forced_refresh_then_fails_fast(send_kit, emulator_admin):
    kit = send_kit()
    kit.services.sender.max_reschedules = 5  # before the fix: a forced refresh per retry, up to this bound
    kit.services.mailbox_states.first_probe_s = 3600.0
    cid = kit.connect("alice")
    other = emulator_admin.create_tenant("user", "work", domain=f"other{uuid.uuid4().hex[:6]}.example")
    kit.mb.kit.users["zoe"] = emulator_admin.create_user(other["tid"], f"zoe@{other['domain']}")
    zoe = kit.connect("zoe")  # another customer tenant, with Exchange Online
    kit.mb.admin.set_exchange_online(kit.mb.kit.tid, False)
    try:
        redemptions, sends = _count(kit, "entra.grant.refresh_token"), _count(kit, "calls.graph.sendMail")
        writes = kit.services.connections.get(cid).secret_writes
        first = kit.message(cid)
        outcome = _process(kit, first)
        while outcome.status == "queued":  # the retry with the fresh token
            outcome = _process(kit, first)
        assert outcome.status == "failed" and outcome.error.code == "mailbox_unavailable", outcome
        assert _count(kit, "entra.grant.refresh_token") - redemptions == 1, "one forced refresh for the message"
        assert kit.services.connections.get(cid).secret_writes - writes <= 1, "at most one token-cache write"
        assert _count(kit, "calls.graph.sendMail") - sends == 2, "the first try and the one with a fresh token"
        rec = kit.record(cid, first["id"])
        assert rec.status == "failed" and rec.error_code == "mailbox_unavailable" and rec.attempts == 2
        assert "OrganizationFromTenantGuidNotFound" in (rec.error_detail or "")

        # Later messages fail at once: no token redemption, no Graph call.
        later = [kit.message(cid) for _ in range(3)]
        for msg in later:
            out = _process(kit, msg)
            assert out.status == "failed" and out.error.code == "mailbox_unavailable"
        assert _count(kit, "entra.grant.refresh_token") - redemptions == 1
        assert _count(kit, "calls.graph.sendMail") - sends == 2
        (event,) = _state_events(kit, cid, "mailbox_unavailable")
        assert event["data"]["user_ref"] == "ref-alice" and event["data"]["state"] == "mailbox_unavailable"
        assert _view(kit, cid)["mailbox_state"]["state"] == "mailbox_unavailable"
        assert _view(kit, cid)["status"] == "connected", "the grant is fine: no reauth_required"
        # Another tenant sends as usual.
        assert _process(kit, kit.message(zoe)).status == "sent"
    finally:
        kit.mb.admin.set_exchange_online(kit.mb.kit.tid, True)

    # The way back: the tenant gets Exchange Online and the user reconnects.
    assert kit.connect("alice") == cid
    assert _view(kit, cid)["mailbox_state"] is None
    assert _process(kit, kit.message(cid)).status == "sent"


def test_two_messages_rejected_at_once_share_one_forced_refresh(send_kit):
    """The per-connection floor: the second message's 401 finds a refresh forced a moment ago (by any instance, the
    row says so) and uses its token instead of redeeming again."""
    kit = send_kit()
    kit.services.mailbox_states.first_probe_s = 3600.0
    cid = kit.connect("alice")
    kit.mb.admin.set_exchange_online(kit.mb.kit.tid, False)
    try:
        redemptions = _count(kit, "entra.grant.refresh_token")
        a, b = kit.message(cid), kit.message(cid)
        assert _process(kit, a).status == "queued" and _process(kit, b).status == "queued"
        assert _count(kit, "entra.grant.refresh_token") - redemptions == 1
        assert {_process(kit, a).status, _process(kit, b).status} == {"failed"}
        assert _count(kit, "entra.grant.refresh_token") - redemptions == 1
        assert len(_state_events(kit, cid, "mailbox_unavailable")) == 1, "one event for the episode"
    finally:
        kit.mb.admin.set_exchange_online(kit.mb.kit.tid, True)


def test_a_401_about_a_from_mailbox_fails_that_message_after_one_forced_refresh(send_kit):
    """Through /users/{from}/sendMail the refusal is about the ``from`` mailbox: a 401 that survives the fresh token
    fails the message (not a retry per attempt, each forcing a refresh) and leaves the connection's own state alone."""
    kit = send_kit(ENABLE_SHARED_MAILBOXES="true", SEND_AS_ENDPOINT="users")
    kit.services.sender.max_reschedules = 5  # before the fix: a retry (and a forced refresh a minute) up to this bound
    alice = kit.mb.kit.users["alice"]["oid"]
    kit.mb.kit.add_user("team", is_shared=True, send_as=[alice], full_access=[alice])
    cid = kit.connect("alice")
    kit.mb.admin.set_exchange_online(kit.mb.kit.tid, False)
    try:
        redemptions, sends = _count(kit, "entra.grant.refresh_token"), _count(kit, "calls.graph.userSendMail")
        msg = kit.message(cid, **{"from": kit.address("team")})
        outcome = _process(kit, msg)
        while outcome.status == "queued":
            outcome = _process(kit, msg)
        assert outcome.status == "failed" and outcome.error.code == "mailbox_unavailable", outcome
        assert _count(kit, "entra.grant.refresh_token") - redemptions == 1
        assert _count(kit, "calls.graph.userSendMail") - sends == 2
        assert _view(kit, cid)["mailbox_state"] is None, "the connected mailbox's state is not the from's"
        assert _state_events(kit, cid, "mailbox_unavailable") == []
    finally:
        kit.mb.admin.set_exchange_online(kit.mb.kit.tid, True)


# --- item 4: refusals about the mailbox become mailbox states ------------------------------------------------


def test_a_mailbox_not_enabled_for_rest_fails_fast_and_a_reprobe_brings_it_back(send_kit):
    kit = send_kit()
    kit.services.mailbox_states.first_probe_s = 600.0
    cid, bob = kit.connect("alice"), kit.connect("bob")
    alice = kit.address("alice")
    kit.mb.admin.set_mailbox_state(alice, "not_enabled")
    try:
        sends = _count(kit, "calls.graph.sendMail")
        first = _process(kit, kit.message(cid))
        assert first.status == "failed" and first.error.code == "mailbox_unavailable"
        assert _count(kit, "calls.graph.sendMail") - sends == 1
        for _ in range(3):
            assert _process(kit, kit.message(cid)).error.code == "mailbox_unavailable"
        assert _count(kit, "calls.graph.sendMail") - sends == 1, "later messages: no Graph call"
        assert _process(kit, kit.message(bob)).status == "sent", "the tenant's other mailbox is unaffected"
        view = _view(kit, cid)["mailbox_state"]
        assert view["state"] == "mailbox_unavailable" and view["graph_code"] == "MailboxNotEnabledForRESTAPI"

        # A re-probe while the mailbox is still not enabled: one Graph call, failed, no second event.
        _later(kit, 800)
        assert _process(kit, kit.message(cid)).error.code == "mailbox_unavailable"
        assert _process(kit, kit.message(cid)).error.code == "mailbox_unavailable"
        assert _count(kit, "calls.graph.sendMail") - sends == 3, "one probe, then fail fast again (bob's send + 1)"
    finally:
        kit.mb.admin.set_mailbox_state(alice, None)
    assert len(_state_events(kit, cid, "mailbox_unavailable")) == 1

    # The mailbox is licensed again: the next re-probe goes through and ends the episode.
    _later(kit, 20_000)
    assert _process(kit, kit.message(cid)).status == "sent"
    assert _view(kit, cid)["mailbox_state"] is None
    (restored,) = _state_events(kit, cid, "mailbox_restored")
    assert restored["data"]["was"] == "mailbox_unavailable"
    assert _process(kit, kit.message(cid)).status == "sent"


@pytest.mark.parametrize("status", [None, 507])
def test_a_full_mailbox_fails_fast_and_a_reconnect_clears_it(send_kit, status):
    """507 is Graph's documented "maximum storage quota" status; the emulator's default (403) is unconfirmed."""
    kit = send_kit()
    kit.services.mailbox_states.first_probe_s = 3600.0
    cid, bob = kit.connect("alice"), kit.connect("bob")
    kit.mb.admin.set_mailbox_state(kit.address("alice"), "quota_exceeded", status=status)
    try:
        sends = _count(kit, "calls.graph.sendMail")
        msgs = [kit.message(cid) for _ in range(3)]
        for msg in msgs:
            out = _process(kit, msg)
            assert out.status == "failed" and out.error.code == "mailbox_full", out
        assert _count(kit, "calls.graph.sendMail") - sends == 1
        (event,) = _state_events(kit, cid, "mailbox_full")
        assert event["data"]["graph_code"] == "ErrorQuotaExceeded"
        assert _process(kit, kit.message(bob)).status == "sent"
    finally:
        kit.mb.admin.set_mailbox_state(kit.address("alice"), None)
    assert kit.connect("alice") == cid  # the user reconnects once the mailbox has room
    assert _view(kit, cid)["mailbox_state"] is None
    assert _process(kit, kit.message(cid)).status == "sent"


@pytest.mark.parametrize("state", ["submission_blocked", "account_suspended"])
def test_a_blocked_mailbox_holds_its_messages_then_fails_them_and_a_reprobe_releases_it(send_kit, state):
    kit = send_kit(DAILY_LIMIT_MAX_HOLD_SECONDS="3000")
    kit.services.mailbox_states.first_probe_s = 600.0
    cid, bob = kit.connect("alice"), kit.connect("bob")
    alice = kit.address("alice")
    kit.mb.admin.set_mailbox_state(alice, state)
    try:
        sends = _count(kit, "calls.graph.sendMail")
        first, second = kit.message(cid), kit.message(cid)
        for msg in (first, second):
            out = _process(kit, msg)
            assert out.status == "queued" and out.delay >= 600, out
            rec = kit.record(cid, msg["id"])
            assert rec.reason == "sending_blocked" and rec.error_code == "sending_blocked"
        assert _count(kit, "calls.graph.sendMail") - sends == 1, "the second message waits without calling Graph"
        assert _process(kit, kit.message(bob)).status == "sent"
        assert _view(kit, cid)["mailbox_state"]["state"] == "sending_blocked"

        # The re-probe: still blocked, so it waits again; no second alert.
        _later(kit, 800)
        assert _process(kit, first).status == "queued"
        assert _process(kit, second).status == "queued", "the probe is taken: the other keeps waiting"
        assert _count(kit, "calls.graph.sendMail") - sends == 3
        # Past the longest hold the message fails.
        _later(kit, 5000)
        out = _process(kit, first)
        assert out.status == "failed" and out.error.code == "sending_blocked"
    finally:
        kit.mb.admin.set_mailbox_state(alice, None)
    assert len(_state_events(kit, cid, "sending_blocked")) == 1, "one alert per episode"
    _later(kit, 30_000)
    fresh = kit.message(cid)
    assert _process(kit, fresh).status == "sent", "the next re-probe goes through"
    assert _view(kit, cid)["mailbox_state"] is None
    assert len(_state_events(kit, cid, "mailbox_restored")) == 1


def test_an_outlook_com_recipient_quota_is_held_like_the_daily_limit_not_rejected(send_kit, emulator_admin):
    kit = send_kit(ENTRA_TENANT="common", sign_in_audience="AzureADandPersonalMicrosoftAccount")
    kit.services.mailbox_states.first_probe_s = 600.0
    carol = emulator_admin.create_user(CONSUMER_TENANT_ID, f"carol{uuid.uuid4().hex[:6]}@outlook.com")
    kit.mb.kit.users["carol"] = carol
    cid = kit.connect("carol")
    emulator_admin.set_mailbox_state(carol["mail"], "recipient_quota")
    try:
        sends = _count(kit, "calls.graph.sendMail")
        first, second = kit.message(cid), kit.message(cid)
        for msg in (first, second):
            out = _process(kit, msg)
            assert out.status == "queued" and out.delay > 0, out
            assert kit.record(cid, msg["id"]).reason == "sending_quota"
        assert _count(kit, "calls.graph.sendMail") - sends == 1
        assert len(_state_events(kit, cid, "sending_quota")) == 1
    finally:
        emulator_admin.set_mailbox_state(carol["mail"], None)
    _later(kit, 800)
    assert _process(kit, first).status == "sent"
    assert _process(kit, second).status == "sent"
