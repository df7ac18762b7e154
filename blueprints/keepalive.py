"""Timer adapter: the keep-alive sweep on REFRESH_SCHEDULE (six-field NCRONTAB, UTC)."""

from __future__ import annotations

import logging

import azure.functions as func

logger = logging.getLogger(__name__)

keepalive_bp = func.Blueprint()

# host.json functionTimeout is 10 minutes: stop taking new work well before it.
SWEEP_BUDGET_SECONDS = 480


@keepalive_bp.timer_trigger(schedule="%REFRESH_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def keep_alive(timer: func.TimerRequest) -> None:
    """Refresh connections whose refresh token was last redeemed more than REFRESH_AFTER_DAYS ago."""
    if timer.past_due:
        logger.info("Keep-alive timer is past due; running now")
    from shared.services import get_services
    from shared.tokens.refresh import KeepAlive  # per trigger group: a cold HTTP or queue instance never loads it

    report = KeepAlive(get_services()).sweep(budget_seconds=SWEEP_BUDGET_SECONDS)
    logger.info("Keep-alive finished: %s", report.as_dict())
