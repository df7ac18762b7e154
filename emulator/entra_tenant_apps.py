"""One customer tenant's copy of the app: its enterprise application (service principal), deleted or disabled.

A multi-tenant app lives in each customer tenant as a service principal ("enterprise application"). That
tenant's admin may delete it or disable it ("Enabled for users to sign-in?" No / accountEnabled false). From
then on Entra refuses to issue tokens *for that tenant* only; other tenants and the app's own credential in
its home tenant are untouched. What the token endpoint answers (AADSTS error reference; sources in
docs/emulator.md, "Isolation faults (issue 25)"):

- deleted: 400 ``unauthorized_client`` AADSTS700016 "Application with identifier '<app id>' was not found in the
  directory '<directory name>'. This can happen if the application has not been installed by the administrator
  of the tenant or consented to by any user in the tenant. ...". Deleting a service principal deletes its
  permission grants too, so this tenant's admin and user consents for the app are dropped; a later consent
  (a user's, where the tenant lets users consent, or an admin's) creates the service principal again.
- disabled: 400 ``unauthorized_client`` AADSTS7000112 "Application '<app id>'(<app name>) is disabled."
  (UnauthorizedClientApplicationDisabled); sign-in shows the same error; consent does not enable it again.

Admin (test-only): ``PUT /_emulator/tenants/{tid}/enterprise-apps/{client_id} {"state": "deleted" | "disabled"
| null}`` (``EmulatorAdmin.set_enterprise_app``). Counter ``entra.enterprise_app_refused``.
"""

from __future__ import annotations

from typing import Any

ENTERPRISE_APP_STATES = ("deleted", "disabled")


def app_state(tenant: Any, client_id: str) -> str | None:
    """``deleted`` / ``disabled`` when this tenant removed or disabled the app, else None."""
    if tenant is None:
        return None
    return (tenant.enterprise_apps or {}).get(client_id.lower())


def set_app_state(state: Any, tenant: Any, client_id: str, value: str | None) -> None:
    """Record the tenant admin's action; deleting drops the tenant's consents for the app (its grants)."""
    if value is not None and value not in ENTERPRISE_APP_STATES:
        raise ValueError(f"state must be null or one of {ENTERPRISE_APP_STATES}")
    key = client_id.lower()
    with state.lock:
        apps = dict(tenant.enterprise_apps or {})
        if value is None:
            apps.pop(key, None)
        else:
            apps[key] = value
        tenant.enterprise_apps = apps
        if value == "deleted":
            tenant.admin_consented.pop(key, None)
            for user in state.directory.users_in(tenant.tid):
                user.consents.pop(key, None)


def consented_again(state: Any, tenant: Any, client_id: str) -> None:
    """A consent for the app in this tenant re-creates a deleted service principal (a disabled one stays)."""
    if app_state(tenant, client_id) == "deleted":
        set_app_state(state, tenant, client_id, None)


def refusal(state: Any, app: Any, tid: str) -> tuple[str, int, str] | None:
    """(error, AADSTS code, message) when tenant ``tid`` removed or disabled ``app``, else None."""
    tenant = state.directory.tenant(tid)
    found = app_state(tenant, app.client_id)
    if found is None:
        return None
    state.counters.incr("entra.enterprise_app_refused")
    if found == "disabled":
        return "unauthorized_client", 7000112, disabled_message(app)
    return (
        "unauthorized_client",
        700016,
        f"Application with identifier '{app.client_id}' was not found in the directory '{tenant.display_name}'. "
        "This can happen if the application has not been installed by the administrator of the tenant or consented "
        "to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
    )


def disabled_message(app: Any) -> str:
    """AADSTS7000112's wording (reported verbatim in many public sign-in errors)."""
    return f"Application '{app.client_id}'({app.display_name}) is disabled."
