"""Keys kept like keys (issue 26): what an insider can still redeem after an erasure.

The insider holds every data-plane role on the vault (the emulated vault without an RBAC model lets any caller
of its tenant do anything: read every secret version, recover deleted secrets, unwrap with the key), every copy
Storage holds of the token caches, and the app's own client credential. After a disconnect, a discarded or
expired grant, or a move to a new generation, nothing they gather redeems: purge protection stays on, and the
deleted rows took the only copies of the wrapped data keys with them. Before the erasure, the same harvest does
redeem the live token (the harvest works; only the app identity should ever unwrap: docs/security.md, the alert).
"""

from __future__ import annotations

import json
import time
from typing import Any

import msal
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.base.settings import TOKEN_CACHES_TABLE
from shared.connect.flow import ConnectService
from shared.tokens.secrets import secret_name
from tests import emulator_keyvault_support as support
from tests.emulator_keyvault_support import Caller, b64url, everything_the_vault_gives_back
from tests.fixtures.app import Mailbridge

vault_caller = support.vault_caller


def _refresh_tokens(serialized: str) -> set[str]:
    try:
        cache = json.loads(serialized)
    except ValueError:
        return set()
    return {entry["secret"] for entry in (cache.get("RefreshToken") or {}).values()}


def _vault_names(insider: Caller) -> set[str]:
    """Every secret name the vault lists, live or deleted."""
    names = set()
    for path in ("/secrets", "/deletedsecrets"):
        url = path
        while url:
            page = insider.ok("GET", url)
            names |= {item["id"].rstrip("/").split("/")[-1] for item in page["value"]}
            url = (page.get("nextLink") or "").split(insider.base_url, 1)[-1] if page.get("nextLink") else ""
    return names


def harvest(mb: Mailbridge, insider: Caller, cid: str) -> set[str]:
    """Every refresh token of connection ``cid`` (or of any pending grant) the insider can lay hands on."""
    found: set[str] = set()
    for name in _vault_names(insider):
        if cid in name or name.startswith("mb-p"):
            for value in everything_the_vault_gives_back(insider, name):
                found |= _refresh_tokens(value)
    for row in mb.services.storage.table(TOKEN_CACHES_TABLE).list_entities():
        kid_path = row["kid"].split(insider.base_url, 1)[1]
        unwrapped = insider.call(
            "POST", f"{kid_path}/unwrapkey", {"alg": "RSA-OAEP-256", "value": b64url(row["wrapped"])}
        )
        if unwrapped.status_code != 200:
            continue
        data_key = support.unb64url(unwrapped.json()["value"])
        try:
            plain = AESGCM(data_key).decrypt(row["nonce"], row["sealed"], row["PartitionKey"].encode())
        except InvalidTag:
            continue
        found |= _refresh_tokens(plain.decode())
    return found


def redeemable(mb: Mailbridge, tokens: set[str]) -> set[str]:
    """The refresh tokens Entra still accepts from the app's own client credential."""
    ok = set()
    for token in tokens:
        app = mb.services.msal.app(token_cache=msal.SerializableTokenCache(), http_cache={})
        result = app.acquire_token_by_refresh_token(token, scopes=mb.services.settings.graph_scopes)
        if "access_token" in result:
            ok.add(token)
    return ok


@pytest.fixture
def insider(vault_caller) -> Caller:
    return vault_caller()


def test_a_disconnect_leaves_nothing_anyone_can_redeem(mailbridge, insider):
    mb = mailbridge()
    cid = mb.connect("alice")["connection_id"]
    assert len(redeemable(mb, harvest(mb, insider, cid))) == 1, "the harvest finds the live token"
    gone = mb.http("delete_connection", "DELETE", route_params={"connection_id": cid})
    assert gone.status_code == 200, gone.get_body()
    assert redeemable(mb, harvest(mb, insider, cid)) == set()


def test_a_discarded_grant_leaves_nothing_anyone_can_redeem(mailbridge, insider):
    """A stranger finishes a forwarded link; the backend's claim for another user_ref discards the grant."""
    mb = mailbridge()
    back = _to_return_url(mb, "bob", "a")
    assert len(redeemable(mb, harvest(mb, insider, "-none-"))) == 1, "the pending grant's token is live"
    refused = mb.claim(back["result"], "b")
    assert refused.status_code == 403
    assert redeemable(mb, harvest(mb, insider, "-none-")) == set()


def test_an_expired_grant_leaves_nothing_anyone_can_redeem(mailbridge, insider, emulator):
    mb = mailbridge()
    _to_return_url(mb, "bob", "a")
    assert len(redeemable(mb, harvest(mb, insider, "-none-"))) == 1
    assert ConnectService(mb.services).purge_expired(now=time.time() + 3600)["grants"] == 1
    assert redeemable(mb, harvest(mb, insider, "-none-")) == set()


def test_a_new_generation_erases_the_old_one_and_one_token_stays_readable(mailbridge, insider):
    """Refreshes rotate the refresh token (Microsoft does not revoke the old one) and every few writes move the cache
    to a new generation: at any time exactly one redeemable refresh token of the connection is readable."""
    mb = mailbridge()
    cid = mb.connect("alice")["connection_id"]
    mb.services.tokens.max_secret_versions = 2
    seen = set(harvest(mb, insider, cid))
    for _ in range(5):
        mb.services.tokens.refresh(mb.services.connections.get(cid), force=True)
        now = harvest(mb, insider, cid)
        seen |= now
        assert len(now) == 1 and len(redeemable(mb, now)) == 1
    assert mb.services.connections.get(cid).secret_generation > 1
    assert len(seen) == 6 and len(redeemable(mb, seen)) == 6, "Microsoft still accepts every one of them"


def test_a_reconnect_after_a_disconnect_erases_the_old_generation(mailbridge, insider):
    mb = mailbridge()
    cid = mb.connect("alice")["connection_id"]
    old = harvest(mb, insider, cid)
    mb.http("delete_connection", "DELETE", route_params={"connection_id": cid})
    assert mb.connect("alice", connection_id=cid)["connection_id"] == cid
    now = harvest(mb, insider, cid)
    assert not now & old and len(redeemable(mb, now)) == 1


def test_an_upgraded_connection_moves_to_the_sealed_store_without_a_reconnect(mailbridge, insider, emulator):
    """A connection stored the pre-issue-26 way (a plain MSAL cache in secret ``mb-<id>-g<n>``) keeps sending:
    its first use seals the cache into the store and soft-deletes the secret. The deleted secret stays
    recoverable for the vault's retention (purge protection): docs/security.md says so and what to do."""
    mb = mailbridge()
    cid = mb.connect("alice")["connection_id"]
    conn = mb.services.connections.get(cid)
    plain = mb.services.token_caches.read(conn.secret_name)
    mb.services.storage.table(TOKEN_CACHES_TABLE).delete_entity(conn.secret_name, "cache")
    insider.ok("PUT", f"/secrets/{conn.secret_name}", {"value": plain})  # what the old code stored
    mb.services.tokens.forget(cid)
    mb.services.token_caches.forget_keys()
    sent = mb.http("send_test_message", "POST", route_params={"connection_id": cid}, body={})
    assert sent.status_code == 200 and mb.json(sent)["status"] == "sent", sent.get_body()
    assert mb.services.storage.table(TOKEN_CACHES_TABLE).get_entity(conn.secret_name, "cache")
    assert insider.call("GET", f"/secrets/{conn.secret_name}").status_code == 404
    assert insider.call("GET", f"/deletedsecrets/{conn.secret_name}").status_code == 200, "soft-deleted"
    assert mb.services.token_caches.upgraded == 1
    assert secret_name(cid, conn.secret_generation) == conn.secret_name


def _to_return_url(mb: Mailbridge, user: str, user_ref: str) -> dict[str, Any]:
    """Connect ``user`` through a link asked for ``user_ref``, up to the return URL (no claim)."""
    from tests.fixtures.app import query_of

    start = mb.start(mb.connect_link(user_ref))
    back = mb.callback(mb.authorize(start.headers["Location"], user))
    query = query_of(back.headers["Location"])
    assert query["status"] == "connected", query
    return query
