"""Peer child (run with .venv-bench's python): msgraph-sdk and O365 clients pointed at the emulator.

Builders shared by B1 (this script) and B2 (bench/cold_peers.py). Each client starts from one mailbox's
MSAL token cache file written by the parent at connect time and then keeps its tokens the peer's own way:

- msgraph-sdk has no delegated token store of its own, so its public auth hook (a kiota
  ``AccessTokenProvider`` behind ``BaseBearerTokenAuthenticationProvider``) is served by MSAL with a
  ``SerializableTokenCache`` loaded from the file (written back when MSAL changes it);
- O365 reads the same file natively through its ``FileSystemTokenBackend`` (an MSAL token cache) and
  refreshes through its own MSAL client after a 401.

B1: ``python bench/peer_send.py {msgraph|o365} <config.json>``; config: base_url, ca, tid, client_id,
client_secret, to, emails, mailboxes (token cache file per mailbox). The child builds one client per
mailbox, prints ``{"ready": true, ...}``, waits for one line on stdin (the parent reads the emulator's
counters meanwhile), sends ``emails`` messages round-robin and prints one JSON line:
``{"sent", "failed", "wall_s", "setup_s", "error"}``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

SCOPES = ["Mail.Send"]


def strict_session(ca: str) -> Any:
    """A requests session that trusts only the emulator CA and ignores REQUESTS_CA_BUNDLE (docs/emulator.md)."""
    import requests

    session = requests.Session()
    session.trust_env = False
    session.verify = ca
    return session


def msal_app(cfg: dict, cache: Any) -> Any:
    """MSAL confidential client for the tenant on the emulator (the recipe of docs/emulator.md)."""
    import msal

    return msal.ConfidentialClientApplication(
        cfg["client_id"],
        client_credential=cfg["client_secret"],
        authority=f"{cfg['base_url']}/{cfg['tid']}",
        instance_discovery=False,
        token_cache=cache,
        http_client=strict_session(cfg["ca"]),
    )


# -- msgraph-sdk --------------------------------------------------------------------------------------


def import_msgraph() -> None:
    """Everything the msgraph-sdk send path imports up front (B2 times this)."""
    import httpx  # noqa: F401
    import msal  # noqa: F401
    from kiota_abstractions.authentication import AccessTokenProvider  # noqa: F401
    from msgraph import GraphRequestAdapter, GraphServiceClient  # noqa: F401
    from msgraph.generated.models.message import Message  # noqa: F401
    from msgraph.generated.users.item.send_mail.send_mail_post_request_body import SendMailPostRequestBody  # noqa: F401
    from msgraph_core import GraphClientFactory  # noqa: F401


def msgraph_sender(cfg: dict, cache_file: str) -> Callable[[str], Any]:
    """One GraphServiceClient for the mailbox whose MSAL cache is ``cache_file``; returns ``async send(subject)``."""
    import ssl

    import httpx
    import msal
    from kiota_abstractions.authentication import (
        AccessTokenProvider,
        AllowedHostsValidator,
        BaseBearerTokenAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.generated.models.body_type import BodyType
    from msgraph.generated.models.email_address import EmailAddress
    from msgraph.generated.models.item_body import ItemBody
    from msgraph.generated.models.message import Message
    from msgraph.generated.models.recipient import Recipient
    from msgraph.generated.users.item.send_mail.send_mail_post_request_body import SendMailPostRequestBody
    from msgraph.graph_request_adapter import options as sdk_middleware_options
    from msgraph_core import GraphClientFactory

    class MsalFileTokens(AccessTokenProvider):
        """Access tokens from MSAL's cache (silent refresh when due); the cache file is rewritten on change."""

        def __init__(self) -> None:
            self.path = Path(cache_file)
            self.cache = msal.SerializableTokenCache()
            self.cache.deserialize(self.path.read_text())
            self.app = msal_app(cfg, self.cache)
            self.account = self.app.get_accounts()[0]
            self.hosts = AllowedHostsValidator([urlsplit(cfg["base_url"]).hostname])

        async def get_authorization_token(self, uri: str, additional_authentication_context: Any = None) -> str:
            result = self.app.acquire_token_silent_with_error(SCOPES, account=self.account)
            if self.cache.has_state_changed:
                self.path.write_text(self.cache.serialize())
            if not result or "access_token" not in result:
                raise RuntimeError(f"no access token: {(result or {}).get('error')}")
            return result["access_token"]

        def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
            return self.hosts

    # A custom httpx client is the only way to give the SDK a CA file. GraphRequestAdapter applies the SDK's
    # middleware options (the `/users/me-token-to-replace` -> `/me` URL replacement) only to a client it builds
    # itself, so a custom client must be handed the same options (msgraph-sdk-python#544, #1271).
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(verify=ssl.create_default_context(cafile=cfg["ca"]), trust_env=False, timeout=30),
        options=sdk_middleware_options,
    )
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(MsalFileTokens()), client=http)
    adapter.base_url = f"{cfg['base_url']}/v1.0"
    client = GraphServiceClient(request_adapter=adapter)

    async def send(subject: str) -> None:
        body = SendMailPostRequestBody(
            message=Message(
                subject=subject,
                body=ItemBody(content_type=BodyType.Text, content="Plain body"),
                to_recipients=[Recipient(email_address=EmailAddress(address=cfg["to"]))],
            ),
            save_to_sent_items=True,
        )
        await client.me.send_mail.post(body)

    return send


# -- O365 ---------------------------------------------------------------------------------------------


def import_o365() -> None:
    """Everything the O365 send path imports up front (B2 times this)."""
    import msal  # noqa: F401
    from O365 import Account  # noqa: F401
    from O365.connection import MSGraphProtocol  # noqa: F401
    from O365.utils import FileSystemTokenBackend  # noqa: F401


def o365_sender(cfg: dict, token_file: str) -> Callable[[str], None]:
    """One O365 Account for the mailbox whose token file (an MSAL cache) is ``token_file``; returns ``send``."""
    from O365 import Account
    from O365.connection import MSGraphProtocol
    from O365.utils import FileSystemTokenBackend

    class EmulatorGraph(MSGraphProtocol):
        _protocol_url = cfg["base_url"] + "/"  # the subclass hook O365's Protocol documents

    backend = FileSystemTokenBackend(token_path=Path(token_file))
    account = Account(
        (cfg["client_id"], cfg["client_secret"]),
        tenant_id=cfg["tid"],
        protocol=EmulatorGraph(),
        token_backend=backend,
        verify_ssl=cfg["ca"],  # effective only without REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (psf/requests#3829)
    )
    # O365 builds its MSAL client lazily (first refresh) with authority https://login.microsoftonline.com/<tenant>
    # and instance discovery on; no public knob changes either, so the private client is replaced.
    account.con._msal_client = msal_app(cfg, backend)

    def send(subject: str) -> None:
        message = account.new_message()
        message.to.add(cfg["to"])
        message.subject = subject
        message.body = "Plain body"
        if not message.send():
            raise RuntimeError("O365 Message.send returned False")

    return send


# -- B1 -----------------------------------------------------------------------------------------------


def _ready(setup_s: float) -> None:
    print(json.dumps({"ready": True, "setup_s": setup_s}), flush=True)
    sys.stdin.readline()


def _result(sent: int, failed: int, wall: float, setup: float, error: str | None) -> dict:
    return {"sent": sent, "failed": failed, "wall_s": wall, "setup_s": setup, "error": error}


def b1_loop(cfg: dict, make_sender, label: str, run=lambda result: result) -> dict:
    """Build one sender per mailbox, say ready, then send ``cfg['emails']`` round-robin; ``run`` drives a
    coroutine (msgraph-sdk is async) or passes a plain result through (O365)."""
    start = time.perf_counter()
    senders = [make_sender(cfg, f) for f in cfg["mailboxes"]]
    setup = time.perf_counter() - start
    _ready(setup)
    sent = failed = 0
    error = None
    start = time.perf_counter()
    for i in range(cfg["emails"]):
        try:
            run(senders[i % len(senders)](f"{label} {i}"))
            sent += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
            failed += 1
            error = error or repr(exc)[:500]
    return _result(sent, failed, time.perf_counter() - start, setup, error)


def main(kind: str, config: str) -> None:
    import asyncio
    import logging

    logging.basicConfig(level=logging.ERROR)
    cfg = json.loads(Path(config).read_text())
    if kind == "msgraph":
        with asyncio.Runner() as runner:  # one event loop for every send, as an async app has
            result = b1_loop(cfg, msgraph_sender, "msgraph-sdk", runner.run)
    else:
        result = b1_loop(cfg, o365_sender, "O365")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
