"""Compliance drivers for :mod:`navro_adapters.authlib`: requests, httpx sync and httpx async."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    TypeVar,
)

import requests.adapters

from navro_adapters import TokenProvider
from navro_adapters.authlib import (
    _httpx,
    async_oauth2_client,
    oauth2_client,
    oauth2_session,
)

from .drivers import AuthSource, Driver, Result

T = TypeVar("T")

CALL_TIMEOUT = 60.0  # seconds a blocking driver call waits
MAX_THREADS = 100  # request_many runs up to this many requests at once
CLIENT_TIMEOUT = 30.0  # seconds; generous, so a loaded CI machine never times a request out


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except ValueError:
        return None


def _capture(call: Callable[[], Result]) -> Result:
    try:
        return call()
    except Exception as exc:  # a request's exception is part of its result
        return Result(error=exc)


def _run_threads(calls: List[Callable[[], Result]]) -> List[Result]:
    with ThreadPoolExecutor(max_workers=max(1, min(len(calls), MAX_THREADS))) as pool:
        return list(pool.map(_capture, calls))


def _one_shot_body() -> Iterator[bytes]:
    yield b'{"one": '
    yield b'"shot"}'


class AuthlibRequestsDriver(Driver):
    name = "authlib-requests"
    concurrency = "threads"

    def __init__(self) -> None:
        self._session: Any = None

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
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

    def _one(
        self,
        method: str,
        url: str,
        headers: Optional[Mapping[str, str]],
        body: Any,
        follow_redirects: bool,
    ) -> Result:
        response = self._session.request(
            method,
            url,
            headers=dict(headers) if headers else None,
            data=body,
            allow_redirects=follow_redirects,
            timeout=CLIENT_TIMEOUT,
        )
        return Result(
            status=response.status_code,
            headers=dict(response.headers),
            json=_decode(response.content),
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
        return _run_threads(
            [functools.partial(self._one, method, u, headers, body, follow_redirects) for u in urls]
        )

    def send_unreplayable(self, url: str) -> Result:
        return _capture(lambda: self._one("POST", url, None, _one_shot_body(), True))


class AuthlibHttpxDriver(Driver):
    name = "authlib-httpx"
    concurrency = "threads"

    def __init__(self) -> None:
        self._client: Any = None

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        self._client = oauth2_client(
            source,
            timeout=CLIENT_TIMEOUT,
            limits=_httpx.Limits(
                max_connections=MAX_THREADS, max_keepalive_connections=MAX_THREADS
            ),
            **adapter_kwargs,
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def provider(self) -> TokenProvider:
        provider: TokenProvider = self._client.navro_provider
        return provider

    def _one(
        self,
        method: str,
        url: str,
        headers: Optional[Mapping[str, str]],
        body: Any,
        follow_redirects: bool,
    ) -> Result:
        response = self._client.request(
            method,
            url,
            headers=dict(headers) if headers else None,
            content=body,
            follow_redirects=follow_redirects,
        )
        return Result(
            status=response.status_code,
            headers=dict(response.headers),
            json=_decode(response.content),
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
        return _run_threads(
            [functools.partial(self._one, method, u, headers, body, follow_redirects) for u in urls]
        )

    def send_unreplayable(self, url: str) -> Result:
        return _capture(lambda: self._one("POST", url, None, _one_shot_body(), True))


class _LoopThread:
    """A private event loop on a daemon thread; coroutines are submitted to it from outside."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

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


class AuthlibAsyncDriver(Driver):
    name = "authlib-async"
    concurrency = "tasks"

    def __init__(self) -> None:
        self._loop: Optional[_LoopThread] = None
        self._client: Any = None

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        self._loop = _LoopThread("authlib-async-driver")

        async def _make() -> Any:
            # Made on the driver's loop: an httpx AsyncClient belongs to the loop that uses it.
            return async_oauth2_client(
                source,
                timeout=CLIENT_TIMEOUT,
                limits=_httpx.Limits(max_connections=100, max_keepalive_connections=100),
                **adapter_kwargs,
            )

        self._client = self._loop.run(_make())

    def close(self) -> None:
        if self._loop is None:
            return
        if self._client is not None:
            self._loop.run(self._client.aclose())
            self._client = None
        self._loop.stop()
        self._loop = None

    @property
    def provider(self) -> TokenProvider:
        provider: TokenProvider = self._client.navro_provider
        return provider

    async def _one(
        self,
        method: str,
        url: str,
        headers: Optional[Mapping[str, str]],
        body: Any,
        follow_redirects: bool,
    ) -> Result:
        try:
            response = await self._client.request(
                method,
                url,
                headers=dict(headers) if headers else None,
                content=body,
                follow_redirects=follow_redirects,
            )
        except Exception as exc:
            return Result(error=exc)
        return Result(
            status=response.status_code,
            headers=dict(response.headers),
            json=_decode(response.content),
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
                    *(self._one(method, u, headers, body, follow_redirects) for u in urls)
                )
            )

        return self._loop.run(_all())

    def send_unreplayable(self, url: str) -> Result:
        assert self._loop is not None

        async def _chunks() -> AsyncIterator[bytes]:
            yield b'{"one": '
            yield b'"shot"}'

        return self._loop.run(self._one("POST", url, None, _chunks(), True))
