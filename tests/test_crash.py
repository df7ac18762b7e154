"""Crash safety: a worker killed mid-send never causes a silent duplicate or a lost message.

- ``test_crash``: Mailbridge under devhost as a separate process, SIGKILLed (whole process group) three
  times mid-batch and restarted; afterwards every message has exactly one final record, reconciled
  against the emulator's delivery log and Sent Items with bench/soak.py's rules. Short here (150
  messages, 10 mailboxes); ``python -m bench.crash`` runs the same test with more (MAILBRIDGE_CRASH_*).
- the in-process tests pin what a redelivered message whose row a dead worker left in ``sending``
  must do: end ``unknown`` at once (sendMail mode), whatever pacing, tokens or the connection say.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from bench.crash import CrashPlan, run_crash
from bench.soak import write_report
from shared.pacing.admission import Admission
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing after the raise point runs (BaseException, so no handler catches it)."""


def _deliveries(kit, mid: str) -> int:
    return kit.mb.admin.deliveries(key=mid)["count"]


def _die_after_graph_accepted(kit, monkeypatch, msg) -> None:
    """Run one send that Graph accepts, then 'kill' the worker before it records the outcome, and let
    the row's lease run out (as it does once the dead worker's functionTimeout has passed)."""
    sender = kit.services.sender

    def killed(*args, **kwargs):
        raise WorkerKilled()

    with monkeypatch.context() as m:
        m.setattr(sender.ledger, "finish", killed)
        with pytest.raises(WorkerKilled):
            sender.process(msg, "q-first-copy")
    rec = kit.record(msg["connection_id"], msg["id"])
    assert rec.status == "sending" and rec.attempts == 1 and rec.lease_until > time.time()
    assert _deliveries(kit, msg["id"]) == 1, "Graph accepted the mail before the worker died"
    rec.lease_until = time.time() - 1
    kit.services.deliveries.update(rec)


def _process_until_final(kit, msg, copies: int = 5):
    outcomes = []
    for i in range(copies):
        outcome = kit.services.sender.process(msg, f"q-copy-{i}")
        outcomes.append(outcome.status)
        if outcome.status != "queued":
            break
    return outcomes


def test_a_message_whose_worker_died_mid_send_ends_unknown_and_is_not_resent(send_kit, monkeypatch):
    kit = send_kit()
    cid = kit.connect("alice")
    msg = kit.message(cid)
    _die_after_graph_accepted(kit, monkeypatch, msg)
    assert _process_until_final(kit, msg) == ["unknown"]
    rec = kit.record(cid, msg["id"])
    assert rec.status == "unknown" and rec.error_code == "outcome_unknown" and rec.event_emitted
    assert _deliveries(kit, msg["id"]) == 1


@pytest.mark.parametrize("obstacle", ["paced", "token_throttled", "reauth_required"])
def test_a_recovered_send_ends_unknown_even_when_the_redelivery_is_delayed_or_the_grant_died(
    send_kit, monkeypatch, obstacle
):
    """BUG (found while writing the crash test, reading what a redelivered ``sending`` row does): the copy
    of a message whose worker died mid-send decided ``unknown`` only after pacing and the token. When the
    mailbox was paced, or Key Vault / the token endpoint throttled, it rescheduled, which put the row back
    to ``queued`` and forgot it had been ``sending``: the next copy sent the mail a second time (a silent
    duplicate when the dead worker's request had gone through). A connection turned reauth_required
    meanwhile recorded ``failed`` (promising 0 deliveries) for a mail that may have gone. Fix
    (shared/send/sender.py): decide right after claiming the row."""
    kit = send_kit()
    cid = kit.connect("alice")
    msg = kit.message(cid)
    _die_after_graph_accepted(kit, monkeypatch, msg)
    sender = kit.services.sender
    if obstacle == "paced":  # the redelivered copy finds the mailbox's window full once
        admit, refused = sender.budget.admit, []

        def admit_once_refused(mailbox, recipients, upload_bytes=0):
            if not refused:
                refused.append(mailbox)
                return Admission(mailbox.key, delay=5.0, reason="message_rate")
            return admit(mailbox, recipients, upload_bytes)

        monkeypatch.setattr(sender.budget, "admit", admit_once_refused)
    elif obstacle == "token_throttled":
        kit.services.tokens.forget(cid)
        kit.services.token_caches.forget_keys()  # the sealed cache's data key must be unwrapped in Key Vault
        kit.services.token_key.max_attempts = 1
        kit.mb.admin.add_fault("kv.unwrapKey", "429", count=1, retry_after=0)
    else:
        conn = kit.services.connections.get(cid)
        conn.status = "reauth_required"
        kit.services.connections.save(conn)
    outcomes = _process_until_final(kit, msg)
    monkeypatch.undo()
    rec = kit.record(cid, msg["id"])
    assert _deliveries(kit, msg["id"]) == 1, f"sent again after the crash: {outcomes}"
    assert outcomes == ["unknown"], outcomes
    assert rec.status == "unknown" and rec.error_code == "outcome_unknown" and rec.attempts == 1


@pytest.mark.slow
def test_crash(send_kit, tmp_path):
    plan = CrashPlan(
        messages=int(os.environ.get("MAILBRIDGE_CRASH_MESSAGES", "150")),
        mailboxes=int(os.environ.get("MAILBRIDGE_CRASH_MAILBOXES", "10")),
        kills=int(os.environ.get("MAILBRIDGE_CRASH_KILLS", "3")),
        timeout_s=float(os.environ.get("MAILBRIDGE_CRASH_TIMEOUT", "100")),
        # A killed instance's share of a mailbox's budget stays reserved until its lease ends (concurrency) and a
        # message window later (messages): the run shortens that lease, like the two others, and lifts the
        # per-minute limit so that pacing (tests/test_scaleout.py) does not decide the run's length.
        app_settings={
            "MAILBOX_BUDGET_LEASE_SECONDS": "6",
            "MAILBOX_MESSAGES_PER_MINUTE": "10000",
            **json.loads(os.environ.get("MAILBRIDGE_CRASH_APP_SETTINGS", "{}")),  # e.g. MAILBOX_CONCURRENCY
        },
    )
    kit = send_kit(users=tuple(f"u{i:03d}" for i in range(plan.mailboxes)))
    report = run_crash(kit, plan, tmp_path)
    write_report(report, os.environ.get("MAILBRIDGE_CRASH_REPORT"))
    print(report.summary())
    # The kills really happened mid-batch, with sends in flight.
    assert len(report.kills) == plan.kills, report.kills
    for kill in report.kills:
        assert kill["not_final"] > 0 and kill["sending"] > 0, kill
    # Every message ends in exactly one final record that agrees with what Graph did.
    assert not report.lost, report.lost
    assert not report.duplicated, report.duplicated
    assert not report.misreported, report.misreported
    assert not report.unexplained, report.unexplained
    assert sum(report.statuses.values()) == plan.messages
    assert set(report.statuses) <= {"sent", "unknown"}, report.statuses
    assert report.deliveries == report.statuses.get("sent", 0) + report.unknown_delivered
    # A row a killed worker left in `sending` ends `unknown`; nothing else does (no faults but the kills).
    assert report.claimed_by_killed_not_unknown == [], report.claimed_by_killed_not_unknown
    assert report.unknown_not_claimed_by_killed == [], report.unknown_not_claimed_by_killed
    assert report.statuses.get("unknown", 0) == report.claimed_by_killed > 0
    assert report.poisoned == 0 and report.listener_failures == 0, report.summary()
