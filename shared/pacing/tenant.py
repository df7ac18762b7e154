"""A tenant's external recipients per rolling 24 hours, shared by every instance (issue 28; opt-in per tenant with
TENANT_EXTERNAL_RECIPIENT_LIMITS, shared/base/tenant_limits.py, where the figures and their sources are).

Exchange Online counts every message-recipient pair whose domain is not an accepted domain of the tenant against
the tenant's TERRL, whichever mailbox sends, and over it *accepts* the send and NDRs it (5.7.233). So a message to
external recipients of a configured tenant reserves them, before Graph, in the tenant's ``tenant_external`` row of
the budget table with an ETag-conditional write, and waits (``tenant_external_limit``) when they do not fit; it is
never sent to be NDR'd. The row: ``{"b": [[leave_at, n], ...], "d": [domain, ...]}``, recipients in buckets of
1/96 of the window (leaving no earlier than Graph's count: admission + the time an attempt may take + the window,
rounded up), and ``d`` the domains of the tenant's mailboxes that sent.

Internal, without more Graph permissions than Mail.Send (the tenant's accepted domains would need Exchange
admin access; ``/organization`` verifiedDomains, Organization.Read.All, lists verified domains, not accepted
ones): a recipient in the sending mailbox's domain, in a domain of another of the tenant's mailboxes that sent
(the row's ``d``), or in the setting's ``domains``. Anything else counts as external: at worst the budget is
stricter than Exchange's. Counted from admission, as the upload budget is: an attempt that ended before Graph
still counts (the door does not tell the two apart; Exchange may count a send that failed). Personal Outlook.com
mailboxes are never in scope. A tenant not in the setting costs nothing: no Storage call.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from shared.base.tenant_limits import TenantExternalLimit
from shared.pacing import budget_row as row
from shared.pacing.admission import Mailbox

logger = logging.getLogger(__name__)

TENANT_ROW = "tenant_external"
BUCKETS_PER_WINDOW = 96
WAIT_MARGIN_S = 1.0  # past the moment enough recipients leave: Exchange's window and our clock differ a little
MAX_DOMAINS = 200  # domains of sending mailboxes remembered per tenant (the row stays small)
REASON = "tenant_external_limit"


@dataclass(frozen=True)
class Reservation:
    """``wait`` > 0: not admitted (``reason``); else ``n`` external recipients counted in the bucket ``leave_at``
    of ``tenant_id`` (n = 0: nothing counted)."""

    wait: float = 0.0
    reason: str = ""
    tenant_id: str = ""
    leave_at: float = 0.0
    n: int = 0


def domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower()


class TenantBudget:
    """``reserve(mailbox, addresses, grace_s) -> Reservation``; ``withdraw(reservation)`` when the message was held
    back after all (Graph's upload limit) and nothing was sent."""

    def __init__(
        self,
        table: Callable[[], Any],
        clock: Callable[[], float],
        count_call: Callable[[str], None],
        limits: Iterable[TenantExternalLimit],
        window_s: float = 86_400.0,
    ) -> None:
        self.table = table
        self.clock = clock
        self.count_call = count_call
        self.limits = {lim.tenant_id.lower(): lim for lim in limits}
        self.window_s = window_s
        self.known: dict[str, set[str]] = {}  # per tenant: the row's domains of sending mailboxes, as last read

    def limit_of(self, mailbox: Mailbox) -> TenantExternalLimit | None:
        """The tenant's budget, or None: not configured (the default), or a personal Outlook.com mailbox."""
        if not self.limits or mailbox.consumer:
            return None
        return self.limits.get(mailbox.tenant_id.lower())

    def external(self, lim: TenantExternalLimit, mailbox: Mailbox, addresses: Sequence[str]) -> int:
        """How many of ``addresses`` count against the tenant's TERRL (once per address: a message-recipient pair)."""
        internal = {*lim.domains, *self.known.get(lim.tenant_id, ()), domain(mailbox.address)}
        return sum(1 for address in addresses if domain(address) not in internal)

    def reserve(self, mailbox: Mailbox, addresses: Sequence[str], grace_s: float) -> Reservation:
        lim = self.limit_of(mailbox)
        if lim is None or not addresses or self.external(lim, mailbox, addresses) == 0:
            return Reservation()
        key, own = f"tenant|{lim.tenant_id}", domain(mailbox.address)
        for _ in range(row.WRITE_ATTEMPTS):
            self.count_call("read tenant")
            state, etag = row.read(self.table(), key, row_key=TENANT_ROW, empty={"b": [], "d": []})
            self.known[lim.tenant_id] = set(state["d"])
            n = self.external(lim, mailbox, addresses)
            if n == 0:
                return Reservation()
            now = self.clock()
            live = sorted([float(b[0]), int(b[1])] for b in state["b"] if b[0] > now)
            used = sum(b[1] for b in live)
            over = used + n - lim.recipients_per_day
            if used and over > 0:
                return Reservation(row.wait_until_freed(live, over, now, WAIT_MARGIN_S) + random.uniform(0, 1), REASON)
            width = self.window_s / BUCKETS_PER_WINDOW
            leave_at = math.ceil((now + grace_s + self.window_s) / width) * width
            _add(live, leave_at, n)
            learn = own and own not in state["d"] and len(state["d"]) < MAX_DOMAINS
            domains = [*state["d"], own] if learn else state["d"]
            self.count_call("reserve tenant")
            if row.write(self.table(), key, {"b": live, "d": domains}, etag, row_key=TENANT_ROW) is not None:
                return Reservation(tenant_id=lim.tenant_id, leave_at=leave_at, n=n)
        logger.warning("Tenant external-recipient row stayed contended after %d attempts", row.WRITE_ATTEMPTS)
        return Reservation(random.uniform(0.5, 1.5), "contended")

    def withdraw(self, held: Reservation) -> None:
        """Take a reservation out again (nothing was sent). Never raises: on Storage trouble it keeps counting."""
        if held.n <= 0:
            return
        key = f"tenant|{held.tenant_id}"
        try:
            for _ in range(row.WRITE_ATTEMPTS):
                self.count_call("withdraw tenant")
                state, etag = row.read(self.table(), key, row_key=TENANT_ROW, empty={"b": [], "d": []})
                _add(state["b"], held.leave_at, -held.n)
                state["b"] = [b for b in state["b"] if b[1] > 0]
                if row.write(self.table(), key, state, etag, row_key=TENANT_ROW) is not None:
                    return
        except Exception as exc:  # noqa: BLE001  (a hold must not fail over a best-effort give-back)
            logger.warning("Tenant external-recipient reservation not withdrawn (%s)", type(exc).__name__)


def _add(buckets: list[list[Any]], leave_at: float, n: int) -> None:
    for bucket in buckets:
        if bucket[0] == leave_at:
            bucket[1] += n
            return
    buckets.append([leave_at, n])
