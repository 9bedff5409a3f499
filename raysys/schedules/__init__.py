"""Periodic schedules: cron expressions in a time zone, signed definitions and cursors in Redis,
and the ticker the Coordinator runs (each tick enqueues exactly one task).

Imports the foundation, ``signing`` and ``store``.
"""

from raysys.schedules.book import ScheduleBook, ScheduleExists
from raysys.schedules.spec import ScheduleInfo, ScheduleSpec
from raysys.schedules.ticker import ScheduleTicker

__all__ = ["ScheduleBook", "ScheduleExists", "ScheduleInfo", "ScheduleSpec", "ScheduleTicker"]
