"""Which Graph scopes one connection's grant may be refreshed with, and which configured features it lacks.

A refresh may ask only what the grant was consented for: the auth-code flow's "Refresh the access token" says
the scope "must be equivalent to or a subset of the scopes requested in the original authorization_code request
leg" (learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow#refresh-the-access-token); a wider one
is ``invalid_grant`` AADSTS65001. So turning ENABLE_MAIL_READWRITE or ENABLE_SHARED_MAILBOXES on must not widen
the refresh of grants made before: each connection is refreshed with what it was granted *and* is still
configured (turning a feature off narrows it, which is always allowed), and says which features it lacks until
the user reconnects (``features_missing``).
"""

from __future__ import annotations

from collections.abc import Iterable

# Feature name (as the status API shows it) -> the delegated permission it needs beyond Mail.Send.
FEATURE_SCOPES = {"mail_readwrite": "Mail.ReadWrite", "shared_mailboxes": "Mail.Send.Shared"}


def has_scope(granted: Iterable[str], name: str) -> bool:
    """Whether ``granted`` holds permission ``name`` (bare, or resource-qualified as outside the public cloud)."""
    want = name.lower()
    return any(s.lower() == want or s.lower().endswith("/" + want) for s in granted)


def refresh_scopes(configured: list[str], granted: Iterable[str]) -> list[str]:
    """The configured scopes this grant holds, spelt as configured: what a refresh of it may ask. A row without
    scopes (never written so) is asked the configured list, as before."""
    granted = list(granted)
    held = [s for s in configured if has_scope(granted, s.rsplit("/", 1)[-1])]
    return held or list(configured)


def missing_features(configured: list[str], granted: Iterable[str]) -> list[str]:
    """Features switched on in the settings that this grant was not consented for (a reconnect adds them)."""
    granted = list(granted)
    if not granted:
        return []
    return [
        feature
        for feature, scope in FEATURE_SCOPES.items()
        if has_scope(configured, scope) and not has_scope(granted, scope)
    ]
