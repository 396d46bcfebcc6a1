"""Compliance driver for :mod:`navro_adapters.aiohttp` (a ClientSession with the middleware)."""

from __future__ import annotations

from typing import Any, Dict, Optional

import aiohttp

from navro_adapters import TokenProvider
from navro_adapters.aiohttp import NavroAuthMiddleware

from .drivers import (
    REQUESTS_STYLE,
    AuthSource,
    ClientOptions,
    LoopDriver,
    Outgoing,
    Result,
    pop_client_options,
    result_of,
)

# A large pool so 1000 concurrent tasks are really in flight together.
CONNECTION_LIMIT = 1000


class AiohttpDriver(LoopDriver):
    name = "aiohttp"

    def __init__(self) -> None:
        self._session: Optional[aiohttp.ClientSession] = None
        self._middleware: Optional[NavroAuthMiddleware] = None
        self._options: Optional[ClientOptions] = None

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        self._options = pop_client_options(adapter_kwargs)
        self._middleware = NavroAuthMiddleware(source, **adapter_kwargs)
        self._session = self._start_loop(self._make_session)

    async def _make_session(self) -> aiohttp.ClientSession:
        # Made on the driver's loop: a ClientSession belongs to the loop it was created on.
        assert self._middleware is not None
        connector_kwargs: Dict[str, Any] = {}
        session_kwargs: Dict[str, Any] = {}
        if self._options is not None:
            # ssl= on the connector, proxy=/trust_env= on the session (aiohttp >= 3.10): token
            # requests go out on the request's own session, so they get both.
            connector_kwargs, session_kwargs = self._options.aiohttp_settings()
        connector = aiohttp.TCPConnector(limit=CONNECTION_LIMIT, **connector_kwargs)
        return aiohttp.ClientSession(
            connector=connector, middlewares=(self._middleware,), **session_kwargs
        )

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
