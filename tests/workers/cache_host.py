"""``python -m devhost`` for tests/test_disconnect_bound.py: devhost's own ``main``, with
``shared.tokens.store.CONNECTION_CACHE_S`` (how long the sender acts on a connection row it read earlier) taken from
CACHE_HOST_CONNECTION_CACHE_S when set, so a run can show that the test fails without the bound."""

from __future__ import annotations

import os
import sys

import shared.tokens.store
from devhost.__main__ import main

if __name__ == "__main__":
    if "CACHE_HOST_CONNECTION_CACHE_S" in os.environ:
        if not hasattr(shared.tokens.store, "CONNECTION_CACHE_S"):  # renamed: fail loudly
            raise SystemExit("shared.tokens.store.CONNECTION_CACHE_S is gone; update tests/workers/cache_host.py")
        shared.tokens.store.CONNECTION_CACHE_S = float(os.environ["CACHE_HOST_CONNECTION_CACHE_S"])
    sys.exit(main(sys.argv[1:]))
