"""``python -m bench.walk``: the walk of one queue message through ``shared/`` (issue 24, docs/architecture.md).

Starts the bench stack (Azurite + the emulator), connects one mailbox, sends one message to warm it (token
cache, the mailbox's budget share, the connection row), then runs the queue function ``send_queued_message``
on a second message under ``sys.setprofile`` and counts, on the function's thread:

- **stops**: calls of Python functions defined in ``shared.*`` (comprehensions, generator expressions and
  lambdas are part of the function they are in, not stops of their own);
- **modules**: the distinct modules those stops are in;
- **module changes**: consecutive stops in different modules;
- **returns**: stops into a module the walk had already left (a module changed to one seen before);
- **re-entries per module**: how often the walk came back to each module after leaving it;
- **pacing**: how often the walk entered the pacing package (``shared.pacing.*``) and the hand-offs between
  its budget and the budget's view (issue 24: one question and one report per attempt).

It measures the shape of the code, not its speed: the same message on the same stack gives the same walk
(the pacing share may be renewed or not, which can add a stop or two). ``--base DIR`` runs it on another
checkout (e.g. ``git worktree add /tmp/walk-base <commit>``) with this file copied there.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Walk:
    stops: list[tuple[str, str]] = field(default_factory=list)  # (module, function) in call order

    def profile(self, frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        name = frame.f_code.co_name
        if name.startswith("<"):  # a comprehension, generator expression or lambda: part of its function's stop
            return
        if module == "shared" or module.startswith("shared."):
            self.stops.append((module, name))

    @property
    def packages(self) -> set[str]:
        return {".".join(m.split(".")[:2]) for m, _ in self.stops}

    @property
    def modules(self) -> list[str]:
        return sorted({m for m, _ in self.stops})

    def changes(self) -> int:
        return sum(1 for a, b in zip(self.stops, self.stops[1:], strict=False) if a[0] != b[0])

    def reentries(self, depth: int = 0) -> Counter[str]:
        """Per module (per package with ``depth``: ``shared.pacing`` is depth 2): how many times the walk came back
        to it after having left it."""
        seen: set[str] = set()
        back: Counter[str] = Counter()
        previous = None
        for name, _ in self.stops:
            module = ".".join(name.split(".")[:depth]) if depth else name
            if module != previous and module in seen:
                back[module] += 1
            seen.add(module)
            previous = module
        return back

    def hand_offs(self, a: str, b: str) -> int:
        """Module changes between ``a`` and ``b``, either way."""
        pairs = zip(self.stops, self.stops[1:], strict=False)
        return sum(1 for (x, _), (y, _) in pairs if {x, y} == {a, b})

    def summary(self) -> dict[str, Any]:
        back = self.reentries()
        return {
            "stops": len(self.stops),
            "modules": len(self.modules),
            "module_changes": self.changes(),
            "returns_to_a_module_left": sum(back.values()),
            "reentries": dict(back.most_common()),
            "pacing": {
                "entries": self.reentries(depth=2)["shared.pacing"] + 1 if "shared.pacing" in self.packages else 0,
                "budget_reentries": back["shared.pacing.budget"],
                "budget_view_hand_offs": self.hand_offs("shared.pacing.budget", "shared.pacing.budget_view"),
            },
            "stops_per_module": dict(Counter(m for m, _ in self.stops).most_common()),
        }


class _Out:
    """The queue output binding's stand-in: what the function set."""

    def __init__(self) -> None:
        self.value: Any = None

    def set(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value


def walk_one_message() -> Walk:
    import azure.functions as func

    from bench.harness import BenchStack

    stack = BenchStack.start()
    try:
        kit = stack.send_kit(("alice",))
        cid = kit.connect("alice")
        send = kit.spec.callable

        def run(message: dict[str, Any], queue_id: str) -> Any:
            out = _Out()
            send(msg=func.QueueMessage(id=queue_id, body=json.dumps(message).encode()), events=out, webhooks=_Out())
            return out.value

        assert run(kit.message(cid), "warm") is not None  # warm: token, budget share, connection row
        walk = Walk()
        message = kit.message(cid)
        sys.setprofile(walk.profile)
        try:
            events = run(message, "walked")
        finally:
            sys.setprofile(None)
        assert events and json.loads(events[0])["type"] == "mailbridge.message.sent", events
        return walk
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.walk", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stops", action="store_true", help="also print every stop")
    args = parser.parse_args(argv)
    walk = walk_one_message()
    if args.stops:
        for module, name in walk.stops:
            print(f"  {module}.{name}")
    summary = walk.summary()
    print(json.dumps(summary, indent=2))
    sender = next((m for m in summary["reentries"] if m.endswith("sender")), None)
    print(
        f"{summary['stops']} stops in {summary['modules']} modules, {summary['returns_to_a_module_left']} of them "
        f"return to a module already left; sender re-entered {summary['reentries'].get(sender, 0)} times; pacing "
        f"entered {summary['pacing']['entries']} times, budget re-entered {summary['pacing']['budget_reentries']}, "
        f"budget <-> budget_view hand-offs {summary['pacing']['budget_view_hand_offs']}"
    )


if __name__ == "__main__":
    main()
