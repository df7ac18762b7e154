"""B2 child: a fresh process imports function_app and serves one queued send (settings from the environment).

Prints one JSON line: seconds from before the import to the final delivery record, peak RSS, status.
Run by bench/b2_cold.py as ``python -m bench.cold_mailbridge <connection id>``.
"""

from __future__ import annotations

import json
import sys
import time
import uuid

from bench.cold_peers import peak_rss_mb  # stdlib only: imports nothing of the app


def main(connection_id: str) -> None:
    start = time.perf_counter()
    import azure.functions as func

    import function_app
    from shared.services import get_services

    imported = time.perf_counter()
    (fn,) = [f for f in function_app.app.get_functions() if f.get_function_name() == "send_queued_message"]
    mid = f"cold-{uuid.uuid4().hex[:12]}"
    body = {
        "id": mid,
        "connection_id": connection_id,
        "to": [{"address": "someone@example.com"}],
        "subject": "cold start",
        "body": {"content_type": "text", "content": "Plain body"},
    }
    fn.get_user_function()(func.QueueMessage(id=mid, body=json.dumps(body).encode()))
    rec = get_services().deliveries.get(connection_id, mid)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "import_s": imported - start,
                "first_send_s": done - start,
                "peak_rss_mb": peak_rss_mb(),
                "status": rec.status if rec else "none",
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
