"""Compliance driver for :mod:`navro_adapters.aiohttp` (a ClientSession with the middleware)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Coroutine,
    List,
    Mapping,
    Optional,
    Sequence,
    TypeVar,
)

import aiohttp

from navro_adapters import TokenProvider
from navro_adapters.aiohttp import NavroAuthMiddleware

from .drivers import AuthSource, Driver, Result

T = TypeVar("T")

CALL_TIMEOUT = 60.0  # seconds a blocking driver call waits for its coroutines


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except ValueError:
        return None


class LoopThread:
    """A private event loop on a daemon thread; coroutines are submitted to it from outside."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_TIMEOUT)

    def stop(self) -> None:
        async def _drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(_drain())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CALL_TIMEOUT)
        self.loop.close()


async def _capture(call: Awaitable[Result]) -> Result:
    try:
        return await call
    except Exception as exc:  # a request's exception is part of its result
        return Result(error=exc)


class AiohttpDriver(Driver):
    name = "aiohttp"
    concurrency = "tasks"

    def __init__(self) -> None:
        self._loop: Optional[LoopThread] = None
        self._session: Optional[aiohttp.ClientSession] = None
        self._middleware: Optional[NavroAuthMiddleware] = None

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        self._middleware = NavroAuthMiddleware(source, **adapter_kwargs)
        self._loop = LoopThread("aiohttp-driver")

        async def _make() -> aiohttp.ClientSession:
            # Made on the driver's loop: a ClientSession belongs to the loop it was created on.
            # A large pool so 1000 concurrent tasks are really in flight together.
            connector = aiohttp.TCPConnector(limit=1000)
            return aiohttp.ClientSession(connector=connector, middlewares=(self._middleware,))

        self._session = self._loop.run(_make())

    def close(self) -> None:
        if self._loop is None:
            return
        if self._session is not None:
            self._loop.run(self._session.close())
        self._loop.stop()
        self._loop = None
        self._session = None

    @property
    def provider(self) -> TokenProvider:
        assert self._middleware is not None
        return self._middleware.provider

    async def _one(
        self,
        method: str,
        url: str,
        headers: Optional[Mapping[str, str]],
        body: Any,
        follow_redirects: bool,
    ) -> Result:
        assert self._session is not None
        async with self._session.request(
            method,
            url,
            headers=dict(headers) if headers else None,
            data=body,
            allow_redirects=follow_redirects,
        ) as response:
            content = await response.read()
            return Result(
                status=response.status, headers=dict(response.headers), json=_decode(content)
            )

    def request_many(
        self,
        method: str,
        urls: Sequence[str],
        *,
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[bytes] = None,
        follow_redirects: bool = True,
    ) -> List[Result]:
        assert self._loop is not None

        async def _all() -> List[Result]:
            return list(
                await asyncio.gather(
                    *(_capture(self._one(method, u, headers, body, follow_redirects)) for u in urls)
                )
            )

        return self._loop.run(_all())

    def send_unreplayable(self, url: str) -> Result:
        assert self._loop is not None

        async def _chunks() -> AsyncIterator[bytes]:
            yield b'{"one": '
            yield b'"shot"}'

        return self._loop.run(_capture(self._one("POST", url, None, _chunks(), True)))
