"""B7: capacity of the token store and the keep-alive against Key Vault's service limits, one simulated day.

``connections`` users connect through the real connect flow; then one day of a stated activity mix runs, compressed
into ``rounds`` rounds of ``round_s`` seconds, against the emulator with Key Vault's limits enforced
(``keyvault_config(limits=True, limits_scale=s)``) and the counters of ``keyvault_stats()``:

- **active connections** (``active_share`` of them) send ``emails_per_active`` emails over the day, each email on a
  random one of ``instances`` app instances (the queue hands any message to any instance), through the send path's
  token call: ``Services.tokens.access_token`` of the connection row (``connections.recent``), i.e. the sealed
  store (shared/tokens/cache_store.py): a row read and one unwrap the first time an instance opens a connection,
  a locked refresh (row read and write, a token call) when the access token has run out. Access tokens live one
  round (the emulator issues them for 300 s + ``round_s``; Mailbridge never uses one with under 300 s left), so an
  active connection refreshes about once a round, as a sending mailbox does once per access-token lifetime;
- **instance cold starts**: one instance is replaced by a fresh one (no data key in memory) every round, so
  unwraps repeat as they do when Flex Consumption scales in and out;
- **new connections**: ``new_share`` of the connections connect during the day (the public key once per
  instance, wrap locally; the pending grant's erasure at the claim also deletes a legacy secret of its name,
  which does not exist: one Key Vault delete per new connection);
- **idle connections** are kept alive: the keep-alive's share for a day (idle / REFRESH_AFTER_DAYS) is made due
  and the timer's sweep (``KeepAlive`` with KEEPALIVE_CONCURRENCY and KEEPALIVE_RUN_SECONDS) runs in the first round
  on an instance of its own, as a cold instance.

The limits are scaled so that this day, compressed into ``rounds x round_s`` seconds, loads the vault as
``target_connections`` connections with the same mix would over a real day:
``s = connections x 86,400 / (day seconds x target_connections)``. What the run could represent is reported from
its actual duration (a slow machine stretches the day and represents fewer). Throttled operations are the goal's
measure (0 at the target load); the peak share of the scaled key budget any 10-second window used (sampled from
``keyvault_stats()["window_usage"]`` while the day runs) is the headroom left at the target; rates per connection
per day feed docs/capacity.md.

What B7 cannot show: its active connections (hundreds) fit every instance's data-key cache (``TokenCacheStore``,
TOKEN_KEY_CACHE_SIZE, 100,000 keys by default), so each instance unwraps a connection once. With more active
connections a day than that they no longer fit and unwraps approach one per email (docs/capacity.md).
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.b5_keepalive import make_due
from shared.services import Services
from shared.tokens.refresh import KeepAlive

DAY = 86_400
EARLY_REFRESH_S = 300  # shared/tokens/tokens.py EARLY_REFRESH_SECONDS: a token with less left is refreshed


def _fresh_instance(settings: Any) -> Services:
    """A new app instance: its own clients and an empty data-key cache."""
    return Services(settings)


class _PeakUsage(threading.Thread):
    """Samples the vault's window usage (share of each scaled budget used in the last 10 s) until stopped."""

    def __init__(self, admin: Any, every_s: float = 0.5) -> None:
        super().__init__(name="b7-kv-usage", daemon=True)
        self.admin, self.every_s = admin, every_s
        self.peak: dict[str, float] = {}
        self.done = threading.Event()

    def sample(self) -> None:
        for budget, used in self.admin.keyvault_stats().get("window_usage", {}).items():
            self.peak[budget] = max(self.peak.get(budget, 0.0), float(used))

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            self.sample()

    def stop(self) -> dict[str, float]:
        """The peak share of each budget seen (a last sample first: the day's final window counts too)."""
        self.done.set()
        self.join()
        self.sample()
        return self.peak


def _ops(stats: dict[str, Any]) -> dict[str, int]:
    return {
        **{f"ops_{k}": v for k, v in stats["ops"].items()},
        **{f"throttled_{k}": v for k, v in stats["throttled"].items()},
    }


def run(
    stack: Any,
    connections: int = 3000,
    *,
    active_share: float = 0.10,
    emails_per_active: int = 10,
    new_share: float = 0.01,
    instances: int = 4,
    rounds: int = 10,
    round_s: float = 30.0,
    target_connections: int = 10_000_000,
    workers: int = 8,
    seed: int = 7,
) -> dict[str, Any]:
    rng = random.Random(seed)
    n_new = max(1, round(connections * new_share))
    users = tuple(f"c{i}" for i in range(connections + n_new))
    kit = stack.send_kit(users)
    admin = kit.mb.admin
    settings = kit.services.settings
    # Access tokens live one round (from the connects on): an active connection refreshes about once a round.
    admin.entra_settings(access_token_lifetime_s=int(EARLY_REFRESH_S + round_s))
    seed_start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = list(pool.map(kit.connect, users[:connections]))
    seed_s = time.perf_counter() - seed_start

    n_active = max(1, round(connections * active_share))
    active = ids[:n_active]
    idle = ids[n_active:]
    due = rng.sample(idle, max(1, round(len(idle) / settings.refresh_after_days))) if idle else []
    make_due(kit.services, due)
    emails_per_round = max(1, round(emails_per_active / rounds))

    day_target_s = rounds * round_s
    scale = connections * DAY / (day_target_s * target_connections)
    admin.keyvault_config(limits=True, limits_scale=scale)
    before, counters_before = _ops(admin.keyvault_stats()), admin.counters()
    fleet = [_fresh_instance(settings) for _ in range(instances)]
    sweep_result: dict[str, Any] = {}
    emails = 0
    cold_starts = instances
    sampler = _PeakUsage(admin)
    sampler.start()
    start = time.perf_counter()
    try:

        def sweep() -> None:
            timer_instance = _fresh_instance(settings)
            report = KeepAlive(timer_instance, concurrency=settings.keepalive_concurrency).sweep(
                budget_seconds=settings.keepalive_run_seconds
            )
            sweep_result.update(report.as_dict(), wall_s=time.perf_counter() - start)

        sweeper = threading.Thread(target=sweep, name="b7-keepalive")
        sweeper.start()
        new_users = list(users[connections:])
        for r in range(rounds):
            round_start = time.perf_counter()
            if r:
                fleet[r % instances] = _fresh_instance(settings)  # one instance scaled in, a cold one out
                cold_starts += 1
            jobs = [(rng.choice(fleet), cid) for cid in active for _ in range(emails_per_round)]
            rng.shuffle(jobs)
            joining = new_users[r * n_new // rounds : (r + 1) * n_new // rounds]

            def send(job: tuple[Services, str]) -> None:
                instance, cid = job
                conn = instance.connections.recent(cid)
                assert conn is not None and instance.tokens.access_token(conn)

            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="b7") as pool:
                joined = pool.map(kit.connect, joining)
                list(pool.map(send, jobs))
                ids.extend(joined)
            emails += len(jobs)
            time.sleep(max(0.0, round_s - (time.perf_counter() - round_start)))
        sweeper.join()
        wall = time.perf_counter() - start
    finally:
        peak = sampler.stop()
        admin.keyvault_config(limits=False, limits_scale=1.0)
        admin.entra_settings(access_token_lifetime_s=None)
    after, counters = _ops(admin.keyvault_stats()), admin.counters()
    delta = {k: after[k] - before.get(k, 0) for k in after}
    calls = {k: v - counters_before.get(k, 0) for k, v in counters.items() if v != counters_before.get(k, 0)}
    total = connections + n_new
    represented = total * DAY / (wall * scale)
    kv_total = sum(v for k, v in delta.items() if k.startswith("ops_"))
    return {
        "connections": connections,
        "new_connections": n_new,
        "active": n_active,
        "idle": len(idle),
        "emails": emails,
        "instances": instances,
        "cold_starts": cold_starts,
        "rounds": rounds,
        "round_s": round_s,
        "seed_s": seed_s,
        "wall_s": wall,
        "limits_scale": scale,
        "target_connections": target_connections,
        "represented_connections": represented,
        "kv": delta,
        "kv_ops": kv_total,
        "kv_calls": {k[len("calls.kv.") :]: v for k, v in calls.items() if k.startswith("calls.kv.")},
        "refresh_grants": calls.get("entra.grant.refresh_token", 0),
        "token_calls": calls.get("calls.entra.token", 0),
        "unwraps_per_connection_day": delta.get("ops_unwrap", 0) / total,
        "writes_per_connection_day": delta.get("ops_write", 0) / total,
        "kv_ops_per_connection_day": kv_total / total,
        # The sweep's refreshes each unwrap once on the timer's cold instance: the rest are the senders'.
        "unwraps_per_active_day": (delta.get("ops_unwrap", 0) - sweep_result.get("refreshed", 0)) / n_active,
        "peak_window_usage": peak,
        "throttled": delta.get("throttled_total", 0),
        "sweep": sweep_result,
        "sweep_due": len(due),
        "keepalive_concurrency": settings.keepalive_concurrency,
        "keepalive_run_seconds": settings.keepalive_run_seconds,
    }
