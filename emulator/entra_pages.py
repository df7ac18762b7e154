"""HTML pages of the emulated sign-in, in Microsoft's order: sign in first, then (only if needed) either
the permission (consent) page or "Need admin approval"; also the error page.

Element ids are stable for headless browsers: ``#signin`` (``#username``, ``#password``, ``#accept`` =
Sign in), ``#consent`` (``#permissions``, ``#accept``, ``#cancel``), ``#need-admin-approval``
(``#back-to-app``; with the admin consent workflow ``#justification`` + ``#request-approval``). Every form
posts back to the exact authorize URL it was served from, so a non-interactive client can do the same
POST with ``requests`` (``username``, ``password`` (optional), ``action``=``accept`` signs in and
consents in one go; ``back`` / ``request`` answer the admin-approval page).
"""

from __future__ import annotations

from html import escape

from emulator.core import Response, html_response

_STYLE = """
body{font-family:Segoe UI,Helvetica,Arial,sans-serif;background:#f2f2f2;margin:0}
main{max-width:440px;margin:48px auto;background:#fff;padding:36px 44px;box-shadow:0 2px 6px rgba(0,0,0,.2)}
h1{font-size:22px;font-weight:600;margin:0 0 12px} .muted{color:#666;font-size:13px}
input[type=text],input[type=password]{width:100%;padding:6px 0;margin:6px 0 14px;border:0;
border-bottom:1px solid #666;font-size:15px} ul{padding-left:20px}
button{padding:6px 22px;margin-right:8px;font-size:15px;border:1px solid #888;background:#fff}
button#accept{background:#0067b8;color:#fff;border-color:#0067b8}
.err{color:#a80000;margin:10px 0} .banner{font-size:11px;color:#a80000;text-transform:uppercase}
"""


def _page(title: str, inner: str, status: int = 200) -> Response:
    html = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body><main>"
        "<div class='banner'>Mailbridge emulator - not Microsoft</div>"
        f"{inner}</main></body></html>"
    )
    # The page must never be framed by the app (clickjacking), as with the real sign-in page.
    headers = {"X-Frame-Options": "DENY", "Cache-Control": "no-store"}
    return html_response(status, html, headers)


def sign_in_page(
    *,
    action_url: str,
    app_name: str,
    tenant_label: str,
    permissions: list[str],
    login_hint: str = "",
    accounts: list[str] | None = None,
    error: str = "",
    admin_approval: bool = False,
) -> Response:
    """The combined "pick an account" + "Permissions requested" page."""
    perms = "".join(f"<li>{escape(p)}</li>" for p in permissions) or "<li>Sign you in</li>"
    options = "".join(f"<option value='{escape(a)}'>" for a in accounts or [])
    err = f"<p class='err' id='error'>{escape(error)}</p>" if error else ""
    heading = "Permissions requested" + (" - admin approval" if admin_approval else "")
    inner = f"""
<h1>{escape(heading)}</h1>
<p><b id="app-name">{escape(app_name)}</b> ({escape(tenant_label)}) wants to:</p>
<ul id="permissions">{perms}</ul>
{err}
<form method="post" action="{escape(action_url)}" id="signin">
  <label for="username">Email, phone, or Skype</label>
  <input type="text" id="username" name="username" value="{escape(login_hint)}" list="accounts" autofocus>
  <datalist id="accounts">{options}</datalist>
  <label for="password">Password <span class="muted">(optional in the emulator)</span></label>
  <input type="password" id="password" name="password">
  <p class="muted">Accepting lets this app use the permissions above. You can change this later.</p>
  <button type="submit" id="accept" name="action" value="accept">Accept</button>
  <button type="submit" id="cancel" name="action" value="cancel">Cancel</button>
</form>"""
    return _page("Sign in to your account", inner)


def _hidden(fields: dict[str, str]) -> str:
    return "".join(f"<input type='hidden' name='{escape(k)}' value='{escape(v)}'>" for k, v in fields.items())


def sign_in_only_page(
    *, action_url: str, app_name: str, login_hint: str = "", accounts: list[str] | None = None, error: str = ""
) -> Response:
    """Step 1, as Microsoft: who are you (no permission list yet: that depends on the user's organisation)."""
    options = "".join(f"<option value='{escape(a)}'>" for a in accounts or [])
    err = f"<p class='err' id='error'>{escape(error)}</p>" if error else ""
    inner = f"""
<h1>Sign in</h1>
<p>to continue to <b id="app-name">{escape(app_name)}</b></p>
{err}
<form method="post" action="{escape(action_url)}" id="signin">
  <label for="username">Email, phone, or Skype</label>
  <input type="text" id="username" name="username" value="{escape(login_hint)}" list="accounts" autofocus>
  <datalist id="accounts">{options}</datalist>
  <label for="password">Password <span class="muted">(demo users: <code>password</code>)</span></label>
  <input type="password" id="password" name="password">
  <button type="submit" id="accept" name="action" value="signin">Sign in</button>
  <button type="submit" id="cancel" name="action" value="cancel">Cancel</button>
</form>"""
    return _page("Sign in to your account", inner)


def consent_page(
    *, action_url: str, app_name: str, tenant_label: str, permissions: list[str], username: str, password: str
) -> Response:
    """Step 2 when the user may consent: "Permissions requested" with exactly the scopes asked for."""
    perms = "".join(f"<li>{escape(p)}</li>" for p in permissions)
    inner = f"""
<h1>Permissions requested</h1>
<p class="muted">{escape(username)}</p>
<p><b id="app-name">{escape(app_name)}</b> ({escape(tenant_label)}) wants to:</p>
<ul id="permissions">{perms}</ul>
<form method="post" action="{escape(action_url)}" id="consent">
  {_hidden({"username": username, "password": password})}
  <p class="muted">Accepting lets this app use the permissions above. You can change this later.</p>
  <button type="submit" id="accept" name="action" value="accept">Accept</button>
  <button type="submit" id="cancel" name="action" value="cancel">Cancel</button>
</form>"""
    return _page("Permissions requested", inner)


def need_admin_approval_page(
    *, action_url: str, app_name: str, username: str, password: str, workflow: bool
) -> Response:
    """Step 2 when the organisation does not let this user consent: Microsoft's "Need admin approval"
    (with a request form when the tenant has the admin consent workflow on)."""
    request = (
        """<label for="justification">Justification for requesting this app</label>
  <input type="text" id="justification" name="justification">
  <button type="submit" id="request-approval" name="action" value="request">Request approval</button>"""
        if workflow
        else "<p class='muted'>Have an admin account? Sign in with that account.</p>"
    )
    inner = f"""
<h1 id="need-admin-approval">Need admin approval</h1>
<p class="muted">{escape(username)}</p>
<p><b id="app-name">{escape(app_name)}</b> needs permission to access resources in your organization that only
an admin can grant. {"Request approval from an admin" if workflow else "Please ask an admin to grant permission"}
to this app before you can use it.</p>
<form method="post" action="{escape(action_url)}" id="admin-approval">
  {_hidden({"username": username, "password": password})}
  {request}
  <button type="submit" id="back-to-app" name="action" value="back">
    Return to the application without granting consent</button>
</form>"""
    return _page("Need admin approval", inner)


def error_page(code: int, message: str, status: int = 400) -> Response:
    """A terminal error shown to the user (no redirect back to the app), e.g. AADSTS50011."""
    inner = (
        "<h1>Sorry, but we're having trouble signing you in.</h1>"
        f"<p id='error' class='err'>AADSTS{code}: {escape(message)}</p>"
    )
    return _page("Sign in error", inner, status)


def form_post_page(redirect_uri: str, params: dict[str, str]) -> Response:
    """``response_mode=form_post``: an auto-submitting form to the redirect URI."""
    fields = "".join(f"<input type='hidden' name='{escape(k)}' value='{escape(v)}'>" for k, v in params.items())
    inner = (
        f"<form method='post' action='{escape(redirect_uri)}' id='form_post'>{fields}"
        "<noscript><button type='submit'>Continue</button></noscript></form>"
        "<script>document.getElementById('form_post').submit()</script>"
    )
    return _page("Working...", inner)
