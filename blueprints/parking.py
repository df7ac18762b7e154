"""Timer adapter: the parking lot's mover (shared/send/parking.py). Every PARKING_SCHEDULE (six-field NCRONTAB,
UTC: every 5 seconds) it moves the parked messages that are due back to the outbound queue. The Functions host
runs a timer function on one instance at a time (its timer lock), so one mover reads the due rows.
``use_monitor=False``: the schedule monitor keeps a status blob per occurrence for schedules of a minute or
more; a run missed here is simply the next run's work."""

from __future__ import annotations

import logging

import azure.functions as func

logger = logging.getLogger(__name__)

parking_bp = func.Blueprint()

PARKING_SCHEDULE = "*/5 * * * * *"  # {second} {minute} {hour} {day} {month} {day-of-week}: every 5 s


@parking_bp.timer_trigger(schedule=PARKING_SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=False)
def move_parked_messages(timer: func.TimerRequest) -> None:
    """Enqueue the parked messages whose due time has come, then delete their rows (bounded per run)."""
    from shared.send.parking import ParkingLot  # per trigger group: an HTTP or queue instance never loads it
    from shared.services import get_services

    services = get_services()
    report = ParkingLot(services.settings, services.storage).move_due()
    if report.moved or report.lost_race or report.more:
        logger.info("Parking lot: %s", report.as_dict())
