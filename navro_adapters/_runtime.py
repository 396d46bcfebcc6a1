"""The async library a coroutine runs under: asyncio, or trio (anyio runs on either).

Everything the async path does that is not plain ``await`` goes through :func:`current`:
sleeping, bounding a step with a timeout, running a blocking call on a worker thread, starting
a flight in the background and waiting for another caller's flight. Each library's way of doing
those lives here once, so the drivers, flights and clocks hold no library-specific code.

The running library is told by sniffio, which httpx, anyio and trio depend on; without sniffio
installed nothing but asyncio can be running. trio is imported only once sniffio says it runs,
so asyncio users never need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any, Awaitable, Callable, Coroutine, Set, Tuple, TypeVar

from ._log import logger

__all__ = ["AsyncRuntime", "Waiter", "current", "sleep"]

T = TypeVar("T")
#: ``(wake, wait)``: ``wake()`` may be called from any thread, once or more; ``await
#: wait(seconds)`` returns when woken or when ``seconds`` have passed, whichever first.
Waiter = Tuple[Callable[[], None], Callable[[float], Awaitable[None]]]

_tasks: Set[asyncio.Task[Any]] = set()  # strong references to spawned work until done

_sniffio: Any
try:
    import sniffio as _sniffio
except ImportError:  # pragma: no cover - httpx, anyio and trio all bring sniffio along
    _sniffio = None


class AsyncRuntime:
    """The operations the async path needs, on asyncio (this class) or on trio."""

    name = "asyncio"

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T:
        """``await awaitable``, raising the builtin ``TimeoutError`` after ``timeout`` s."""
        try:
            return await asyncio.wait_for(awaitable, timeout)
        except asyncio.TimeoutError:  # not the builtin one before Python 3.11
            raise TimeoutError(f"no answer within {timeout:.3g} s") from None

    async def run_in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on a worker thread; cancelling the await abandons the thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(function, *args))

    def spawn(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Run ``work()`` in the background, unowned by the caller: cancelling the caller
        never cancels it. An exception it lets out is logged, never raised anywhere."""
        task = asyncio.get_running_loop().create_task(_logged(work))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)

    def waiter(self) -> Waiter:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: its waiter is gone with it
                loop.call_soon_threadsafe(_resolve, future)

        async def wait(seconds: float) -> None:
            # Cancelling this waiter cancels only its own future, never what it waits for.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(future, max(0.0, seconds))

        return wake, wait


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _logged(work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    try:
        await work()
    except Exception as exc:  # a flight publishes its own errors; this is a bug, never data
        logger.error("background token work failed: %s", type(exc).__name__)


class TrioRuntime(AsyncRuntime):
    """The same operations on trio (and on anyio's trio backend), through trio's public API."""

    name = "trio"

    def __init__(self) -> None:
        import trio
        import trio.lowlevel
        import trio.to_thread

        self.trio = trio

    async def sleep(self, seconds: float) -> None:
        await self.trio.sleep(max(0.0, seconds))

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T:
        try:
            with self.trio.fail_after(max(0.0, timeout)):
                return await awaitable
        except self.trio.TooSlowError:
            raise TimeoutError(f"no answer within {timeout:.3g} s") from None

    async def run_in_thread(self, function: Callable[..., T], *args: Any) -> T:
        result: T = await self.trio.to_thread.run_sync(
            functools.partial(function, *args), abandon_on_cancel=True
        )
        return result

    def spawn(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        # A system task belongs to the run, not to the caller's nursery or cancel scope; it is
        # cancelled only when the run ends (the flight is then abandoned: waiters start over).
        self.trio.lowlevel.spawn_system_task(_logged, work, name="navro-adapters-token")

    def waiter(self) -> Waiter:
        trio = self.trio
        run = trio.lowlevel.current_trio_token()
        event = trio.Event()

        def wake() -> None:
            with contextlib.suppress(trio.RunFinishedError):  # the run is over: so is its waiter
                run.run_sync_soon(event.set)

        async def wait(seconds: float) -> None:
            with trio.move_on_after(max(0.0, seconds)):
                await event.wait()

        return wake, wait


_ASYNCIO = AsyncRuntime()
_trio: Any = None  # made on first use under trio


def current() -> AsyncRuntime:
    """The runtime of the running coroutine's library (asyncio unless sniffio says trio)."""
    global _trio
    if _sniffio is None:
        return _ASYNCIO
    try:
        name = _sniffio.current_async_library()
    except _sniffio.AsyncLibraryNotFoundError:
        return _ASYNCIO  # called outside a coroutine (a sync caller building a waiter): asyncio
    if name != "trio":
        return _ASYNCIO
    if _trio is None:
        _trio = TrioRuntime()
    runtime: AsyncRuntime = _trio
    return runtime


async def sleep(seconds: float) -> None:
    """Sleep on whichever library runs the caller (the system clock's ``asleep``)."""
    await current().sleep(seconds)
