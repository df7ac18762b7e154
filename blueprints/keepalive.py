"""Timer adapter: the keep-alive sweep on REFRESH_SCHEDULE (six-field NCRONTAB, UTC), KEEPALIVE_CONCURRENCY
refreshes at a time for at most KEEPALIVE_RUN_SECONDS (below host.json's functionTimeout; docs/capacity.md)."""

from __future__ import annotations

import logging

import azure.functions as func

logger = logging.getLogger(__name__)

keepalive_bp = func.Blueprint()


@keepalive_bp.timer_trigger(schedule="%REFRESH_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def keep_alive(timer: func.TimerRequest) -> None:
    """Refresh connections whose refresh token was last redeemed more than REFRESH_AFTER_DAYS ago."""
    if timer.past_due:
        logger.info("Keep-alive timer is past due; running now")
    from shared.services import get_services
    from shared.tokens.refresh import KeepAlive  # per trigger group: a cold HTTP or queue instance never loads it

    services = get_services()
    settings = services.settings
    keepalive = KeepAlive(services, concurrency=settings.keepalive_concurrency)
    report = keepalive.sweep(budget_seconds=settings.keepalive_run_seconds)
    logger.info("Keep-alive finished: %s", report.as_dict())
