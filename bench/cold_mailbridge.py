"""B2 child: a fresh process imports function_app and serves one queued send (settings from the environment).

Prints one JSON line: seconds from before the import to the final delivery record, peak RSS, status, and the
HTTP requests the first send made (every requests.Session send: Storage through azure-core, Entra through
MSAL, Key Vault, Graph), by host, and how many messages it left on its events output binding (the host's
write, outside the app's process in Azure).
Run by bench/b2_cold.py as ``python -m bench.cold_mailbridge <connection id>``.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit

from bench.cold_peers import peak_rss_mb  # stdlib only: imports nothing of the app
from bench.request_count import start_counting  # stdlib only

# cryptography is no longer optional: the token cache is sealed with AES-GCM (issue 26).
OPTIONAL_SDKS = ("azure.identity", "azure.storage.blob", "azure.storage.queue")


def _count_requests() -> Counter:
    """Count every HTTP request of the process by host:port (patched into requests.Session.send)."""
    import requests

    def keys(request):
        parts = urlsplit(request.url)
        yield f"{request.method} {parts.netloc} {parts.path[:60]}"
        segments = [s for s in parts.path.split("/") if s]
        table_create = request.method == "POST" and segments[1:] == ["Tables"]
        # PUT /<account>/<queue> or /<account>/<container>?restype=container (an entity upsert has "(...)")
        queue_or_container_create = request.method == "PUT" and len(segments) == 2 and "(" not in segments[1]
        if table_create or queue_or_container_create:
            yield "creates"  # create-if-missing of a table / queue / container: Azurite only

    return start_counting(requests.Session, keys)[0]


def main(connection_id: str) -> None:
    start = time.perf_counter()
    import azure.functions as func

    import function_app

    imported = time.perf_counter()  # what the host pays to index the app: function_app only
    import_rss = peak_rss_mb()
    from devhost.functions import Out  # the worker's output-binding holder (devhost.config: stdlib only)

    calls = _count_requests()
    from shared.services import get_services

    (fn,) = [f for f in function_app.app.get_functions() if f.get_function_name() == "send_queued_message"]
    mid = f"cold-{uuid.uuid4().hex[:12]}"
    body = {
        "id": mid,
        "connection_id": connection_id,
        "to": [{"address": "someone@example.com"}],
        "subject": "cold start",
        "body": {"content_type": "text", "content": "Plain body"},
    }
    # As the worker does: an Out per output binding (events, webhook deliveries). The host writes what the function
    # set on them (another process in Azure), so it is counted apart, not as the app's requests.
    events, webhooks = Out(), Out()
    fn.get_user_function()(func.QueueMessage(id=mid, body=json.dumps(body).encode()), events, webhooks)
    sent_calls = dict(calls)  # the send's requests, not the reads of its outcome below
    rec = get_services().deliveries.get(connection_id, mid)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "import_s": imported - start,
                "import_rss_mb": import_rss,
                "first_send_s": done - start,
                "peak_rss_mb": peak_rss_mb(),
                "status": rec.status if rec else "none",
                # "creates" is a tally, not a request
                "first_send_http_calls": sum(v for k, v in sent_calls.items() if k != "creates"),
                "first_send_creates": sent_calls.get("creates", 0),
                "host_output_messages": len(events.get() or []) + len(webhooks.get() or []),
                # SDKs the send path should not need (issue 18): loaded by the import and the first send?
                "loaded": {m: m in sys.modules for m in OPTIONAL_SDKS},
                "first_send_http_requests": sent_calls,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
