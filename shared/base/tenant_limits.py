"""TENANT_EXTERNAL_RECIPIENT_LIMITS: the opt-in per-tenant budget of external recipients (shared/pacing/tenant.py),
parsed for shared/base/settings.py.

Exchange Online's Tenant External Recipient Rate Limit (TERRL; Exchange Team Blog, "Introducing Exchange Online
Tenant Outbound Email Limits", Feb 2025, techcommunity.microsoft.com/blog/exchange/.../4372797; MC1023294): a tenant
may send to ``500 × (purchased email licenses ^ 0.7) + 9,500`` external recipients per rolling (sliding) 24 hours,
a trial-only tenant to 5,000; over it Exchange accepts the send and NDRs it (5.7.233, trial tenants 5.7.232:
learn.microsoft.com, "Email non-delivery reports and SMTP errors in Exchange Online"). An external recipient is one
whose domain is not an accepted domain of the tenant, counted once per message and recipient.

The setting is a JSON object keyed by tenant id: a license count, or ``{"licenses": n, "trial": true|false,
"domains": ["contoso.com", ...]}`` (``domains``: accepted domains besides those of the tenant's sending mailboxes).
Empty (the default): no tenant budget, and no Storage call for it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from shared.base.errors import SettingsError

SETTING = "TENANT_EXTERNAL_RECIPIENT_LIMITS"
TRIAL_LIMIT = 5_000  # a trial tenant's TERRL, whatever its license count
_TENANT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
MAX_LICENSES = 10_000_000


def terrl(licenses: int, trial: bool = False) -> int:
    """Exchange Online's external recipients per rolling 24 hours for a tenant, rounded as Microsoft's examples
    are (to the nearest: 10 licenses -> 12,006, 100 -> 22,059, 100,000 -> 1,590,639); a trial tenant 5,000."""
    return TRIAL_LIMIT if trial else round(500 * licenses**0.7 + 9_500)


@dataclass(frozen=True)
class TenantExternalLimit:
    """One tenant's budget: its TERRL and the domains that are internal besides its sending mailboxes' own."""

    tenant_id: str
    licenses: int
    trial: bool = False
    domains: tuple[str, ...] = ()

    @property
    def recipients_per_day(self) -> int:
        return terrl(self.licenses, self.trial)


def parse_tenant_limits(raw: str) -> tuple[TenantExternalLimit, ...]:
    """The setting's value, or SettingsError naming it (bad JSON, a tenant id that is not a GUID, a count that is
    not a non-negative integer, a bad domain)."""
    if not raw.strip():
        return ()
    try:
        value = json.loads(raw)
    except ValueError:
        raise SettingsError(SETTING, "must be a JSON object of tenant id -> license count") from None
    if not isinstance(value, dict):
        raise SettingsError(SETTING, "must be a JSON object of tenant id -> license count")
    return tuple(_tenant(str(tenant).lower(), entry) for tenant, entry in value.items())


def _tenant(tenant: str, entry: object) -> TenantExternalLimit:
    if not _TENANT_ID.match(tenant):
        raise SettingsError(SETTING, f"keys must be tenant ids (GUIDs), got {tenant!r}")
    if not isinstance(entry, dict):
        entry = {"licenses": entry}
    unknown = set(entry) - {"licenses", "trial", "domains"}
    if unknown:
        raise SettingsError(SETTING, f"tenant {tenant}: unknown keys {sorted(unknown)}")
    trial = entry.get("trial", False)
    licenses = entry.get("licenses", 0 if trial is True else None)
    if not isinstance(trial, bool):
        raise SettingsError(SETTING, f"tenant {tenant}: trial must be true or false")
    if isinstance(licenses, bool) or not isinstance(licenses, int) or not 0 <= licenses <= MAX_LICENSES:
        raise SettingsError(SETTING, f"tenant {tenant}: licenses must be an integer from 0 to {MAX_LICENSES}")
    domains = entry.get("domains", [])
    if not isinstance(domains, list) or not all(isinstance(d, str) and _DOMAIN.match(d.lower()) for d in domains):
        raise SettingsError(SETTING, f"tenant {tenant}: domains must be a list of domain names")
    return TenantExternalLimit(tenant, licenses, trial, tuple(sorted({d.lower() for d in domains})))
