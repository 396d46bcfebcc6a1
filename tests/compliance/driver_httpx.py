"""Compliance drivers for ``navro_adapters.httpx`` on httpx and httpx2, sync and async.

Sync drivers share one ``Client`` between a pool of threads; async drivers own an event loop on
a private thread, create their ``AsyncClient`` on it and run each call's requests as tasks
there. A flavour whose library is missing raises ImportError when its class is looked up, which
the suite turns into a skip.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Dict, Optional

from navro_adapters import TokenProvider
from navro_adapters.httpx import NavroAuth

from .drivers import (
    HTTPX_STYLE,
    MAX_THREADS,
    AuthSource,
    ClientOptions,
    LoopDriver,
    Outgoing,
    Result,
    ThreadedDriver,
    pop_client_options,
    result_of,
)

REQUEST_TIMEOUT = 30.0  # seconds; generous, 1000 tasks share the pool


def _import(name: str) -> ModuleType:
    return importlib.import_module(name)


class _HttpxParts:
    """What both httpx drivers hold: the flavour's module, the adapter and the client."""

    library: str

    def __init__(self) -> None:
        self._module = _import(self.library)
        self._auth: Optional[NavroAuth] = None
        self._client: Any = None
        self._options: Optional[ClientOptions] = None

    def _client_kwargs(self) -> Dict[str, Any]:
        module = self._module
        kwargs: Dict[str, Any] = {
            "auth": self._auth,
            "limits": module.Limits(
                max_connections=MAX_THREADS, max_keepalive_connections=MAX_THREADS
            ),
            # 1000 tasks queue for 100 connections: wait for one rather than fail after 5 s.
            "timeout": module.Timeout(REQUEST_TIMEOUT, pool=None),
        }
        if self._options is not None:
            # verify=, proxy=, trust_env= on the client itself: with no client= named, the
            # auth flow yields token requests through it.
            kwargs.update(self._options.httpx_settings(module))
        return kwargs

    @property
    def provider(self) -> TokenProvider:
        assert self._auth is not None
        return self._auth.provider


class _HttpxSyncDriver(_HttpxParts, ThreadedDriver):
    token_requests_through_client = True

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        self._options = pop_client_options(adapter_kwargs)
        self._auth = NavroAuth(source, **adapter_kwargs)
        self._client = self._module.Client(**self._client_kwargs())

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._auth is not None:
            self._auth.close()

    def _send_one(self, request: Outgoing) -> Result:
        response = self._client.request(request.method, request.url, **request.kwargs(HTTPX_STYLE))
        return result_of(response.status_code, response.headers, response.content)


class _HttpxAsyncDriver(_HttpxParts, LoopDriver):
    token_requests_through_client = True

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        self._options = pop_client_options(adapter_kwargs)
        self._auth = NavroAuth(source, **adapter_kwargs)
        self._client = self._start_loop(self._make_client)

    async def _make_client(self) -> Any:
        return self._module.AsyncClient(**self._client_kwargs())

    async def _close_client(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def close(self) -> None:
        super().close()
        if self._auth is not None:
            self._auth.close()

    async def _send_one(self, request: Outgoing) -> Result:
        response = await self._client.request(
            request.method, request.url, **request.kwargs(HTTPX_STYLE)
        )
        return result_of(response.status_code, response.headers, response.content)


class HttpxSyncDriver(_HttpxSyncDriver):
    name = "httpx-sync"
    library = "httpx"


class HttpxAsyncDriver(_HttpxAsyncDriver):
    name = "httpx-async"
    library = "httpx"


class Httpx2SyncDriver(_HttpxSyncDriver):
    name = "httpx2-sync"
    library = "httpx2"


class Httpx2AsyncDriver(_HttpxAsyncDriver):
    name = "httpx2-async"
    library = "httpx2"


class HttpxAsyncTrioDriver(HttpxAsyncDriver):
    name = "httpx-async-trio"
    runtime = "trio"  # the same client and adapter in a trio run (httpx speaks trio via anyio)


class Httpx2AsyncTrioDriver(Httpx2AsyncDriver):
    name = "httpx2-async-trio"
    runtime = "trio"


def _installed(library: str) -> bool:
    try:
        _import(library)
    except ImportError:
        return False
    return True


# A flavour whose library is missing must be skipped, not crash: hide its classes so that
# looking them up raises ImportError (module __getattr__ only runs for missing names).
_MISSING = {
    cls.__name__: cls.library
    for cls in (HttpxSyncDriver, HttpxAsyncDriver, Httpx2SyncDriver, Httpx2AsyncDriver)
    if not _installed(cls.library)
}
_MISSING.update(
    {
        cls.__name__: "trio" if _installed(cls.library) else cls.library
        for cls in (HttpxAsyncTrioDriver, Httpx2AsyncTrioDriver)
        if not (_installed(cls.library) and _installed("trio"))
    }
)
for _name in _MISSING:
    del globals()[_name]


def __getattr__(name: str) -> Any:
    if name in _MISSING:
        raise ModuleNotFoundError(f"{_MISSING[name]} is not installed", name=_MISSING[name])
    raise AttributeError(name)
