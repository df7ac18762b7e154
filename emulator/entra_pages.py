"""HTML pages of the emulated sign-in: account + consent page, admin approval page, error page.

Element ids are stable for headless browsers: ``#username``, ``#password``, ``#accept``, ``#cancel``.
The form posts back to the exact authorize URL it was served from, so a non-interactive client
can do the same POST with ``requests`` (fields ``username``, ``password`` (optional), ``action``).
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
