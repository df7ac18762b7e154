"""``python -m devhost`` for the crash test (tests/test_crash.py, bench/crash.py), with two 10-minute
leases shortened so that a killed worker's messages come back within seconds instead of minutes.

- CRASH_QUEUE_LEASE_S -> ``devhost.queues.LEASE_SECONDS``: how long a fetched queue message stays
  invisible while its function runs (the Functions host uses 10 minutes and renews it; devhost does
  not renew, so keep it well above one invocation's duration);
- CRASH_SEND_LEASE_S -> ``shared.send.ledger.LEASE_SECONDS``: how long a ``sending`` delivery row belongs to
  the worker that claimed it (the host's functionTimeout, 10 minutes).

Neither is a setting of devhost or of the app (see the crash test's report); everything else is devhost's
own ``main`` with the arguments given here.
"""

from __future__ import annotations

import os
import sys

import devhost.queues
import shared.send.ledger
from devhost.__main__ import main


def _shorten(module, name: str, env: str) -> None:
    if env not in os.environ:
        return
    if not hasattr(module, name):  # renamed: fail loudly rather than silently run with 10 minutes
        raise SystemExit(f"{module.__name__}.{name} is gone; update tests/workers/crash_host.py")
    setattr(module, name, type(getattr(module, name))(float(os.environ[env])))


if __name__ == "__main__":
    _shorten(devhost.queues, "LEASE_SECONDS", "CRASH_QUEUE_LEASE_S")
    _shorten(shared.send.ledger, "LEASE_SECONDS", "CRASH_SEND_LEASE_S")
    sys.exit(main(sys.argv[1:]))
