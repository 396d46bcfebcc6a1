"""Compliance driver for :mod:`navro_adapters.aiohttp` (a ClientSession with the middleware)."""

from __future__ import annotations

from typing import Any, Optional

import aiohttp

from navro_adapters import TokenProvider
from navro_adapters.aiohttp import NavroAuthMiddleware

from .drivers import REQUESTS_STYLE, AuthSource, LoopDriver, Outgoing, Result, result_of

# A large pool so 1000 concurrent tasks are really in flight together.
CONNECTION_LIMIT = 1000


class AiohttpDriver(LoopDriver):
    name = "aiohttp"

    def __init__(self) -> None:
        self._session: Optional[aiohttp.ClientSession] = None
        self._middleware: Optional[NavroAuthMiddleware] = None

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        self._middleware = NavroAuthMiddleware(source, **adapter_kwargs)
        self._session = self._start_loop(self._make_session)

    async def _make_session(self) -> aiohttp.ClientSession:
        # Made on the driver's loop: a ClientSession belongs to the loop it was created on.
        assert self._middleware is not None
        connector = aiohttp.TCPConnector(limit=CONNECTION_LIMIT)
        return aiohttp.ClientSession(connector=connector, middlewares=(self._middleware,))

    async def _close_client(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def provider(self) -> TokenProvider:
        assert self._middleware is not None
        return self._middleware.provider

    async def _send_one(self, request: Outgoing) -> Result:
        assert self._session is not None
        async with self._session.request(
            request.method, request.url, **request.kwargs(REQUESTS_STYLE)
        ) as response:
            return result_of(response.status, response.headers, await response.read())
