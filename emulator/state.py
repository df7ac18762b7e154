"""Shared mutable state of the emulator: clock, counters, fault rules, directory, apps.

One re-entrant lock guards everything that handlers mutate; operations are short, so contention
stays low even under benchmark load.
"""

from __future__ import annotations

import fnmatch
import itertools
import random
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from emulator.directory import AppRegistry, Directory

FAULT_KINDS = ("429", "500", "503", "504_after", "reset", "latency")


class Clock:
    """Emulator time: real time plus an offset that tests move forward (token expiry, windows)."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Current emulator time, epoch seconds."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        """Move the clock forward (or back, with a negative value); returns the new offset."""
        with self._lock:
            self._offset += seconds
            return self._offset

    @property
    def offset(self) -> float:
        """Seconds the emulator clock runs ahead of real time."""
        return self._offset

    def reset(self) -> None:
        """Back to real time."""
        with self._lock:
            self._offset = 0.0


class Counters:
    """Thread-safe named counters (``calls.<endpoint>`` and whatever modules add)."""

    def __init__(self) -> None:
        self._values: Counter[str] = Counter()
        self._lock = threading.Lock()

    def incr(self, name: str, n: int = 1) -> int:
        """Add ``n`` to counter ``name`` and return the new value."""
        with self._lock:
            self._values[name] += n
            return self._values[name]

    def set_max(self, name: str, value: int) -> None:
        """Keep the maximum value ever reported for ``name`` (e.g. peak concurrency)."""
        with self._lock:
            if value > self._values[name]:
                self._values[name] = value

    def get(self, name: str) -> int:
        """Current value (0 when never incremented)."""
        with self._lock:
            return self._values[name]

    def snapshot(self) -> dict[str, int]:
        """A copy of all counters."""
        with self._lock:
            return dict(self._values)

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._values.clear()


@dataclass
class FaultRule:
    """Fault injected around handlers whose endpoint name matches ``endpoint`` (a glob)."""

    id: int
    endpoint: str
    kind: str
    rate: float | None = None
    count: int | None = None
    retry_after: int = 1
    latency_ms: int = 0
    fired: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for the admin API."""
        return asdict(self)


class Faults:
    """Fault rules with a seeded RNG so probabilistic faults are reproducible."""

    def __init__(self, seed: int = 1234) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._rng = random.Random(seed)

    def add(
        self,
        endpoint: str,
        kind: str,
        *,
        rate: float | None = None,
        count: int | None = None,
        retry_after: int = 1,
        latency_ms: int = 0,
    ) -> FaultRule:
        """Add a rule; without ``rate`` or ``count`` it fires on every matching call."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if rate is not None and not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        if count is not None and count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            rule = FaultRule(next(self._ids), endpoint, kind, rate, count, int(retry_after), int(latency_ms))
            self._rules.append(rule)
            return rule

    def seed(self, seed: int) -> None:
        """Re-seed the RNG used for ``rate`` rules."""
        with self._lock:
            self._rng.seed(seed)

    def clear(self, endpoint: str | None = None) -> int:
        """Remove every rule (or those with exactly this endpoint glob); returns how many."""
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if endpoint is not None and r.endpoint != endpoint]
            return before - len(self._rules)

    def rules(self) -> list[FaultRule]:
        """Copy of active rules."""
        with self._lock:
            return list(self._rules)

    def pick(self, endpoint: str) -> list[FaultRule]:
        """Rules that fire for this call: any latency rules, then at most one outcome rule.

        A ``count`` rule is consumed when it fires and removed when exhausted.
        """
        fired: list[FaultRule] = []
        outcome_taken = False
        with self._lock:
            if not self._rules:
                return fired
            for rule in list(self._rules):
                if not fnmatch.fnmatchcase(endpoint, rule.endpoint):
                    continue
                is_latency = rule.kind == "latency"
                if outcome_taken and not is_latency:
                    continue
                if rule.rate is not None and self._rng.random() >= rule.rate:
                    continue
                rule.fired += 1
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count <= 0:
                        self._rules.remove(rule)
                fired.append(rule)
                outcome_taken = outcome_taken or not is_latency
        return fired


class EmulatorState:
    """Everything the emulated services share. ``graph`` is set by ``emulator.graph.register``."""

    def __init__(self, base_url: str = "", seed: int = 1234) -> None:
        self.lock = threading.RLock()
        self.base_url = base_url
        self.clock = Clock()
        self.counters = Counters()
        self.faults = Faults(seed)
        self.directory = Directory()
        self.apps = AppRegistry()
        self.graph: Any = None
        self.keyvault: Any = None
        self.entra: Any = None
        self.keys: Any = None  # emulator.tokens.SigningKeys, set by the app at start
        self.identity_header = ""  # secret the managed identity endpoint requires
        self.extensions: dict[str, Any] = {}
