"""Storage queue triggers, processed the way the Functions host's queue listener does.

- fetch up to ``batchSize`` messages; fetch the next batch when in-flight drops to ``newBatchThreshold``
  (so at most batchSize + newBatchThreshold run at once per function);
- success deletes the message; failure makes it visible again after ``visibilityTimeout``;
- a message that failed ``maxDequeueCount`` times goes to ``<queue>-poison``;
- ``messageEncoding`` base64 (default) or none; polling backs off up to ``maxPollingInterval``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

from devhost.config import QueueOptions, resolve_setting_refs
from devhost.functions import FunctionSpec, in_function

logger = logging.getLogger(__name__)

LEASE_SECONDS = 600  # the host keeps a message invisible while its function runs (and renews it)


class QueueListener:
    """Polls one queue for one queue-triggered function until ``stop()``."""

    def __init__(self, spec: FunctionSpec, options: QueueOptions, environ: dict[str, str]) -> None:
        self.spec = spec
        self.options = options
        self.queue_name = resolve_setting_refs(spec.trigger["queueName"], environ).lower()
        setting = spec.trigger.get("connection") or "AzureWebJobsStorage"
        conn = environ.get(setting)
        if not conn:
            raise RuntimeError(f"queue trigger {spec.name}: app setting {setting} is not set")
        self.queue = QueueClient.from_connection_string(conn, self.queue_name)
        self.poison = QueueClient.from_connection_string(conn, self.queue_name + "-poison")
        self._stop = threading.Event()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._pool = ThreadPoolExecutor(
            max_workers=options.batch_size + options.new_batch_threshold, thread_name_prefix=f"q-{spec.name}"
        )
        self._thread = threading.Thread(target=self._run, name=f"devhost-queue-{spec.name}", daemon=True)
        self.processed = 0
        self.failed = 0
        self.poisoned = 0
        self.function_cpu_s = 0.0  # CPU of the worker threads while inside the function (thread time)
        self._cpu_lock = threading.Lock()

    def start(self) -> None:
        for client in (self.queue, self.poison):
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop fetching, let running invocations finish (up to ``timeout``)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        delay = 0.1
        opts = self.options
        while not self._stop.is_set():
            with self._cond:
                while self._in_flight > opts.new_batch_threshold and not self._stop.is_set():
                    self._cond.wait(0.5)
            if self._stop.is_set():
                break
            try:
                batch = list(
                    self.queue.receive_messages(
                        messages_per_page=opts.batch_size,
                        max_messages=opts.batch_size,
                        visibility_timeout=LEASE_SECONDS,
                    )
                )
            except Exception:  # storage briefly unreachable: back off like an empty poll
                logger.warning("Queue %s: receive failed; backing off", self.queue_name, exc_info=True)
                batch = []
            if not batch:
                self._stop.wait(delay)
                delay = min(delay * 2, max(opts.max_polling_interval, 0.1))
                continue
            delay = 0.1
            for message in batch:
                with self._cond:
                    self._in_flight += 1
                self._pool.submit(self._process, message)

    def _process(self, message) -> None:
        try:
            if message.dequeue_count > self.options.max_dequeue_count:
                self._to_poison(message)
                return
            try:
                self._invoke(message)
            except Exception:
                self.failed += 1
                logger.warning(
                    "Function %s failed on message %s (dequeue count %d)",
                    self.spec.name,
                    message.id,
                    message.dequeue_count,
                    exc_info=True,
                )
                if message.dequeue_count >= self.options.max_dequeue_count:
                    self._to_poison(message)
                else:
                    self._release(message)
                return
            self.processed += 1
            try:
                self.queue.delete_message(message.id, message.pop_receipt)
            except ResourceNotFoundError:  # lease lost: another instance got it; the host logs and moves on
                logger.warning("Queue %s: message %s was gone at delete", self.queue_name, message.id)
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def _invoke(self, message) -> None:
        """Run the function on one message, its CPU (thread time) and Storage requests marked as the function's."""
        cpu = time.thread_time()
        in_function.active = True
        try:
            body = self._decode(message.content)
            self.spec.invoke(
                QueueMessage(
                    id=message.id,
                    body=body,
                    dequeue_count=message.dequeue_count,
                    expiration_time=message.expires_on,
                    insertion_time=message.inserted_on,
                    time_next_visible=message.next_visible_on,
                    pop_receipt=message.pop_receipt,
                )
            )
        finally:
            in_function.active = False
            with self._cpu_lock:
                self.function_cpu_s += time.thread_time() - cpu

    def _decode(self, content: str | bytes) -> bytes:
        raw = content.encode() if isinstance(content, str) else content
        if self.options.message_encoding == "base64":
            try:
                return base64.b64decode(raw, validate=True)
            except binascii.Error as exc:
                raise ValueError("message is not valid base64 (host.json messageEncoding is base64)") from exc
        return raw

    def _release(self, message) -> None:
        try:
            self.queue.update_message(
                message.id, message.pop_receipt, visibility_timeout=int(self.options.visibility_timeout)
            )
        except ResourceNotFoundError:
            pass

    def _to_poison(self, message) -> None:
        self.poisoned += 1
        logger.error("Queue %s: message %s moved to %s-poison", self.queue_name, message.id, self.queue_name)
        self.poison.send_message(message.content)
        try:
            self.queue.delete_message(message.id, message.pop_receipt)
        except ResourceNotFoundError:
            pass
