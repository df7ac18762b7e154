"""Crash: Mailbridge under devhost (a separate process) SIGKILLed mid-batch and restarted, then the same
reconciliation as the soak (bench/soak.py): every message ends in exactly one final record.

    .venv/bin/python -m bench.crash [--messages 1000] [--mailboxes 40] [--kills 3] [--timeout 600]

The run is pytest under the hood (tests/test_crash.py::test_crash with the sizes from MAILBRIDGE_CRASH_*;
the short version, 150 messages over 10 mailboxes, is in the test suite) and prints the JSON report.

How one run goes: connect the mailboxes in process (the ``send_kit`` fixtures), write the same app
settings to a local.settings.json, start devhost on it (tests/workers/crash_host.py: ``python -m
devhost`` with the two 10-minute leases shortened), put every message on the outbound queue, with Graph
``sendMail`` slowed down by the emulator so that sends are in flight. Each time the emulator has
accepted the next share of the messages, SIGKILL devhost's process group, read every delivery record
(what the killed worker left: how many not final, how many ``sending``), restart devhost. Once every
record is final (event emitted), stop devhost and reconcile with bench.soak's rules, plus two of this
run's own: a row a killed worker left ``sending`` ends ``unknown`` (sendMail mode cannot know whether
the mail went), and no other message ends ``unknown`` (the kills are the only fault). A killed worker's
messages come back when their queue lease ends, behind the backlog (the queue is roughly first-visible,
first-out), so with a batch it is the last devhost that recovers them.

Loopback only, bounded in messages and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.devhost_process import DevhostProcess, DevhostTimings, devhost_settings
from bench.soak import FINAL, Report, reconcile, run_case, wait_final
from shared.send.deliveries import LOG_PREFIX

REPO = Path(__file__).resolve().parent.parent
SENDER_FAILED = "Function send_queued_message failed"


@dataclass
class CrashPlan:
    messages: int = 150
    mailboxes: int = 10
    kills: int = 3
    seed: int = 9
    timeout_s: float = 100.0  # wall-time bound of the send phase (kills and restarts included)
    # Every sendMail waits this long in the emulator before it is applied, so sends are in flight at a kill.
    latency_ms: int = 800
    latency_rate: float = 1.0
    # How long devhost may take to start, and the two 10-minute leases shortened for the run.
    devhost: DevhostTimings = field(default_factory=DevhostTimings)
    min_in_flight: int = 2  # sendMail requests in flight at a kill (waited for up to in_flight_wait_s)
    in_flight_wait_s: float = 10.0
    # Extra app settings for devhost only (the in-process kit that connects the mailboxes keeps its own).
    app_settings: dict[str, str] = field(default_factory=dict)

    def kill_points(self) -> list[int]:
        """Accepted sendMail counts at which to kill: spread evenly, leaving the last share for the end."""
        return [max(1, round(self.messages * (i + 1) / (self.kills + 2))) for i in range(self.kills)]


@dataclass
class CrashReport(Report):
    kills_planned: int = 0
    kills: list[dict[str, Any]] = field(default_factory=list)
    starts: int = 0
    poisoned: int = 0
    graph_throttled: int = 0  # Graph 429s (the emulator's own limits, e.g. a dead worker's calls still holding slots)
    claimed_by_killed: int = 0  # rows left in `sending` by a killed worker
    claimed_by_killed_not_unknown: list[str] = field(default_factory=list)
    unknown_not_claimed_by_killed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            super().ok
            and len(self.kills) == self.kills_planned
            and not self.claimed_by_killed_not_unknown
            and not self.unknown_not_claimed_by_killed
            and not self.poisoned
            and not self.listener_failures
        )

    def summary(self) -> str:
        at = ", ".join(f"{k['deliveries']} sent/{k['not_final']} open/{k['sending']} mid-send" for k in self.kills)
        return (
            f"{len(self.kills)} kills (at: {at}), {self.starts} devhost starts, "
            f"{self.claimed_by_killed} rows left sending; poisoned {self.poisoned}; " + super().summary()
        )


def record_statuses(kit: Any, sent_to: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Status of every message's delivery record (``missing`` when none), one table query per connection. A row
    stored ``sending`` whose run finished has its final state in its outgoing-log index row (shared/send/deliveries.py):
    that one counts."""
    table = kit.services.deliveries.table
    found: dict[str, str] = {}
    final: dict[str, str] = {}
    for cid in sorted({c for c, _ in sent_to.values()}):
        rows = table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": cid}, select=["RowKey", "status", "message_id"]
        )
        for entity in rows:
            if entity["RowKey"] in sent_to:
                found[entity["RowKey"]] = entity["status"]
            elif entity["RowKey"].startswith(LOG_PREFIX) and entity.get("status") in FINAL:
                final[entity["message_id"]] = entity["status"]

    def status(mid: str) -> str:
        own = found.get(mid, "missing")
        return final.get(mid, own) if own == "sending" else own

    return {mid: status(mid) for mid in sent_to}


@dataclass
class GraphCounts:
    """The emulator's sendMail counters: calls arrive before the injected latency, sends are applied after it."""

    calls: int = 0
    sent: int = 0
    throttled: int = 0

    @classmethod
    def read(cls, admin: Any) -> GraphCounts:
        calls = admin.counters("calls.graph.sendMail").get("calls.graph.sendMail", 0)
        graph = admin.counters("graph.")
        return cls(calls, graph.get("graph.messages_sent", 0), graph.get("graph.throttled", 0))

    def since(self, base: GraphCounts) -> GraphCounts:
        return GraphCounts(self.calls - base.calls, self.sent - base.sent, self.throttled - base.throttled)

    @property
    def in_flight(self) -> int:
        """sendMail requests inside the emulator's latency right now (their rows are already `sending`)."""
        return self.calls - self.sent - self.throttled


KILL_SETTLE_S = 1.0  # after a kill, before the snapshot of the rows: what the dead worker sent has landed


def run_crash(kit: Any, plan: CrashPlan, workdir: Path) -> CrashReport:
    """Connect the mailboxes, run the batch under devhost with ``plan.kills`` SIGKILLs, reconcile."""
    admin = kit.mb.admin
    users = sorted(kit.mb.kit.users)[: plan.mailboxes]
    assert len(users) == plan.mailboxes, "the kit needs one emulator user per mailbox"
    connections = {user: kit.connect(user) for user in users}
    settings = workdir / "local.settings.json"
    settings.write_text(json.dumps(devhost_settings(kit, plan.app_settings), indent=2))
    host = DevhostProcess(settings, workdir, plan.devhost, {**os.environ, **kit.mb.env, **plan.app_settings})
    run = uuid.uuid4().hex[:6]
    sent_to: dict[str, tuple[str, str]] = {}
    report = CrashReport(plan.messages, plan.mailboxes, plan.seed, kills_planned=plan.kills)
    claimed: set[str] = set()
    admin.seed_faults(plan.seed)
    admin.add_fault("graph.sendMail", "latency", rate=plan.latency_rate, latency_ms=plan.latency_ms)
    started = time.monotonic()
    deadline = started + plan.timeout_s
    base = GraphCounts.read(admin)
    try:
        host.start()
        report.starts += 1
        for i in range(plan.messages):
            user = users[i % len(users)]
            msg = kit.message(connections[user], id=f"crash-{run}-{i:05d}", subject=f"Crash {run} #{i}")
            sent_to[msg["id"]] = (connections[user], kit.address(user))
            kit.put(msg)
        for point in plan.kill_points():
            # Kill once `point` mails went out and while sends are in flight (devhost works in waves of a
            # batch; between two waves nothing is mid-send), or anyway after plan.in_flight_wait_s.
            patience, now = None, GraphCounts()
            while time.monotonic() < deadline:
                now = GraphCounts.read(admin).since(base)
                if now.sent >= point:
                    patience = patience or time.monotonic() + plan.in_flight_wait_s
                    if now.in_flight >= plan.min_in_flight or time.monotonic() > patience:
                        break
                time.sleep(0.02)
            if time.monotonic() >= deadline:
                break
            host.kill()
            # Requests the worker wrote to its sockets before SIGKILL are still served by Azurite, in no order
            # with our read: a final `sent` already on its way would be read as `sending` and counted as a
            # claim the dead worker left (CI, 2026-12-07: one message "claimed" then `sent`, delivered once).
            time.sleep(KILL_SETTLE_S)
            at_kill = record_statuses(kit, sent_to)
            counts = Counter(at_kill.values())
            sending = {mid for mid, status in at_kill.items() if status == "sending"}
            report.kills.append(
                {
                    "after_accepted": point,
                    "in_flight": now.in_flight,  # sendMail requests inside the emulator when the kill was sent
                    "deliveries": GraphCounts.read(admin).since(base).sent,  # sendMail calls applied so far
                    "not_final": sum(n for status, n in counts.items() if status not in FINAL),
                    "sending": len(sending - claimed),  # claimed by this worker, which died mid-send
                    "sending_total": len(sending),  # including rows of earlier kills not yet recovered
                    "statuses": dict(sorted(counts.items())),
                }
            )
            claimed |= sending
            host.start()
            report.starts += 1
        records = wait_final(kit, sent_to, deadline)
    finally:
        host.stop()
        admin.clear_faults()
    report.seconds = time.monotonic() - started
    report.graph_throttled = GraphCounts.read(admin).since(base).throttled
    report.listener_failures = host.count_in_logs(SENDER_FAILED)
    report.poisoned = kit.queue_length(kit.mb.env["OUTBOUND_QUEUE"] + "-poison")
    reconcile(kit, sent_to, records, report)
    report.claimed_by_killed = len(claimed)
    for mid in sorted(sent_to):
        record = records.get(mid)
        status = record.status if record is not None else "missing"
        code = record.error_code if record is not None else None
        if mid in claimed and (status, code) != ("unknown", "outcome_unknown"):
            report.claimed_by_killed_not_unknown.append(f"{mid}: {status} [{code}]")
        if status == "unknown" and mid not in claimed:
            report.unknown_not_claimed_by_killed.append(f"{mid}: unknown [{code}]")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.crash", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--mailboxes", type=int, default=40, help="at most ~25 messages each keeps pacing out")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="wall-time bound of the send phase (s)")
    parser.add_argument("--report", type=Path, default=REPO / ".run" / "crash-report.json")
    args = parser.parse_args(argv)
    code = run_case(
        "tests/test_crash.py::test_crash",
        args.report,
        args.timeout,
        MAILBRIDGE_CRASH_MESSAGES=args.messages,
        MAILBRIDGE_CRASH_MAILBOXES=args.mailboxes,
        MAILBRIDGE_CRASH_KILLS=args.kills,
        MAILBRIDGE_CRASH_TIMEOUT=args.timeout,
        MAILBRIDGE_CRASH_REPORT=args.report,
    )
    if args.report.exists():
        print(args.report.read_text())
    return code


if __name__ == "__main__":
    sys.exit(main())
