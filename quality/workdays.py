"""Working days by the Chinese public-holiday calendar (法定节假日及调休).

``chinese_calendar.is_workday`` knows the State Council's yearly holiday notices, including
the adjusted working weekends (调休上班). It covers a fixed range of years; beyond it we fall
back to Monday–Friday and say so (the ticket records which basis its due date used).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import chinese_calendar

CHINA = ZoneInfo("Asia/Shanghai")
RESPONSE_WORKING_DAYS = 10  # Yunnan draft: 自收到数据校核申请之日起10个工作日内


def today_cn() -> dt.date:
    """Today's date in China (the calendar the deadlines are counted in)."""
    return dt.datetime.now(CHINA).date()


def is_workday(day: dt.date) -> tuple[bool, bool]:
    """(is a working day, whether the holiday calendar knew the year)."""
    try:
        return bool(chinese_calendar.is_workday(day)), True
    except NotImplementedError:
        return day.weekday() < 5, False


def add_working_days(start: dt.date, days: int) -> tuple[dt.date, bool]:
    """The ``days``-th working day after ``start``; the start day itself is not counted.

    Chinese deadline practice counts a period from the day after the triggering day (期间开始
    的当日不计算在内), so a request received on a Monday with a 1-working-day limit is due on
    Tuesday. Returns (due date, whether every step used the official calendar).
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    day = start
    counted = 0
    official = True
    while counted < days:
        day += dt.timedelta(days=1)
        work, known = is_workday(day)
        official = official and known
        if work:
            counted += 1
    return day, official
