"""A flight: one token acquisition in progress, awaited by threads and by any event loop.

Exactly one caller (a thread, a task or an HTTP client's auth flow) runs a flight's
acquisition; everyone else waits on it. Threads wait on an ``Event``; coroutines on a future of
their own loop, resolved thread-safely, so cancelling one waiter never cancels the flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import List, Optional, Tuple

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
        self._waiters: List[Tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def finish(self, outcome: Outcome) -> None:
        with self._lock:
            if self.outcome is not None:
                return
            self.outcome = outcome
            waiters, self._waiters = self._waiters, []
        self.done.set()
        for loop, future in waiters:
            # A closed loop raises RuntimeError: its waiter is gone with it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)

    def wait(self, timeout: float) -> Optional[Outcome]:
        self.done.wait(max(0.0, timeout))
        return self.outcome

    async def wait_async(self, timeout: float) -> Optional[Outcome]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            if self.outcome is not None:
                return self.outcome
            self._waiters.append(entry)
        try:
            # Cancelling this waiter cancels only its own future, never the shared flight.
            await asyncio.wait_for(future, max(0.0, timeout))
        except asyncio.TimeoutError:
            pass
        finally:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)
        return self.outcome


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
