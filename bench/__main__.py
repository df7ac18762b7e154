"""``python -m bench``: start Azurite + the emulator, run the benchmarks, print a table, rewrite
docs/benchmarks.md (+ PNG plots in docs/benchmarks/ via matplotlib from .venv-bench)."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import (
    b1_cost,
    b1_peers,
    b2_cold,
    b3_throughput,
    b4_pacing,
    b5_keepalive,
    b6_scaleout,
    b7_capacity,
    b8_latency,
    machine,
    report,
)
from bench.harness import BenchStack

ROOT = Path(__file__).resolve().parent.parent
BENCH_PY = ROOT / ".venv-bench" / "bin" / "python"
REMOTE = ("graph.*", "entra.*", "kv.*")  # the emulated Microsoft services B1's latency run slows down


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes everywhere (minutes)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="the smallest sizes that still run every code path (tests/test_bench_smoke.py; figures mean nothing)",
    )
    p.add_argument("--only", default="b1,b2,b3,b4,b5,b6,b7,b8", help="comma-separated subset, e.g. b3,b5")
    p.add_argument("--cold-runs", type=int, default=7)
    p.add_argument("--latency-ms", type=int, default=50, help="latency of Graph, Entra and Key Vault in B1's 2nd run")
    p.add_argument("--b3-messages", type=int, default=2000)
    p.add_argument("--b3-mailboxes", type=int, default=50)
    p.add_argument("--b3-latency-ms", type=int, default=50, help="Graph latency in B3")
    p.add_argument("--b4-messages", type=int, default=300)
    p.add_argument("--b5-connections", type=int, default=10_000)
    p.add_argument("--b5-latency-ms", type=int, default=20, help="Entra and Key Vault latency in B5")
    p.add_argument(
        "--b5-concurrency", default="4,8,16,32", help="KEEPALIVE_CONCURRENCY of each B5 sweep, comma-separated"
    )
    p.add_argument("--b7-connections", type=int, default=3000, help="connections in B7's simulated day")
    p.add_argument(
        "--b7-target",
        type=int,
        default=10_000_000,
        help="connections B7's scaled Key Vault limits stand for (1M with 10x headroom)",
    )
    p.add_argument("--b8-latency-ms", type=int, default=50, help="Graph, Entra and Key Vault latency in B8")
    p.add_argument("--no-doc", action="store_true", help="print the table only")
    p.add_argument("--results", type=Path, help="also write the raw results as JSON here")
    return p.parse_args(argv)


def b1_runs(stack: BenchStack, emails: int, mailboxes: int, latency_ms: int) -> list[dict]:
    """Mailbridge, the naive design and the peers on the same sizes (and latency), one after another."""
    for endpoint in REMOTE if latency_ms else ():
        stack.admin.add_fault(endpoint, "latency", latency_ms=latency_ms)
    try:
        users = tuple(f"u{i}" for i in range(mailboxes))
        rows = [b1_cost.run_mailbridge(stack.send_kit(users), emails, mailboxes).as_dict()]
        rows.append(b1_cost.run_naive(stack.tenant(users), stack.admin, emails, mailboxes).as_dict())
        rows += b1_peers.run_peers(stack, emails, mailboxes)
    finally:
        for endpoint in REMOTE if latency_ms else ():
            stack.admin.clear_faults(endpoint)
    for row in rows:
        row["latency_ms"] = latency_ms
    return rows


def plots(results: dict, out_dir: Path) -> list[str]:
    """Render PNGs with matplotlib in .venv-bench; returns the file names made (none if it is missing)."""
    if not BENCH_PY.exists():
        print("note: .venv-bench missing (run bench/setup.sh): no plots", file=sys.stderr)
        return []
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(results, fh)
    subprocess.run([str(BENCH_PY), str(ROOT / "bench" / "plots.py"), fh.name, str(out_dir)], check=True, timeout=300)
    return sorted(p.name for p in out_dir.glob("*.png"))


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    only = set(args.only.split(","))
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    q, smoke = args.quick or args.smoke, args.smoke
    b1_sizes = [(100, 5, 0), (100, 5, args.latency_ms)] if q else [(1000, 20, 0), (500, 20, args.latency_ms)]
    b3 = (200, 10) if q else (args.b3_messages, args.b3_mailboxes)
    if smoke:
        b1_sizes, b3 = [(6, 2, 0), (4, 2, 5)], (12, 3)
    results: dict = {"machine": machine.describe(), "b1": [], "b3": []}
    stack = BenchStack.start()
    try:
        if "b1" in only:
            for emails, mailboxes, latency in b1_sizes:
                print(f"B1: {emails} emails / {mailboxes} mailboxes, {latency} ms latency ...", flush=True)
                results["b1"].append(b1_runs(stack, emails, mailboxes, latency))
            results["b1_peer_notes"] = dict(b1_peers.PEER_NOTES)
        if "b2" in only:
            runs = 1 if smoke else 3 if q else args.cold_runs
            print(f"B2: {runs} cold starts each ...", flush=True)
            results["b2"] = b2_cold.run_mailbridge(stack.send_kit(("cold",)), runs=runs)
            results["b2"] += b2_cold.run_peers(stack, runs=runs)
            results["b2_peer_notes"] = dict(b2_cold.PEER_NOTES)
        if "b3" in only:
            for rate_limits in (False, True):
                print(f"B3: {b3[0]} messages / {b3[1]} mailboxes, rate limits {rate_limits} ...", flush=True)
                results["b3"].append(
                    b3_throughput.run(stack, *b3, latency_ms=args.b3_latency_ms, rate_limits=rate_limits)
                )
        if "b4" in only:
            b4_messages = 12 if smoke else 60 if q else args.b4_messages
            print(f"B4: {b4_messages} messages to one mailbox ...", flush=True)
            results["b4"] = b4_pacing.run(stack.send_kit(("paced",)), messages=b4_messages)
        if "b5" in only:
            n = 12 if smoke else 300 if q else args.b5_connections
            print(f"B5: keep-alive sweep over {n} connections ...", flush=True)
            concurrencies = (2, 4) if smoke else tuple(int(c) for c in args.b5_concurrency.split(","))
            results["b5"] = b5_keepalive.run(
                stack, connections=n, latency_ms=args.b5_latency_ms, concurrencies=concurrencies
            )
        if "b6" in only:
            results["b6"] = b6_scaleout.runs(stack, size="smoke" if smoke else "quick" if q else "full")
        if "b7" in only:
            n = 12 if smoke else 300 if q else args.b7_connections
            print(f"B7: a simulated day of {n} connections under Key Vault's limits ...", flush=True)
            size = {"instances": 2, "rounds": 2, "round_s": 1.0} if smoke else {}
            results["b7"] = b7_capacity.run(stack, connections=n, target_connections=args.b7_target, **size)
        if "b8" in only:
            size = "smoke" if smoke else "quick" if q else "full"
            print(f"B8: latency, enqueue to sent, with the parking lot full ({size}) ...", flush=True)
            results["b8"] = b8_latency.run(stack, size=size, latency_ms=args.b8_latency_ms)
    finally:
        stack.stop()
    print(report.console(results))
    if args.results:
        args.results.write_text(json.dumps(results, indent=1))
    if not args.no_doc:
        made = plots(results, ROOT / "docs" / "benchmarks")
        doc = ROOT / "docs" / "benchmarks.md"
        text = report.document(results, made)
        if only != set(parse([]).only.split(",")) and doc.exists():  # a partial run updates its sections only
            text = report.merge(doc.read_text(), text, results["machine"]["date"])
        doc.write_text(text)
        print(f"wrote docs/benchmarks.md ({len(made)} plots)")


if __name__ == "__main__":
    main()
