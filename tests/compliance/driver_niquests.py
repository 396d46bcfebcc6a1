"""Compliance drivers for ``navro_adapters.niquests``: a ``Session`` shared by a pool of threads
(``NavroAuth``) and an ``AsyncSession`` on a private event loop (``AsyncNavroAuth``).

With ``client=ClientOptions(...)`` the session gets the settings and is bound as ``session=``
(the README's way), so token requests go through it; without, they use the standard library.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import niquests
import niquests.utils

from navro_adapters import TokenProvider
from navro_adapters.niquests import AsyncNavroAuth, NavroAuth

from .drivers import (
    MAX_THREADS,
    REQUESTS_STYLE,
    AuthSource,
    ClientOptions,
    LoopDriver,
    Outgoing,
    Result,
    ThreadedDriver,
    pop_client_options,
    result_of,
)

POOL_SIZE = MAX_THREADS  # connections kept per host, so 100 threads do not fight over 10
REQUEST_TIMEOUT = 30.0  # seconds


def read_proxy_environment_afresh() -> None:
    """niquests reads the proxy variables once per process (``niquests.utils.getproxies`` is
    an ``lru_cache``); tests set them mid-process, so each driver reads them as a new process
    would. Users, who set them before starting, never need this."""
    for name in ("getproxies", "getproxies_environment"):
        cached = getattr(niquests.utils, name, None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()


def configure(session: niquests.Session, options: Optional[ClientOptions]) -> None:
    """The session's own verify/cert/proxies/trust_env, set in code (as for requests)."""
    read_proxy_environment_afresh()
    if options is not None:
        for name, value in options.requests_settings().items():
            setattr(session, name, value)


class _NiquestsParts:
    _auth: Optional[Union[NavroAuth, AsyncNavroAuth]] = None

    @property
    def provider(self) -> TokenProvider:
        assert self._auth is not None
        return self._auth.provider


class NiquestsSyncDriver(_NiquestsParts, ThreadedDriver):
    name = "niquests-sync"

    def __init__(self) -> None:
        self._session: Optional[niquests.Session] = None

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        options = pop_client_options(adapter_kwargs)
        session = niquests.Session(pool_connections=4, pool_maxsize=POOL_SIZE)
        configure(session, options)
        if options is not None:
            adapter_kwargs.setdefault("session", session)
        self._auth = NavroAuth(source, **adapter_kwargs)
        session.auth = self._auth
        self._session = session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    def _send_one(self, request: Outgoing) -> Result:
        assert self._session is not None
        response = self._session.request(
            request.method, request.url, timeout=REQUEST_TIMEOUT, **request.kwargs(REQUESTS_STYLE)
        )
        return result_of(response.status_code or 0, response.headers, response.content or b"")


class NiquestsAsyncDriver(_NiquestsParts, LoopDriver):
    name = "niquests-async"

    def __init__(self) -> None:
        self._session: Optional[niquests.AsyncSession] = None

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        options = pop_client_options(adapter_kwargs)

        async def make_session() -> niquests.AsyncSession:
            session = niquests.AsyncSession(pool_connections=4, pool_maxsize=POOL_SIZE)
            configure(session, options)
            if options is not None:
                adapter_kwargs.setdefault("session", session)
            self._auth = AsyncNavroAuth(source, **adapter_kwargs)
            session.auth = self._auth
            return session

        try:
            self._session = self._start_loop(make_session)
        except BaseException:
            self.close()  # the loop thread is started before the adapter can refuse its input
            raise

    async def _close_client(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _send_one(self, request: Outgoing) -> Result:
        assert self._session is not None
        response = await self._session.request(
            request.method, request.url, timeout=REQUEST_TIMEOUT, **request.kwargs(REQUESTS_STYLE)
        )
        return result_of(response.status_code or 0, response.headers, response.content or b"")
