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

from bench import b1_cost, b2_cold, b4_pacing, machine, report
from bench.harness import BenchStack

ROOT = Path(__file__).resolve().parent.parent
BENCH_PY = ROOT / ".venv-bench" / "bin" / "python"
NOT_MEASURED = [
    "B1 beside msgraph-sdk and O365 (same sends with their own token handling).",
    "B3 throughput: 2,000 messages over 50 mailboxes with 50 ms Graph latency, CPU ms per message.",
    "B5 keep-alive sweep over 10,000 connections (1/3 due) at 20 ms latency.",
]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes (B1 200/5 only, 3 cold runs, B4 60)")
    p.add_argument("--cold-runs", type=int, default=7)
    p.add_argument("--b4-messages", type=int, default=300)
    p.add_argument("--graph-latency-ms", type=int, default=0, help="latency injected on every Graph call")
    p.add_argument("--no-doc", action="store_true", help="print the table only")
    p.add_argument("--results", type=Path, help="also write the raw results as JSON here")
    return p.parse_args(argv)


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
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    sizes = [(200, 5)] if args.quick else [(200, 5), (1000, 20)]
    cold_runs = 3 if args.quick else args.cold_runs
    b4_messages = 60 if args.quick else args.b4_messages
    results: dict = {
        "machine": machine.describe(),
        "graph_latency_ms": args.graph_latency_ms,
        "b1": [],
        "not_measured": list(NOT_MEASURED),
    }
    stack = BenchStack.start()
    try:
        if args.graph_latency_ms:
            stack.admin.add_fault("graph.*", "latency", latency_ms=args.graph_latency_ms)
        for emails, mailboxes in sizes:
            users = tuple(f"u{i}" for i in range(mailboxes))
            print(f"B1: {emails} emails / {mailboxes} mailboxes ...", flush=True)
            ours = b1_cost.run_mailbridge(stack.send_kit(users), emails, mailboxes)
            naive = b1_cost.run_naive(stack.tenant(users), stack.admin, emails, mailboxes)
            results["b1"].append([ours.as_dict(), naive.as_dict()])
        print(f"B2: {cold_runs} cold starts ...", flush=True)
        results["b2"] = [b2_cold.run_mailbridge(stack.send_kit(("cold",)), runs=cold_runs)]
        results["b2_peer_notes"] = b2_cold.PEER_NOTES
        print(f"B4: {b4_messages} messages to one mailbox ...", flush=True)
        results["b4"] = b4_pacing.run(stack.send_kit(("paced",)), messages=b4_messages)
    finally:
        stack.stop()
    print(report.console(results))
    if args.results:
        args.results.write_text(json.dumps(results, indent=1))
    if not args.no_doc:
        made = plots(results, ROOT / "docs" / "benchmarks")
        (ROOT / "docs" / "benchmarks.md").write_text(report.document(results, made))
        print(f"wrote docs/benchmarks.md ({len(made)} plots)")


if __name__ == "__main__":
    main()
