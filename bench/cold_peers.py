"""B2 peer child, run with .venv-bench's python: one send through msgraph-sdk or O365 against the emulator.

``python bench/cold_peers.py {msgraph|o365} <json config>``; config: base_url, ca, tid, client_id,
client_secret, cache (path of a serialized MSAL token cache from a sign-in), to. Prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _session(ca: str):
    import requests

    session = requests.Session()
    session.trust_env = False
    session.verify = ca
    return session


def send_msgraph(cfg: dict) -> str:
    import asyncio

    import httpx
    import msal
    from kiota_abstractions.authentication import AccessTokenProvider, AllowedHostsValidator
    from kiota_abstractions.authentication.base_bearer_token_authentication_provider import (
        BaseBearerTokenAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.generated.models.body_type import BodyType
    from msgraph.generated.models.email_address import EmailAddress
    from msgraph.generated.models.item_body import ItemBody
    from msgraph.generated.models.message import Message
    from msgraph.generated.models.recipient import Recipient
    from msgraph.generated.users.item.send_mail.send_mail_post_request_body import SendMailPostRequestBody
    from msgraph_core import GraphClientFactory

    cfg["_imported"] = time.perf_counter()

    class MsalTokens(AccessTokenProvider):
        def __init__(self) -> None:
            cache = msal.SerializableTokenCache()
            cache.deserialize(open(cfg["cache"]).read())
            self.app = msal.ConfidentialClientApplication(
                cfg["client_id"],
                client_credential=cfg["client_secret"],
                authority=f"{cfg['base_url']}/{cfg['tid']}",
                instance_discovery=False,
                token_cache=cache,
                http_client=_session(cfg["ca"]),
            )

        async def get_authorization_token(self, uri, additional_authentication_context=None) -> str:
            account = self.app.get_accounts()[0]
            return self.app.acquire_token_silent(["Mail.Send"], account=account)["access_token"]

        def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
            return AllowedHostsValidator([])

    adapter = GraphRequestAdapter(
        BaseBearerTokenAuthenticationProvider(MsalTokens()),
        client=GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(verify=cfg["ca"])),
    )
    adapter.base_url = f"{cfg['base_url']}/v1.0"
    client = GraphServiceClient(request_adapter=adapter)
    body = SendMailPostRequestBody(
        message=Message(
            subject="cold start",
            body=ItemBody(content_type=BodyType.Text, content="Plain body"),
            to_recipients=[Recipient(email_address=EmailAddress(address=cfg["to"]))],
        ),
        save_to_sent_items=True,
    )
    asyncio.run(client.me.send_mail.post(body))
    return "sent"


def send_o365(cfg: dict) -> str:
    import msal
    from O365 import Account
    from O365.connection import MSGraphProtocol
    from O365.utils import FileSystemTokenBackend

    cfg["_imported"] = time.perf_counter()

    class LocalGraph(MSGraphProtocol):
        _protocol_url = cfg["base_url"] + "/"

    backend = FileSystemTokenBackend(token_path=cfg["dir"], token_filename="o365.json")
    backend.deserialize(open(cfg["cache"]).read())
    account = Account(
        (cfg["client_id"], cfg["client_secret"]),
        tenant_id=cfg["tid"],
        protocol=LocalGraph(),
        token_backend=backend,
        verify_ssl=cfg["ca"],
    )
    # O365 builds its MSAL client with the public cloud authority and instance discovery on; the only way
    # to point it at another host is to replace that (private) client.
    account.con._msal_client = msal.ConfidentialClientApplication(
        cfg["client_id"],
        client_credential=cfg["client_secret"],
        authority=f"{cfg['base_url']}/{cfg['tid']}",
        instance_discovery=False,
        token_cache=backend,
        http_client=_session(cfg["ca"]),
    )
    account.con._set_username_from_token_backend()
    message = account.new_message()
    message.to.add(cfg["to"])
    message.subject = "cold start"
    message.body = "Plain body"
    return "sent" if message.send() else "failed"


def main(kind: str, config: str) -> None:
    start = time.perf_counter()
    cfg = json.loads(config)
    cfg["_imported"] = start
    status = send_msgraph(cfg) if kind == "msgraph" else send_o365(cfg)
    done = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"import_s": cfg["_imported"] - start, "first_send_s": done - start, "peak_rss_mb": rss, "status": status}
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
