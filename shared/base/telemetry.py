"""One structured log line per outcome: a send finalised, a keep-alive refresh, a connect attempt.

``log_outcome`` writes the line the alerts and the KQL in docs/operations.md read. It carries the same
dimensions twice, because Azure Functions forwards Python logs to Application Insights in two ways:

- **By default** the Python worker hands the host only the formatted message (the ``extra`` fields of a
  log record are dropped: azure-functions-python-worker#1327, #788, #1681). So the message itself is a
  fixed ``key=value`` line, which KQL splits with ``parse-kv``::

      mailbridge.outcome event=send outcome=sent code=- message_id=m-1 connection_id=c-1 duration_ms=412

- **With the worker's OpenTelemetry export** (app setting ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true``
  and ``azure-monitor-opentelemetry`` installed) the worker calls ``configure_azure_monitor()`` and every
  ``extra`` field of the record becomes a ``customDimensions`` key: ``event``, ``outcome``, ``code``,
  ``message_id``, ``connection_id``, ``duration_ms`` (and ``graph_request_id``).

Values are identifiers and codes only. Every value is checked against one character set (letters,
digits, ``. _ : -``) and a length of at most 128 characters: an address (``@``), a subject or body
(spaces), a URL (``/``) or an Entra token or code (hundreds of characters) cannot pass, whatever a
caller hands in; such a value is logged as ``?``.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

PREFIX = "mailbridge.outcome"
EVENTS = frozenset({"send", "refresh", "connect"})
# Outcomes that are the expected, healthy end of their event (logged at INFO; the rest at WARNING).
SUCCESSES = frozenset({"sent", "refreshed", "connected"})
FIELDS = ("event", "outcome", "code", "message_id", "connection_id", "duration_ms", "graph_request_id")

_SAFE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MISSING = "-"
REDACTED = "?"


def safe_value(value: object) -> str:
    """``value`` as logged: the string if it is a plain identifier or code, ``-`` for None, ``?`` otherwise."""
    if value is None:
        return MISSING
    if isinstance(value, bool) or not isinstance(value, str | int):
        return REDACTED
    text = str(value)
    return text if _SAFE.fullmatch(text) else REDACTED


def log_outcome(
    event: str,
    outcome: str,
    *,
    code: str | None = None,
    message_id: str | None = None,
    connection_id: str | None = None,
    duration_ms: float | None = None,
    graph_request_id: str | None = None,
) -> dict[str, str]:
    """Log one outcome (once, where it becomes final) and return the logged dimensions (each made safe).

    ``event``: ``send`` | ``refresh`` | ``connect``. ``outcome``: the final status (``sent``, ``failed``,
    ``unknown``, ``rejected``; ``refreshed``, ``reauth_required``, ``transient_failure``; ``connected``,
    ``failed``). ``code``: the stable error code, if any. ``duration_ms``: how long it took (send: from
    the delivery row's creation to the final status).
    """
    if event not in EVENTS:
        raise ValueError(f"unknown telemetry event {event!r}; expected one of {sorted(EVENTS)}")
    raw = {
        "event": event,
        "outcome": outcome,
        "code": code,
        "message_id": message_id,
        "connection_id": connection_id,
        "duration_ms": None if duration_ms is None else max(0, round(duration_ms)),
        "graph_request_id": graph_request_id,
    }
    fields = {name: safe_value(raw[name]) for name in FIELDS}
    level = logging.INFO if outcome in SUCCESSES else logging.WARNING
    # Fixed order, '-' for absent values: the line stays parseable by position as well as by key.
    line = " ".join(f"{name}={fields[name]}" for name in FIELDS)
    logger.log(level, "%s %s", PREFIX, line, extra=dict(fields))
    return fields
