"""Put one mailbridge.send/v1 message on Mailbridge's outbound queue with the producer's own Azure identity.

Needs `pip install azure-identity azure-storage-queue`, and the producer's managed identity (or your own
sign-in, locally) holding Storage Queue Data Message Sender on the queue: azd variable PRODUCER_PRINCIPAL_IDS.
No connection string, no account key: the storage account has shared keys turned off.
"""

import json
import os

from azure.identity import DefaultAzureCredential
from azure.storage.queue import QueueClient


def send_mail(message: dict, *, account_url: str, queue_name: str = "outbound-mail", credential=None) -> str:
    """Enqueue ``message`` and return the queue message id.

    The message goes as plain JSON text: Mailbridge's host.json sets ``messageEncoding`` to ``none``, and
    QueueClient sends text unencoded unless given a ``message_encode_policy`` (base64 would be accepted too).
    """
    with QueueClient(account_url, queue_name, credential=credential or DefaultAzureCredential()) as queue:
        return queue.send_message(json.dumps(message)).id


if __name__ == "__main__":
    queue_message_id = send_mail(
        {
            "id": "order-4711:confirmation",  # your idempotency key: the same id is never sent twice
            "connection_id": os.environ["MAILBRIDGE_CONNECTION_ID"],
            "to": [{"address": "ada@example.com", "name": "Ada"}],
            "subject": "Your order",
            "body": {"content_type": "text", "content": "Thanks for your order."},
        },
        account_url=os.environ["AZURE_STORAGE_QUEUE_ENDPOINT"],  # azd output: https://st<token>.queue.core.windows.net/
    )
    print("queued", queue_message_id)
