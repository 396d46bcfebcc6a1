"""Time sources, injectable so tests can move time without sleeping.

Expiry is tracked on a monotonic clock (a wall-clock jump must never make a token look fresher
than it is); the wall clock is used only to turn ``Retry-After`` dates into delays and to share
absolute expiry instants with other processes through a token store.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock", "SYSTEM_CLOCK"]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    def time(self) -> float:
        """Seconds since the Unix epoch (wall clock)."""

    def sleep(self, seconds: float) -> None:
        """Block the calling thread (sync path only; the async path uses asyncio.sleep)."""


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()
