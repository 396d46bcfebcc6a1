"""Writes RELIABILITY.md at the end of a session that ran reliability tests, when asked to."""

from __future__ import annotations

import pytest

from .helpers import want_report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if want_report():
        from .report import write_report

        write_report()
