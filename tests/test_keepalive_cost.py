"""Keep-alive cost (issue 18 goal 5): Storage requests per refresh, counted at the HTTP transport, against
real Azurite and the emulator. Key Vault and Entra are not Storage and are not counted here (issue 26 moved the
token cache from Key Vault to a Storage row: two requests more here, no Key Vault write)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from azure.core.pipeline.transport import RequestsTransport

from bench.b5_keepalive import make_due
from bench.request_count import counting, storage_hosts
from shared.tokens.refresh import KeepAlive


def storage_requests(hosts: set[str]):
    """Count azure-core requests to the Storage account (by method + service), as bench.fleet_host does."""

    def keys(request):
        parts = urlsplit(request.url)
        if parts.netloc in hosts:
            target = parts.path.split("/")[2] if parts.path.count("/") > 1 else ""
            kind = "entity" if "PartitionKey=" in target else ("query" if target.endswith("()") else "")
            yield f"{request.method} {target.split('(')[0]} {kind} {parts.query[:40]}".strip()

    return counting(RequestsTransport, keys)


@pytest.mark.parametrize("first", [True, False], ids=["first refresh", "later refresh"])
def test_a_keep_alive_refresh_costs_at_most_eight_storage_requests(mailbridge, first):
    """Six before issue 26; the sealed token cache's row read and write (Storage) now replace the Key Vault read
    and Set Secret of each refresh, which were not counted here."""
    mb = mailbridge()
    cids = [mb.connect(user, user_ref=f"ref-{user}")["connection_id"] for user in ("alice", "bob")]
    keepalive = KeepAlive(mb.services)
    if not first:  # the lock blobs exist from an earlier refresh of each connection
        make_due(mb.services, cids)
        assert keepalive.sweep().refreshed == 2
    make_due(mb.services, cids)
    mb.services.app_credential.status()  # the health row's once-a-minute read is not the refresh's cost
    with storage_requests(storage_hosts(mb.env["AzureWebJobsStorage"])) as seen:
        report = keepalive.sweep()
    assert report.refreshed == 2, report
    # The sweep's own due-index page queries are shared by every connection of the page: not per refresh.
    per_refresh = sum(n for what, n in seen.items() if " query " not in what) / 2
    assert per_refresh <= 8, sorted(seen.items())
    print(f"Storage requests per keep-alive refresh: {per_refresh} ({sorted(seen.items())})")
