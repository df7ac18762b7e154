"""Key Vault's transaction limits per vault per region per 10 seconds, weighted as the service weighs them.

Source: "Azure Key Vault service limits" (https://learn.microsoft.com/en-us/azure/key-vault/general/service-limits,
include ``key-vault-limits.md`` of 07/23/2025):

- Key transactions, per key type: HSM key CREATE 10 / all other 2,000 (RSA 2,048), 500 (RSA 3,072), 250
  (RSA 4,096); software key CREATE 20 / all other 4,000 (RSA 2,048), 1,000 (RSA 3,072), 500 (RSA 4,096).
  "The throttling thresholds are weighted, and enforcement is on their sum": 248 RSA 4,096 HSM GETs and
  16 RSA 2,048 HSM GETs fill one window (248/250 + 16/2000 = 1). Each key transaction therefore costs
  ``1 / limit(its class)`` of one shared key budget.
- Secrets, managed storage account keys and vault transactions: "CREATE secret" 300 (collectively with
  IMPORT certificate and IMPORT key), "All other transactions" 4,000.
- "Failed requests that return a 429 do not count towards the throttle limits" (throttling guidance,
  https://learn.microsoft.com/en-us/azure/key-vault/general/overview-throttling).

``scale`` multiplies every limit (0.01 runs a bench at 1/100th of the service) with a floor of one
transaction, so a scaled-down vault still admits something.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction

WINDOW_S = 10.0

# (hsm, key size) -> (CREATE key, all other key transactions) per 10 s.
KEY_LIMITS: dict[tuple[bool, int], tuple[int, int]] = {
    (True, 2048): (10, 2000),
    (True, 3072): (10, 500),
    (True, 4096): (10, 250),
    (False, 2048): (20, 4000),
    (False, 3072): (20, 1000),
    (False, 4096): (20, 500),
}
SECRET_CREATE_LIMIT = 300
VAULT_OTHER_LIMIT = 4000

BUDGETS = ("keys", "secret_create", "vault_other")


@dataclass(frozen=True)
class Cost:
    """Which budget an operation draws on, and the base limit of its class (before scaling)."""

    budget: str
    limit: int

    @staticmethod
    def key(*, hsm: bool, size: int, create: bool) -> Cost:
        """A key transaction on a key of this type (unknown sizes weigh as RSA 2,048)."""
        create_limit, other_limit = KEY_LIMITS.get((hsm, size), KEY_LIMITS[(hsm, 2048)])
        return Cost("keys", create_limit if create else other_limit)

    @staticmethod
    def secret_create() -> Cost:
        """``PUT /secrets/{name}`` (every call creates a version: Set Secret)."""
        return Cost("secret_create", SECRET_CREATE_LIMIT)

    @staticmethod
    def vault_other() -> Cost:
        """Any other secret or vault transaction (get, list, delete, recover, purge, update)."""
        return Cost("vault_other", VAULT_OTHER_LIMIT)


@dataclass
class ServiceLimits:
    """Sliding 10-second windows, one per budget; each admitted call adds ``1 / scaled limit``."""

    windows: dict[str, deque[tuple[float, Fraction]]] = field(
        default_factory=lambda: {name: deque() for name in BUDGETS}
    )
    used: dict[str, Fraction] = field(default_factory=lambda: {name: Fraction(0) for name in BUDGETS})

    def clear(self) -> None:
        """Forget every window (a knob changed)."""
        for name in BUDGETS:
            self.windows[name].clear()
            self.used[name] = Fraction(0)

    def usage(self, now: float, window_s: float = WINDOW_S) -> dict[str, float]:
        """Share of each budget used in the current window (0..1)."""
        for name in BUDGETS:
            self._expire(name, now, window_s)
        return {name: float(self.used[name]) for name in BUDGETS}

    def _expire(self, budget: str, now: float, window_s: float) -> None:
        window = self.windows[budget]
        while window and window[0][0] <= now - window_s:
            self.used[budget] -= window.popleft()[1]

    def admit(self, cost: Cost, now: float, scale: float, window_s: float = WINDOW_S) -> int | None:
        """Record the call and return None, or return the seconds until it would fit (a 429)."""
        limit = max(1, math.floor(cost.limit * scale))
        share = Fraction(1, limit)
        self._expire(cost.budget, now, window_s)
        window = self.windows[cost.budget]
        if self.used[cost.budget] + share <= 1:
            window.append((now, share))
            self.used[cost.budget] += share
            return None
        # The earliest moment enough of the window has slid out for this call to fit.
        freed, wait = Fraction(0), window_s
        for at, spent in window:
            freed += spent
            if self.used[cost.budget] - freed + share <= 1:
                wait = at + window_s - now
                break
        return max(1, math.ceil(wait))
