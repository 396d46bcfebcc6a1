"""A flight: one token acquisition in progress, awaited by threads and by any event loop.

Exactly one caller (a thread, a task or an HTTP client's auth flow) runs a flight's
acquisition; everyone else waits on it. Threads wait on an ``Event``; coroutines on a waiter of
their own library and loop (asyncio or trio, see :mod:`._runtime`), woken thread-safely, so
cancelling one waiter never cancels the flight.

Coroutines are woken in turn, one per loop at a time: each, once it runs, wakes the next of its
loop. Woken together, the 200 tasks that waited for a rotation's token ran in one loop
iteration and held the loop for 50-80 ms (measured on httpx's AsyncClient); in turn, a loop
runs one of them per iteration and its other work in between.
"""

from __future__ import annotations

import collections
import threading
from typing import Deque, Dict, List, Optional

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

    __slots__ = (
        "_lock",
        "_turns",
        "_waiters",
        "done",
        "give_up_at",
        "loop_thread",
        "outcome",
        "refresh",
    )

    def __init__(self, *, refresh: bool, give_up_at: float) -> None:
        self.refresh = refresh
        self.give_up_at = give_up_at
        self.loop_thread: Optional[int] = None  # set when the flight runs as a task on a loop
        self.done = threading.Event()
        self.outcome: Optional[Outcome] = None
        self._lock = threading.Lock()
        self._waiters: List[_runtime.Waiter] = []  # coroutines waiting, until the outcome
        self._turns: Dict[object, Deque[_runtime.Waiter]] = {}  # then: per loop, in order

    def finish(self, outcome: Outcome) -> None:
        with self._lock:
            if self.outcome is not None:
                return
            self.outcome = outcome
            for waiter in self._waiters:
                self._turns.setdefault(waiter.group, collections.deque()).append(waiter)
            self._waiters = []
            groups = list(self._turns)
        self.done.set()
        for group in groups:
            self._wake_next(group)

    def _wake_next(self, group: object) -> None:
        """Wake the next coroutine waiting on ``group``'s loop, if any is left."""
        with self._lock:
            queue = self._turns.get(group)
            waiter = queue.popleft() if queue else None
            if not queue:
                self._turns.pop(group, None)
        if waiter is not None and not waiter.wake():
            with self._lock:
                self._turns.pop(group, None)  # its loop is closed: so are all its waiters

    def wait(self, timeout: float) -> Optional[Outcome]:
        self.done.wait(max(0.0, timeout))
        return self.outcome

    async def wait_async(self, timeout: float) -> Optional[Outcome]:
        waiter = _runtime.current().waiter()
        with self._lock:
            if self.outcome is not None:
                return self.outcome
            self._waiters.append(waiter)
        try:
            await waiter.wait(timeout)  # cancelling this waiter cancels only its own wait
        finally:
            if waiter.woken:
                self._wake_next(waiter.group)  # its turn came: pass it on, even if cancelled
            else:
                self._forget(waiter)
        return self.outcome

    def _forget(self, waiter: _runtime.Waiter) -> None:
        """Drop a waiter that timed out or was cancelled before its turn."""
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            queue = self._turns.get(waiter.group)
            if queue is not None and waiter in queue:
                queue.remove(waiter)
