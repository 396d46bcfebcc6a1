"""Compliance drivers for :mod:`navro_adapters.authlib`: requests, httpx sync and httpx async."""

from __future__ import annotations

from typing import Any, Dict

import requests.adapters
from authlib.integrations.httpx_client import OAuth2Client

from navro_adapters import TokenProvider
from navro_adapters._httpx_flavours import FLAVOURS
from navro_adapters.authlib import async_oauth2_client, oauth2_client, oauth2_session

from .drivers import (
    HTTPX_STYLE,
    MAX_THREADS,
    REQUESTS_STYLE,
    AuthSource,
    LoopDriver,
    Outgoing,
    Result,
    ThreadedDriver,
    pop_client_options,
    result_of,
)

#: The httpx flavour Authlib's clients are built on (httpx2 for recent Authlib releases).
_httpx = next(f.module for f in FLAVOURS if issubclass(OAuth2Client, f.module.Client))
CLIENT_TIMEOUT = 30.0  # seconds; generous, so a loaded CI machine never times a request out


def _httpx_limits() -> Any:
    return _httpx.Limits(max_connections=MAX_THREADS, max_keepalive_connections=MAX_THREADS)


def _with_httpx_options(adapter_kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """``adapter_kwargs`` with ``client=ClientOptions(...)`` turned into the Authlib httpx
    client's own ``verify=``, ``proxy=``, ``trust_env=`` (token requests go through it)."""
    options = pop_client_options(adapter_kwargs)
    if options is None:
        return adapter_kwargs
    return {**options.httpx_settings(_httpx), **adapter_kwargs}


class _AuthlibParts:
    """What every Authlib driver holds: one Navro-configured Authlib client."""

    def __init__(self) -> None:
        self._client: Any = None

    @property
    def provider(self) -> TokenProvider:
        provider: TokenProvider = self._client.navro_provider
        return provider


class AuthlibRequestsDriver(ThreadedDriver):
    name = "authlib-requests"

    def __init__(self) -> None:
        self._session: Any = None

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        options = pop_client_options(adapter_kwargs)
        if options is not None:  # verify=, cert=, proxies=, trust_env= of the OAuth2Session
            adapter_kwargs = {**options.requests_settings(), **adapter_kwargs}
        self._session = oauth2_session(source, **adapter_kwargs)
        # One pooled connection per thread, so 100 threads never queue on the pool.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=MAX_THREADS)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    @property
    def provider(self) -> TokenProvider:
        provider: TokenProvider = self._session.navro_provider
        return provider

    def _send_one(self, request: Outgoing) -> Result:
        response = self._session.request(
            request.method, request.url, timeout=CLIENT_TIMEOUT, **request.kwargs(REQUESTS_STYLE)
        )
        return result_of(response.status_code, response.headers, response.content)


class AuthlibHttpxDriver(_AuthlibParts, ThreadedDriver):
    name = "authlib-httpx"

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        adapter_kwargs = _with_httpx_options(adapter_kwargs)
        self._client = oauth2_client(
            source, timeout=CLIENT_TIMEOUT, limits=_httpx_limits(), **adapter_kwargs
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _send_one(self, request: Outgoing) -> Result:
        response = self._client.request(request.method, request.url, **request.kwargs(HTTPX_STYLE))
        return result_of(response.status_code, response.headers, response.content)


class AuthlibAsyncDriver(_AuthlibParts, LoopDriver):
    name = "authlib-async"

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        adapter_kwargs = _with_httpx_options(adapter_kwargs)

        async def make_client() -> Any:
            # Made on the driver's loop: an httpx AsyncClient belongs to the loop that uses it.
            return async_oauth2_client(
                source, timeout=CLIENT_TIMEOUT, limits=_httpx_limits(), **adapter_kwargs
            )

        self._client = self._start_loop(make_client)

    async def _close_client(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _send_one(self, request: Outgoing) -> Result:
        response = await self._client.request(
            request.method, request.url, **request.kwargs(HTTPX_STYLE)
        )
        return result_of(response.status_code, response.headers, response.content)
