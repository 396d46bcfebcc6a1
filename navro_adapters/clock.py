"""Time sources, injectable so tests can move time without sleeping.

Expiry is tracked on a monotonic clock (a wall-clock jump must never make a token look fresher
than it is); the wall clock is used only to turn ``Retry-After`` dates into delays and to share
absolute expiry instants with other processes through a token store.
"""

from __future__ import annotations

import time as _time
from typing import Protocol

from . import _runtime

__all__ = ["Clock", "SystemClock", "SYSTEM_CLOCK"]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    def time(self) -> float:
        """Seconds since the Unix epoch (wall clock)."""

    def sleep(self, seconds: float) -> None:
        """Block the calling thread (the sync path's backoff and store polling)."""

    async def asleep(self, seconds: float) -> None:
        """Wait without blocking the event loop (the async path's backoff and polling)."""


class SystemClock:
    """The real clocks (the C functions themselves: no Python frame on the hot path)."""

    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)
    sleep = staticmethod(_time.sleep)
    asleep = staticmethod(_runtime.sleep)  # asyncio's or trio's, whichever runs the caller

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()
