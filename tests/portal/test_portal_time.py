"""Times on the pages: Asia/Shanghai, to the second; days stay days."""

from __future__ import annotations

import datetime as dt

from portal.web import cn_time


def test_cn_time() -> None:
    assert cn_time(dt.datetime(2026, 1, 1, 16, 30, 5, 123456)) == "2026-01-02 00:30:05"
    aware = dt.datetime(2026, 1, 1, 16, 30, 5, tzinfo=dt.UTC)
    assert cn_time(aware) == "2026-01-02 00:30:05"
    assert cn_time("2026-01-01T16:30:05.000001Z") == "2026-01-02 00:30:05"
    assert cn_time("2026-12-10") == "2026-12-10"
    assert cn_time(dt.date(2026, 12, 10)) == "2026-12-10"
    assert cn_time(None) == ""
