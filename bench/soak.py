"""Soak: N messages across M mailboxes through the real queue path while the emulator injects faults,
then a reconciliation of the emulator's delivery log and Sent Items against the delivery records.

    .venv/bin/python -m bench.soak [--messages 5000] [--mailboxes 200] [--seed 9] [--timeout 1800] [--instances 3]

The run uses the test fixtures (real Azurite, the HTTPS emulator, devhost's QueueListener running
``send_queued_message``), so it is pytest under the hood (tests/test_reliability.py::test_soak with
the sizes from the environment); the short version of the same run is in the test suite.
Reconciliation rules (docs/reliability.md):

- ``sent``: exactly one delivery in the emulator's log and one copy in Sent Items;
- ``failed`` / ``rejected``: no delivery, and an error code;
- ``unknown``: zero or one delivery, and an error code (the flagged ambiguous case);
- anything else is a bug: ``lost`` (no final record, or recorded sent but never delivered),
  ``duplicated`` (more than one delivery), ``misreported`` (failed/rejected but delivered).

Loopback only, bounded in messages and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.fleet import Fleet

REPO = Path(__file__).resolve().parent.parent
FINAL = {"sent", "failed", "unknown", "rejected"}


def fault_rules(scale: float = 1.0) -> list[dict[str, Any]]:
    """The issue's fault mix (rates of Graph sendMail calls, plus Key Vault and token endpoint faults)."""
    return [
        {"endpoint": "graph.sendMail", "kind": "429", "rate": 0.10 * scale, "retry_after": 1},
        {"endpoint": "graph.sendMail", "kind": "503", "rate": 0.03 * scale, "retry_after": 1},
        {"endpoint": "graph.sendMail", "kind": "504_after", "rate": 0.01 * scale},
        {"endpoint": "graph.sendMail", "kind": "reset", "rate": 0.01 * scale},
        {"endpoint": "graph.sendMail", "kind": "latency", "rate": 0.05 * scale, "latency_ms": 400},
        {"endpoint": "kv.getSecret", "kind": "429", "rate": 0.10 * scale, "retry_after": 1},
        {"endpoint": "entra.token", "kind": "503", "rate": 0.05 * scale, "retry_after": 1},
    ]


@dataclass
class Plan:
    messages: int = 60
    mailboxes: int = 6
    seed: int = 9
    timeout_s: float = 120.0
    # Halfway through, move the emulator clock past the access tokens' lifetime: Graph answers 401, the
    # sender redeems refresh tokens at the token endpoint (itself failing at the entra.token rate).
    expire_tokens_midway: bool = True
    # With the emulator's transport delay on, sent items are still in transit when the records are final:
    # move the emulator clock this far before reconciling, so every accepted send is delivered and counted.
    settle_s: float = 0.0
    faults: list[dict[str, Any]] = field(default_factory=fault_rules)
    # 1: the in-process listener; 2-3: that many devhost processes on one storage account (bench/fleet.py),
    # the way Flex Consumption scales out, sharing each mailbox's limits through shared/pacing/budget.py.
    instances: int = 1


@dataclass
class Report:
    messages: int
    mailboxes: int
    seed: int
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    error_codes: dict[str, int] = field(default_factory=dict)
    faults_fired: dict[str, int] = field(default_factory=dict)
    deliveries: int = 0
    sent_items: int = 0
    unknown_delivered: int = 0
    unknown_not_delivered: int = 0
    listener_failures: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    misreported: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.misreported or self.unexplained)

    def summary(self) -> str:
        return (
            f"{self.messages} messages / {self.mailboxes} mailboxes in {self.seconds:.0f} s: "
            f"{dict(sorted(self.statuses.items()))}; deliveries {self.deliveries}, Sent Items {self.sent_items}; "
            f"unknown delivered {self.unknown_delivered} / not {self.unknown_not_delivered}; "
            f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, misreported {len(self.misreported)}, "
            f"unexplained {len(self.unexplained)}; faults {dict(sorted(self.faults_fired.items()))}"
        )


def run_soak(kit: Any, plan: Plan) -> Report:
    """Connect ``plan.mailboxes`` users of ``kit`` (a tests.fixtures.sender.SendKit), push the messages
    through the queue with faults on, wait until every record is final, reconcile."""
    admin = kit.mb.admin
    users = sorted(kit.mb.kit.users)[: plan.mailboxes]
    assert len(users) == plan.mailboxes, "the kit needs one emulator user per mailbox"
    connections = {user: kit.connect(user) for user in users}  # before faults: connecting is not under test
    kit.services.sender.busy_recheck_s = 0.5
    kit.services.sender.max_reschedules = 100
    admin.seed_faults(plan.seed)
    before = admin.counters("faults.")
    for rule in plan.faults:
        admin.add_fault(**rule)
    run = uuid.uuid4().hex[:6]
    sent_to: dict[str, tuple[str, str]] = {}  # message id -> (connection id, mailbox address)
    started = time.monotonic()
    try:
        with _instances(kit, plan) as failed:
            for i in range(plan.messages):
                user = users[i % len(users)]
                msg = kit.message(connections[user], id=f"soak-{run}-{i:05d}", subject=f"Soak {run} #{i}")
                sent_to[msg["id"]] = (connections[user], kit.address(user))
                kit.put(msg)
                if plan.expire_tokens_midway and i == plan.messages // 2:
                    admin.advance_clock(3700)
            records = wait_final(kit, sent_to, started + plan.timeout_s)
            if plan.settle_s:
                admin.advance_clock(plan.settle_s)
            failures = failed()
    finally:
        admin.clear_faults()
    report = Report(plan.messages, plan.mailboxes, plan.seed, seconds=time.monotonic() - started)
    report.listener_failures = failures
    after = admin.counters("faults.")
    report.faults_fired = {
        k.removeprefix("faults."): v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)
    }
    reconcile(kit, sent_to, records, report)
    return report


@contextmanager
def _instances(kit: Any, plan: Plan) -> Iterator[Callable[[], int]]:
    """The queue function running: in process (one instance) or as ``plan.instances`` devhost processes;
    yields how to read the number of failed invocations so far."""
    if plan.instances <= 1:
        with kit.listener(visibility_timeout=2.0) as listener:
            yield lambda: listener.failed
        return
    fleet = Fleet(kit, Path(tempfile.mkdtemp(prefix="soak-fleet-")), size=plan.instances)
    fleet.start()
    try:
        yield lambda: fleet.count_in_logs("Function send_queued_message failed")
    finally:
        fleet.stop()


def wait_final(kit: Any, sent_to: dict[str, tuple[str, str]], deadline: float) -> dict[str, Any]:
    """Delivery records by message id once final with their event emitted (or whatever exists at the deadline)."""
    done: dict[str, Any] = {}
    pending = set(sent_to)
    while pending and time.monotonic() < deadline:
        for mid in sorted(pending):
            record = kit.record(sent_to[mid][0], mid)
            if record is not None and record.status in FINAL and record.event_emitted:
                done[mid] = record
                pending.discard(mid)
        if pending:
            time.sleep(0.3)
    for mid in pending:
        done[mid] = kit.record(sent_to[mid][0], mid)
    return done


def reconcile(kit: Any, sent_to: dict[str, tuple[str, str]], records: dict[str, Any], report: Report) -> Report:
    """Compare each record with the emulator's delivery log and Sent Items (the ground truth)."""
    admin = kit.mb.admin
    delivered: Counter[str] = Counter()
    saved: Counter[str] = Counter()
    for address in sorted({addr for _, addr in sent_to.values()}):
        delivered.update({k: v for k, v in admin.delivered(address)["counts_by_key"].items() if k in sent_to})
        saved.update(m["idempotencyKey"] for m in admin.sent_items(address) if m.get("idempotencyKey") in sent_to)
    report.deliveries = sum(delivered.values())
    report.sent_items = sum(saved.values())
    statuses: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    for mid in sorted(sent_to):
        record = records.get(mid)
        status = record.status if record is not None else "missing"
        statuses[status] += 1
        if record is not None and record.error_code:
            codes[record.error_code] += 1
        n = delivered[mid]
        if n > 1 or saved[mid] > 1:
            report.duplicated.append(f"{mid}: {status}, {n} deliveries, {saved[mid]} in Sent Items")
        elif status not in FINAL or (status == "sent" and n == 0):
            report.lost.append(f"{mid}: {status}, {n} deliveries")
        elif status in ("failed", "rejected") and n:
            report.misreported.append(f"{mid}: {status} [{record.error_code}] but delivered")
        elif status != "sent" and not record.error_code:
            report.unexplained.append(f"{mid}: {status} without an error code")
        elif status == "sent" and saved[mid] != 1:
            report.lost.append(f"{mid}: sent, delivered, but {saved[mid]} copies in Sent Items")
        elif status == "unknown":
            if n:
                report.unknown_delivered += 1
            else:
                report.unknown_not_delivered += 1
    report.statuses = dict(statuses)
    report.error_codes = dict(codes)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--mailboxes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--instances", type=int, default=1, help="1: in process; 2-3: devhost processes")
    parser.add_argument("--timeout", type=float, default=1800.0, help="wall-time bound of the send phase (s)")
    parser.add_argument("--report", type=Path, default=REPO / ".run" / "soak-report.json")
    args = parser.parse_args(argv)
    code = run_case(
        "tests/test_reliability.py::test_soak",
        args.report,
        args.timeout,
        MAILBRIDGE_SOAK_MESSAGES=args.messages,
        MAILBRIDGE_SOAK_MAILBOXES=args.mailboxes,
        MAILBRIDGE_SOAK_SEED=args.seed,
        MAILBRIDGE_SOAK_INSTANCES=args.instances,
        MAILBRIDGE_SOAK_TIMEOUT=args.timeout,
        MAILBRIDGE_SOAK_REPORT=args.report,
    )
    if args.report.exists():
        report = json.loads(args.report.read_text())
        print("bench.soak:", report["summary"])
        for kind in ("lost", "duplicated", "misreported", "unexplained"):
            for line in report[kind][:20]:
                print(f"  {kind}: {line}")
    return code


def run_case(test_id: str, report: Path, timeout: float, **env: object) -> int:
    """Run one pytest case of the suite with its sizes in the environment (the long mode of a short test);
    the case writes its JSON report to ``report``. Returns pytest's exit code."""
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    os.environ.update({key: str(value) for key, value in env.items()})
    import pytest

    args = [str(REPO / test_id), "-q", "-p", "no:cacheprovider", "-W", "ignore::UserWarning"]
    return int(pytest.main([*args, f"--timeout={int(timeout) + 900}"]))


def write_report(report: Report, path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps({**asdict(report), "summary": report.summary(), "ok": report.ok}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
