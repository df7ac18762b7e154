"""Long fuzzing run: the properties of tests/test_fuzz.py with >= 10,000 examples each.

    .venv/bin/python -m bench.fuzz [--examples 10000] [--seed N] [-k EXPR]

Starts the same real Azurite and HTTPS emulator the test suite uses (the pytest fixtures), so it is
pytest under the hood; prints hypothesis statistics, then one line per property (examples really run,
seconds, outcome) and a one-line summary for docs/reliability.md (``--json PATH`` writes the same rows).
Exit status is pytest's: non-zero when any property found a counterexample.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MIN_EXAMPLES = 10_000


class PropertyReport:
    """A pytest plugin: outcome and duration of every property (the call phase, fixtures excluded)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}

    def pytest_runtest_logreport(self, report) -> None:
        row = self.rows.setdefault(report.nodeid, {"property": report.nodeid.split("::", 1)[-1], "seconds": 0.0})
        if report.when == "call":
            row["seconds"] = round(report.duration, 1)
            row["outcome"] = report.outcome
        elif report.failed:  # a fixture broke: the property did not run
            row["outcome"] = f"error in {report.when}"

    def table(self) -> list[dict]:
        counts = getattr(sys.modules.get("tests.test_fuzz"), "EXAMPLES_RUN", {})
        return [{**row, "examples": counts.get(nodeid, 0)} for nodeid, row in self.rows.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=MIN_EXAMPLES, help="examples per property (default 10000)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: derandomized, repeatable)")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression to run a subset")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the per-property rows here")
    args = parser.parse_args(argv)
    os.environ["MAILBRIDGE_FUZZ_EXAMPLES"] = str(args.examples)
    if args.seed is not None:
        os.environ["MAILBRIDGE_FUZZ_SEED"] = str(args.seed)
    pytest_args = [
        str(REPO / "tests" / "test_fuzz.py"),
        "-q",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::UserWarning",
        "--hypothesis-show-statistics",
        "--timeout=0",
    ]
    if args.seed is not None:
        pytest_args.append(f"--hypothesis-seed={args.seed}")
    if args.keyword:
        pytest_args += ["-k", args.keyword]
    started = time.monotonic()
    report = PropertyReport()
    code = pytest.main(pytest_args, plugins=[report])
    elapsed = time.monotonic() - started
    rows = report.table()
    for row in rows:
        print(f"{row['property']:<75} {row['examples']:>7} examples {row['seconds']:>8.1f} s  {row.get('outcome')}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"examples": args.examples, "seconds": elapsed, "rows": rows}))
    print(
        f"bench.fuzz: {args.examples} examples per property ({args.examples * 4} for pure parsing), "
        f"exit {int(code)}, {elapsed:.0f} s"
    )
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
