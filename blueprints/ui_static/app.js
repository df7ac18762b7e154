// Mailbridge sample connect page. No framework, no external resources; every value coming from the
// URL or the API is rendered with textContent (never innerHTML), and links are checked to be http(s)
// (the admin approval link: this app's own admin-consent route only).
"use strict";

(function () {
  const API = "ui/"; // relative to /api/ui
  const MESSAGES = {
    admin_consent_required:
      "Your organisation requires an administrator to approve Mailbridge before you can connect. " +
      "Send the admin approval link below to your IT administrator, then connect again.",
    blocked_by_policy:
      "A Conditional Access policy of your organisation blocked the sign-in. Ask your IT administrator " +
      "to allow this app, or connect from a compliant device or network.",
    mfa_required: "Your organisation requires multi-factor authentication. Connect again and complete it.",
    interaction_required: "Microsoft needs you to sign in interactively. Connect again.",
    user_declined: "The permission request was declined. Connect again and accept to send mail from your mailbox.",
    admin_consent_declined: "The administrator did not approve Mailbridge.",
    app_misconfigured: "The Mailbridge app registration is misconfigured. Tell the operator of this service.",
    identity_mismatch: "A different account signed in than the one expected. Connect again with the right account.",
    expired_link: "This connect link has expired or was already used. Click Connect again.",
    invalid_state: "The sign-in response did not match a sign-in started here. Click Connect again.",
    temporarily_unavailable: "A Microsoft service is temporarily unavailable. Try again in a moment.",
    reauth_required: "The mailbox connection has expired or was revoked. Connect again.",
    return_url_not_allowed: "This page's address is not an allowed return address (ALLOWED_RETURN_ORIGINS).",
    claim_mismatch:
      "The mailbox was signed in through a link made for another user, so it was not attached and its grant " +
      "was discarded. Connect with a link of your own.",
    result_used: "This sign-in result was already used. The connection below is current; connect again if needed.",
    result_expired: "The sign-in result was not claimed within 10 minutes and was discarded. Click Connect again.",
    invalid_result: "The sign-in result in the address is not valid. Click Connect again.",
  };

  const $ = (id) => document.getElementById(id);
  let connectionId = null;
  let mailboxViewer = null; // the emulator's mailbox viewer (local stack only)
  let logTimer = null;

  function el(tag, textValue, attrs) {
    const node = document.createElement(tag);
    if (textValue !== undefined && textValue !== null) node.textContent = String(textValue);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function httpUrl(raw) {
    try {
      const url = new URL(raw, window.location.href);
      return url.protocol === "https:" || url.protocol === "http:" ? url : null;
    } catch (_) {
      return null;
    }
  }

  function showOutcome(kind, title, sentence, extra) {
    const box = $("outcome");
    box.replaceChildren(el("strong", title, { id: "outcome-title" }), el("p", sentence, { id: "outcome-message" }));
    for (const node of extra || []) box.append(node);
    box.className = "outcome " + kind;
    box.hidden = false;
  }

  async function call(method, path, body) {
    const init = { method, cache: "no-store", credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(API + path, init);
    } catch (_) {
      return { ok: false, status: 0, data: { error: { message: "The app did not answer. Is it running?" } } };
    }
    let data = null;
    try {
      data = await resp.json();
    } catch (_) {
      data = null;
    }
    return { ok: resp.ok, status: resp.status, data };
  }

  function errorText(result) {
    const err = (result.data && result.data.error) || {};
    return (MESSAGES[err.code] || err.message || "Request failed (HTTP " + result.status + ").") +
      (err.code ? " [" + err.code + "]" : "");
  }

  function renderConnection(conn) {
    const dl = $("connection-details");
    const status = el("dd", conn.status, { id: "connection-status", class: "status-" + String(conn.status) });
    const rows = [
      ["Status", status],
      ["Mailbox", el("dd", conn.mailbox, { id: "connection-mailbox" })],
      ["Name", el("dd", conn.display_name || "")],
      ["Permissions", el("dd", (conn.scopes || []).join(" "))],
      ["Tenant", el("dd", conn.tenant_id)],
      ["Connection id", el("dd", conn.connection_id, { id: "connection-id" })],
    ];
    if (conn.last_error) rows.push(["Last error", el("dd", conn.last_error.code + ": " + conn.last_error.message)]);
    dl.replaceChildren();
    for (const [label, value] of rows) dl.append(el("dt", label), value);
    const live = conn.status === "connected";
    $("send-test").disabled = !live;
    $("disconnect").disabled = conn.status === "disconnected";
    $("connection-card").hidden = false;
    startLog(conn.connection_id);
  }

  // The outgoing log: the connection's last 20 messages, newest first, refreshed while the page is open.
  async function refreshLog(id) {
    const result = await call("GET", "connections/" + encodeURIComponent(id) + "/messages");
    if (!result.ok || !result.data) return;
    const rows = result.data.messages || [];
    const body = $("messages-body");
    body.replaceChildren();
    for (const m of rows) {
      const tr = el("tr", null, { class: "message-row" });
      tr.append(
        el("td", (m.completed_at || m.created_at || "").replace("T", " ").replace("Z", "")),
        el("td", m.id),
        el("td", m.status + (m.reason ? " (" + m.reason + ")" : ""), { class: "status-" + String(m.status) }),
        el("td", m.error ? m.error.code : ""),
      );
      body.append(tr);
    }
    $("messages-empty").hidden = rows.length > 0;
    $("messages-card").hidden = false;
  }

  function startLog(id) {
    if (logTimer) window.clearInterval(logTimer);
    refreshLog(id);
    logTimer = window.setInterval(() => refreshLog(id), 5000);
  }

  async function onConnect(event) {
    event.preventDefault();
    const userRef = $("user-ref").value.trim();
    const hint = $("login-hint").value.trim();
    if (!userRef) {
      showOutcome("error", "A user reference is needed", "Enter the id of the user in your product, e.g. demo-user-1.");
      return;
    }
    $("connect").disabled = true;
    const result = await call("POST", "connect-link", hint ? { user_ref: userRef, login_hint: hint } : { user_ref: userRef });
    const target = result.ok && result.data ? httpUrl(result.data.connect_url) : null;
    if (!target) {
      $("connect").disabled = false;
      showOutcome("error", "Could not start the connection", errorText(result));
      return;
    }
    window.sessionStorage.setItem("mailbridge.user_ref", userRef);
    window.location.assign(target.href);
  }

  async function onDisconnect() {
    if (!connectionId) return;
    $("disconnect").disabled = true;
    const result = await call("DELETE", "connections/" + encodeURIComponent(connectionId));
    if (result.ok) {
      renderConnection(result.data);
      showOutcome("", "Disconnected", "The mailbox is disconnected; its stored token was deleted. Connect again at any time.");
      $("action-result").textContent = "";
    } else {
      $("disconnect").disabled = false;
      showOutcome("error", "Could not disconnect", errorText(result));
    }
  }

  async function onSendTest() {
    if (!connectionId) return;
    const out = $("action-result");
    $("send-test").disabled = true;
    out.className = "";
    out.textContent = "Sending a test email ...";
    const result = await call("POST", "connections/" + encodeURIComponent(connectionId) + "/test", {});
    $("send-test").disabled = false;
    const d = result.data || {};
    if (result.ok && d.status === "sent") {
      out.replaceChildren("Test email sent from " + ($("connection-mailbox").textContent || "the mailbox") +
        " to itself (message " + d.id + "). It is in the mailbox's ");
      const viewer = mailboxViewer && httpUrl(mailboxViewer);
      out.append(viewer ? el("a", "Sent Items", { id: "sent-items-link", href: viewer.href }) : "Sent Items");
      out.append(".");
      refreshLog(connectionId);
    } else if (result.ok) {
      out.textContent = "Test email " + d.id + " is " + d.status + ": it will be sent shortly (pacing or throttling).";
    } else {
      out.className = "error";
      out.textContent = "The test email was not sent: " + errorText(result);
    }
  }

  // Anyone can put any admin_consent_url in this page's address: render only this app's own admin-consent
  // route (<PUBLIC_BASE_URL>/api/admin-consent, the only URL Mailbridge puts there; docs/connect.md asks
  // every return page to check this prefix). Anything else would be a phishing link under our name.
  function ownAdminConsentUrl(raw) {
    const url = httpUrl(raw);
    const route = new URL("admin-consent", window.location.href); // the page is <base>/api/ui
    if (!url || url.origin !== route.origin || url.pathname !== route.pathname) return null;
    return url.username || url.password || url.hash ? null : url;
  }

  function adminConsentLink(raw) {
    const url = ownAdminConsentUrl(raw);
    if (!url) return null;
    if (!url.searchParams.has("return_url")) url.searchParams.set("return_url", url.origin + "/api/ui");
    const p = el("p", "Admin approval link: ");
    p.append(el("a", url.href, { id: "admin-consent-link", href: url.href }));
    return p;
  }

  // The banner follows the connection's real status (read from the API), not the URL: after a
  // disconnect, a reload must not say "Connected".
  function showConnectionBanner(conn) {
    if (conn.status === "connected") {
      showOutcome("ok", "Connected", "Your mailbox is connected. Mailbridge can now send email from it.");
    } else if (conn.status === "reauth_required") {
      showOutcome("error", "Reconnect needed", MESSAGES.reauth_required);
    } else {
      showOutcome("", "Disconnected", "The mailbox is not connected. Connect again at any time.");
    }
  }

  async function loadAndShow(id) {
    const result = await call("GET", "connections/" + encodeURIComponent(id));
    if (result.ok) {
      renderConnection(result.data);
      showConnectionBanner(result.data);
    } else {
      window.sessionStorage.removeItem("mailbridge.connection_id");
    }
  }

  // What a SaaS backend does when the browser comes back with ?status=connected&result=...: claim the
  // result for the user signed in on its side. This page plays the backend with the user_ref it asked
  // the link for; a link forwarded to someone else comes back here with their mailbox and is refused.
  async function claim(result, userRef) {
    window.history.replaceState(null, "", window.location.pathname); // the result is single use
    const claimed = await call("POST", "claim", { result, user_ref: userRef || "" });
    if (claimed.ok) {
      connectionId = claimed.data.connection_id;
      window.sessionStorage.setItem("mailbridge.connection_id", connectionId);
      renderConnection(claimed.data);
      showConnectionBanner(claimed.data);
    } else {
      const code = ((claimed.data || {}).error || {}).code || "";
      const codeLine = el("p");
      codeLine.append(el("code", "error: " + code));
      showOutcome("error", "Not connected", errorText(claimed), code ? [codeLine] : []);
    }
  }

  function showQueryOutcome() {
    const q = new URLSearchParams(window.location.search);
    const status = q.get("status");
    const saved = window.sessionStorage.getItem("mailbridge.user_ref");
    if (saved) $("user-ref").value = saved;
    if (status === "connected" && q.get("result") && saved) {
      claim(q.get("result"), saved);
    } else if (status === "connected" && q.get("result")) {
      // A link made elsewhere (your backend, curl): this page does not know whose it is, so it does not
      // claim. Your backend claims it: POST /api/connections/claim {result, user_ref}.
      const line = el("p");
      line.append(el("code", q.get("result"), { id: "result-code" }));
      showOutcome("", "Signed in: waiting for the claim",
        "Claim this result from your backend within 10 minutes (POST /api/connections/claim with the " +
        "user_ref the link was made for):", [line]);
    } else if (!status && window.sessionStorage.getItem("mailbridge.connection_id")) {
      connectionId = window.sessionStorage.getItem("mailbridge.connection_id");
      loadAndShow(connectionId);
    } else if (status === "error") {
      const code = q.get("error") || "";
      const sentence = MESSAGES[code] || q.get("error_description") || "The connection did not complete.";
      const extra = [];
      const link = q.get("admin_consent_url") ? adminConsentLink(q.get("admin_consent_url")) : null;
      if (link) extra.push(link);
      if (code) {
        const codeLine = el("p");
        codeLine.append(el("code", "error: " + code));
        extra.push(codeLine);
      }
      showOutcome("error", "Not connected", sentence, extra);
    } else if (status === "admin_consented") {
      showOutcome("ok", "Approved", "Mailbridge is approved for your organisation" +
        (q.get("tenant") ? " (tenant " + q.get("tenant") + ")" : "") + ". Users can connect now.");
    }
  }

  async function loadConfig() {
    const result = await call("GET", "config");
    if (result.ok && result.data) mailboxViewer = result.data.mailbox_viewer || null;
  }

  document.addEventListener("DOMContentLoaded", () => {
    loadConfig();
    $("connect-form").addEventListener("submit", onConnect);
    $("disconnect").addEventListener("click", onDisconnect);
    $("send-test").addEventListener("click", onSendTest);
    showQueryOutcome();
  });
})();
