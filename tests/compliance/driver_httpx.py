"""Compliance drivers for ``navro_adapters.httpx`` on httpx and httpx2, sync and async.

Sync drivers share one ``Client`` between a pool of threads; async drivers own an event loop on
a private thread, create their ``AsyncClient`` on it and run each call's requests as tasks
there. A flavour whose library is missing raises ImportError when its class is looked up, which
the suite turns into a skip.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import (
    Any,
    AsyncIterator,
    Coroutine,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    TypeVar,
)

from navro_adapters import TokenProvider
from navro_adapters.httpx import NavroAuth

from .drivers import AuthSource, Driver, Result

MAX_THREADS = 100  # request_many runs one thread per URL, up to this many
REQUEST_TIMEOUT = 30.0  # seconds; generous, 1000 tasks share the pool
CLOSE_TIMEOUT = 30.0

_T = TypeVar("_T")


def _import(name: str) -> ModuleType:
    return importlib.import_module(name)


def _result(response: Any) -> Result:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    return Result(status=response.status_code, headers=dict(response.headers), json=body)


def _limits(module: ModuleType) -> Any:
    return module.Limits(max_connections=100, max_keepalive_connections=100)


def _pool_timeout(module: ModuleType) -> Any:
    # 1000 tasks queue for 100 connections: wait for one rather than fail after 5 s.
    return module.Timeout(REQUEST_TIMEOUT, pool=None)


class _HttpxSyncDriver(Driver):
    concurrency = "threads"
    library: str

    def __init__(self) -> None:
        self._module = _import(self.library)
        self._auth: Optional[NavroAuth] = None
        self._client: Any = None

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        self._auth = NavroAuth(source, **adapter_kwargs)
        self._client = self._module.Client(
            auth=self._auth, limits=_limits(self._module), timeout=_pool_timeout(self._module)
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._auth is not None:
            self._auth.close()

    @property
    def provider(self) -> TokenProvider:
        assert self._auth is not None
        return self._auth.provider

    def _send(
        self,
        method: str,
        url: str,
        headers: Optional[Mapping[str, str]],
        content: Any,
        follow_redirects: bool,
    ) -> Result:
        try:
            response = self._client.request(
                method,
                url,
                headers=dict(headers) if headers else None,
                content=content,
                follow_redirects=follow_redirects,
            )
        except Exception as exc:
            return Result(error=exc)
        return _result(response)

    def request_many(
        self,
        method: str,
        urls: Sequence[str],
        *,
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[bytes] = None,
        follow_redirects: bool = True,
    ) -> List[Result]:
        if not urls:
            return []
        with ThreadPoolExecutor(max_workers=min(len(urls), MAX_THREADS)) as pool:
            futures = [
                pool.submit(self._send, method, url, headers, body, follow_redirects)
                for url in urls
            ]
            return [future.result() for future in futures]

    def send_unreplayable(self, url: str) -> Result:
        def chunks() -> Iterator[bytes]:
            yield b'{"amount": '
            yield b"100}"

        return self._send("POST", url, None, chunks(), True)


class _HttpxAsyncDriver(Driver):
    concurrency = "tasks"
    library: str

    def __init__(self) -> None:
        self._module = _import(self.library)
        self._auth: Optional[NavroAuth] = None
        self._client: Any = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None

    def _run(self, coro: Coroutine[Any, Any, _T], timeout: Optional[float] = None) -> _T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"{self.name}-loop", daemon=True
        )
        self._thread.start()
        self._auth = NavroAuth(source, **adapter_kwargs)
        self._client = self._run(self._make_client())

    async def _make_client(self) -> Any:
        return self._module.AsyncClient(
            auth=self._auth, limits=_limits(self._module), timeout=_pool_timeout(self._module)
        )

    async def _shutdown(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        for task in others:  # e.g. a refresh-ahead still in flight
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await asyncio.get_running_loop().shutdown_default_executor()

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._run(self._shutdown(), CLOSE_TIMEOUT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CLOSE_TIMEOUT)
            loop.close()
            if self._auth is not None:
                self._auth.close()
            self._loop = self._thread = None

    @property
    def provider(self) -> TokenProvider:
        assert self._auth is not None
        return self._auth.provider

    async def _send(
        self,
        method: str,
        url: str,
        headers: Optional[Mapping[str, str]],
        content: Any,
        follow_redirects: bool,
    ) -> Result:
        try:
            response = await self._client.request(
                method,
                url,
                headers=dict(headers) if headers else None,
                content=content,
                follow_redirects=follow_redirects,
            )
        except Exception as exc:
            return Result(error=exc)
        return _result(response)

    async def _send_all(
        self,
        method: str,
        urls: Sequence[str],
        headers: Optional[Mapping[str, str]],
        body: Optional[bytes],
        follow_redirects: bool,
    ) -> List[Result]:
        return list(
            await asyncio.gather(
                *(self._send(method, url, headers, body, follow_redirects) for url in urls)
            )
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
        return self._run(self._send_all(method, urls, headers, body, follow_redirects))

    def send_unreplayable(self, url: str) -> Result:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"amount": '
            yield b"100}"

        return self._run(self._send("POST", url, None, chunks(), True))


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
for _name in _MISSING:
    del globals()[_name]


def __getattr__(name: str) -> Any:
    if name in _MISSING:
        raise ImportError(f"{_MISSING[name]} is not installed")
    raise AttributeError(name)
