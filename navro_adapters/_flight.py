"""A flight: one token acquisition in progress, awaited by threads and by any event loop.

Exactly one caller (a thread, a task or an HTTP client's auth flow) runs a flight's
acquisition; everyone else waits on it. Threads wait on an ``Event``; coroutines on a waiter of
their own library and loop (asyncio or trio, see :mod:`._runtime`), woken thread-safely, so
cancelling one waiter never cancels the flight.
"""

from __future__ import annotations

import threading
from typing import Callable, List, Optional

from . import _runtime
from .errors import NavroAuthError
from .token import Token

__all__ = ["ABANDONED", "Flight", "Outcome"]


class Outcome:
    """What a flight ended with: a token, an error, or neither (abandoned: try again)."""

    __slots__ = ("abandoned", "error", "token")

    def __init__(
        self,
        token: Optional[Token] = None,
        error: Optional[NavroAuthError] = None,
        abandoned: bool = False,
    ) -> None:
        self.token = token
        self.error = error
        self.abandoned = abandoned


ABANDONED = Outcome(abandoned=True)


class Flight:
    """One acquisition in progress, awaitable from threads and from any event loop."""

    __slots__ = ("_lock", "_waiters", "done", "give_up_at", "loop_thread", "outcome", "refresh")

    def __init__(self, *, refresh: bool, give_up_at: float) -> None:
        self.refresh = refresh
        self.give_up_at = give_up_at
        self.loop_thread: Optional[int] = None  # set when the flight runs as a task on a loop
        self.done = threading.Event()
        self.outcome: Optional[Outcome] = None
        self._lock = threading.Lock()
        self._waiters: List[Callable[[], None]] = []  # each wakes one coroutine, from any thread

    def finish(self, outcome: Outcome) -> None:
        with self._lock:
            if self.outcome is not None:
                return
            self.outcome = outcome
            waiters, self._waiters = self._waiters, []
        self.done.set()
        for wake in waiters:
            wake()

    def wait(self, timeout: float) -> Optional[Outcome]:
        self.done.wait(max(0.0, timeout))
        return self.outcome

    async def wait_async(self, timeout: float) -> Optional[Outcome]:
        wake, wait = _runtime.current().waiter()
        with self._lock:
            if self.outcome is not None:
                return self.outcome
            self._waiters.append(wake)
        try:
            await wait(timeout)  # cancelling this waiter cancels only its own wait
        finally:
            with self._lock:
                if wake in self._waiters:
                    self._waiters.remove(wake)
        return self.outcome
