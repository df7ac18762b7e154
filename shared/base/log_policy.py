"""Logging policy: no token, code, ticket, state or mail body in any log line.

Our own modules log only ids and codes. Some libraries log secrets at DEBUG (MSAL logs token-cache
events including the authorization code; urllib3 and azure-core log request URLs), so those loggers
are capped here, whatever level the host configures.
"""

from __future__ import annotations

import logging

CAPPED_LOGGERS = {
    "msal": logging.WARNING,
    "urllib3": logging.WARNING,
    "azure.core.pipeline.policies.http_logging_policy": logging.WARNING,
    "azure.identity": logging.WARNING,
}


def apply_log_policy() -> None:
    """Cap the chatty libraries (called once by function_app.py)."""
    for name, level in CAPPED_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
