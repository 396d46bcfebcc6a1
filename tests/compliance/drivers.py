"""The driver interface the compliance suite runs against every adapter flavour.

A driver wraps one adapter on one HTTP library in one concurrency style and exposes the same
blocking calls, so one set of test functions covers them all. Async drivers own an event loop
on a private thread for their whole life (clients such as ``aiohttp.ClientSession`` belong to
one loop) and run each call's coroutines there.

Every request runs in a copy of the calling thread's ``contextvars`` context, whether on a pool
thread or as a task on the driver's loop, as a real application's request runs inside whatever
the caller set (an OpenTelemetry span, say).
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextvars
import importlib
import inspect
import json
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Coroutine,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

from navro_adapters import TokenProvider

AuthSource = Any  # Credentials | TokenProvider

MAX_THREADS = 100  # a threaded request_many runs one thread per URL, up to this many
# Seconds a blocking call waits for the coroutines it runs on a driver's loop: the suite's own
# per-test timeout (120 s in pyproject.toml) is the real backstop against a hang, and on a loaded
# machine 1000 tasks can take over a minute, so this never fires before it.
CALL_TIMEOUT = 120.0

#: How a client's request() names the body and the redirect switch.
REQUESTS_STYLE = ("data", "allow_redirects")  # requests, aiohttp
HTTPX_STYLE = ("content", "follow_redirects")  # httpx, httpx2 and Authlib's clients on them

_T = TypeVar("_T")


@dataclass
class Result:
    """What one request ended with: a response (status, headers, JSON body) or an exception."""

    status: Optional[int] = None
    headers: Optional[Mapping[str, str]] = None
    json: Any = None
    error: Optional[BaseException] = None


@dataclass(frozen=True)
class ClientOptions:
    """Client settings a driver configures *in code* on the HTTP client it builds.

    Pass them as ``driver.open(source, client=ClientOptions(...))``; each driver translates
    them into its library's own form (requests and niquests: the ``Session``'s ``verify``/
    ``cert``/``proxies``/``trust_env`` and ``NavroAuth(session=...)``; httpx, httpx2 and
    Authlib's httpx clients: ``verify=<SSLContext>``, ``proxy=``, ``trust_env=``; aiohttp:
    ``TCPConnector(ssl=<SSLContext>)`` and ``ClientSession(proxy=..., trust_env=...)``), never
    environment variables. ``None`` leaves a setting at the library's default (``trust_env``:
    on for requests and httpx, off for aiohttp). ``client_cert`` is ``(cert_file, key_file)``.
    """

    ca_file: Optional[str] = None
    client_cert: Optional[Tuple[str, str]] = None
    proxy: Optional[str] = None
    trust_env: Optional[bool] = None

    def ssl_context(self) -> Optional[ssl.SSLContext]:
        """A context trusting ``ca_file`` (else the system's CAs) and presenting
        ``client_cert``; None when neither is set (the library's default verification)."""
        if self.ca_file is None and self.client_cert is None:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert is not None:
            cert_file, key_file = self.client_cert
            context.load_cert_chain(cert_file, key_file)
        return context

    def requests_settings(self) -> Dict[str, Any]:
        """``requests.Session`` attributes (also Authlib ``OAuth2Session`` keyword arguments)."""
        settings: Dict[str, Any] = {}
        if self.ca_file is not None:
            settings["verify"] = self.ca_file
        if self.client_cert is not None:
            settings["cert"] = tuple(self.client_cert)
        if self.proxy is not None:
            settings["proxies"] = {"http": self.proxy, "https": self.proxy}
        if self.trust_env is not None:
            settings["trust_env"] = self.trust_env
        return settings

    def httpx_settings(self, module: Any = None) -> Dict[str, Any]:
        """``httpx.Client``/``AsyncClient`` keyword arguments (httpx2's and Authlib's too), for
        ``module`` (default: httpx)."""
        settings: Dict[str, Any] = {}
        context = self.ssl_context()
        if context is not None:
            settings["verify"] = context
        if self.proxy is not None:
            settings.update(httpx_proxy(module, self.proxy))
        if self.trust_env is not None:
            settings["trust_env"] = self.trust_env
        return settings

    def aiohttp_settings(self) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """``(TCPConnector kwargs, ClientSession kwargs)``; a session-wide ``proxy=`` needs
        aiohttp >= 3.10 (the middleware itself needs 3.12)."""
        connector: Dict[str, Any] = {}
        session: Dict[str, Any] = {}
        context = self.ssl_context()
        if context is not None:
            connector["ssl"] = context
        if self.proxy is not None:
            session["proxy"] = self.proxy
        if self.trust_env is not None:
            session["trust_env"] = self.trust_env
        return connector, session


def pop_client_options(adapter_kwargs: Dict[str, Any]) -> Optional[ClientOptions]:
    """Take ``client=ClientOptions(...)`` out of a driver's ``open()`` keyword arguments.

    Any other ``client=`` (httpx's ``NavroAuth(client=...)``) stays an adapter argument.
    """
    options = adapter_kwargs.get("client")
    if isinstance(options, ClientOptions):
        del adapter_kwargs["client"]
        return options
    return None


class Driver(abc.ABC):
    #: "requests", "httpx-sync", "httpx-async", "httpx2-sync", ...
    name: str
    #: "threads" or "tasks": how request_many runs its requests at once
    concurrency: str
    #: the client sends token requests in its own auth flow (httpx with no client named): a
    #: token request that gets no answer fails the one caller whose request carried it
    token_requests_through_client: bool = False

    @abc.abstractmethod
    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        """Build the adapter from Credentials or a TokenProvider, and a client using it.

        ``client=ClientOptions(...)`` (optional) configures that client's TLS, proxy and
        ``trust_env`` in code, and token requests go through it (see :class:`ClientOptions`);
        every other keyword argument goes to the adapter."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the client (and the driver's loop/thread for async drivers)."""

    @abc.abstractmethod
    def request_many(
        self,
        method: str,
        urls: Sequence[str],
        *,
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[bytes] = None,
        follow_redirects: bool = True,
    ) -> List[Result]:
        """Send one request per URL, all at once (threads or tasks), and return every result
        in order. An exception from a request becomes ``Result(error=exc)``; never raises."""

    @abc.abstractmethod
    def send_unreplayable(self, url: str) -> Result:
        """POST ``url`` with a one-shot streaming body (a generator / async generator)."""

    def request(self, method: str, url: str, **kwargs: Any) -> Result:
        return self.request_many(method, [url], **kwargs)[0]

    @property
    def provider(self) -> TokenProvider:
        """The TokenProvider the adapter uses (built or given)."""
        raise NotImplementedError


def decode_json(body: bytes) -> Any:
    """The JSON a response body holds, or ``None`` when it holds none."""
    try:
        return json.loads(body.decode("utf-8"))
    except ValueError:
        return None


def result_of(status: int, headers: Mapping[str, str], body: bytes) -> Result:
    return Result(status=status, headers=dict(headers), json=decode_json(body))


def one_shot_body() -> Iterator[bytes]:
    """A request body that can be read once: a generator, consumed by the first send."""
    yield b'{"one": '
    yield b'"shot"}'


async def one_shot_stream() -> AsyncIterator[bytes]:
    """:func:`one_shot_body` for async clients."""
    yield b'{"one": '
    yield b'"shot"}'


@dataclass(frozen=True)
class Outgoing:
    """One request a driver sends (``request_many`` makes one per URL)."""

    method: str
    url: str
    headers: Optional[Dict[str, str]]
    body: Any  # bytes, None, or a one-shot (async) generator
    follow_redirects: bool = True

    def kwargs(self, style: Tuple[str, str]) -> Dict[str, Any]:
        """Keyword arguments for a client's ``request(method, url, ...)``; ``style`` names the
        client's body and redirect arguments (:data:`REQUESTS_STYLE` or :data:`HTTPX_STYLE`)."""
        body_name, redirects_name = style
        return {
            "headers": self.headers,
            body_name: self.body,
            redirects_name: self.follow_redirects,
        }


class _BatchDriver(Driver):
    """``request_many`` as one batch of :class:`Outgoing` requests, sent all at once."""

    def request_many(
        self,
        method: str,
        urls: Sequence[str],
        *,
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[bytes] = None,
        follow_redirects: bool = True,
    ) -> List[Result]:
        return self._send_all(
            [
                Outgoing(method, url, dict(headers) if headers else None, body, follow_redirects)
                for url in urls
            ]
        )

    @abc.abstractmethod
    def _send_all(self, requests: List[Outgoing]) -> List[Result]:
        """Send every request at once; one result each, in order (never raises)."""


class ThreadedDriver(_BatchDriver):
    """A driver for a sync client shared by threads: ``request_many`` sends each request on a
    thread of its own (up to :data:`MAX_THREADS` at once). Subclasses send one request."""

    concurrency = "threads"

    @abc.abstractmethod
    def _send_one(self, request: Outgoing) -> Result:
        """Send one request through the client and describe its response (may raise)."""

    def _send(self, request: Outgoing) -> Result:
        try:
            return self._send_one(request)
        except Exception as exc:  # a request's exception is part of its result
            return Result(error=exc)

    def _send_all(self, requests: List[Outgoing]) -> List[Result]:
        if not requests:
            return []
        context = contextvars.copy_context()

        def send(request: Outgoing) -> Result:
            # A context is entered by one thread at a time: each request gets its own copy.
            return context.copy().run(self._send, request)

        with ThreadPoolExecutor(max_workers=min(len(requests), MAX_THREADS)) as pool:
            return list(pool.map(send, requests))

    def send_unreplayable(self, url: str) -> Result:
        return self._send(Outgoing("POST", url, None, one_shot_body()))


class LoopThread:
    """A private event loop on a daemon thread; coroutines are submitted to it from outside."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the loop in a copy of the caller's context, and wait for its result
        (at most :data:`CALL_TIMEOUT`)."""
        done: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def start() -> None:
            # Runs in the caller's context, so the task copies that one, not the loop thread's.
            task = self.loop.create_task(coro)
            task.add_done_callback(lambda finished: _settle(finished, done))

        self.loop.call_soon_threadsafe(start, context=contextvars.copy_context())
        return done.result(CALL_TIMEOUT)

    def stop(self) -> None:
        """Cancel what still runs (e.g. a refresh-ahead in flight), then end the thread."""

        async def _drain() -> None:
            current = asyncio.current_task()
            others = [task for task in asyncio.all_tasks() if task is not current]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await asyncio.get_running_loop().shutdown_default_executor()

        try:
            self.run(_drain())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(CALL_TIMEOUT)
            self.loop.close()


class TrioThread:
    """A trio run on a daemon thread, with :class:`LoopThread`'s interface: coroutines are
    submitted to it from outside (``trio.from_thread``, trio's public way in)."""

    def __init__(self, name: str) -> None:
        import trio

        self._trio = trio
        self._started = threading.Event()
        self._token: Any = None
        self._stop: Any = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        if not self._started.wait(CALL_TIMEOUT):
            raise RuntimeError("the trio run did not start")

    def _main(self) -> None:
        trio = self._trio

        async def serve() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            self._started.set()
            await self._stop.wait()

        trio.run(serve)

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        async def _await() -> _T:
            with self._trio.fail_after(CALL_TIMEOUT):
                return await coro

        result: _T = self._trio.from_thread.run(_await, trio_token=self._token)
        return result

    def stop(self) -> None:
        """End the run: background work still running (a refresh ahead) is cancelled."""
        self._trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(CALL_TIMEOUT)


async def gather(runtime: str, coros: List[Coroutine[Any, Any, _T]]) -> List[_T]:
    """``asyncio.gather`` on ``runtime`` ("asyncio" or "trio"): every result, in order."""
    if runtime == "asyncio":
        return list(await asyncio.gather(*coros))
    import trio

    results: List[Any] = [None] * len(coros)

    async def one(index: int, coro: Coroutine[Any, Any, _T]) -> None:
        results[index] = await coro

    async with trio.open_nursery() as nursery:
        for index, coro in enumerate(coros):
            nursery.start_soon(one, index, coro)
    return results


def _settle(task: asyncio.Future[_T], done: concurrent.futures.Future[_T]) -> None:
    """Hand a finished task's outcome to the thread waiting for it."""
    if task.cancelled():
        done.cancel()
    elif task.exception() is not None:
        done.set_exception(task.exception())
    else:
        done.set_result(task.result())


class LoopDriver(_BatchDriver):
    """A driver for an async client: it owns an event loop (asyncio's, or a trio run when
    ``runtime`` is "trio") on a private thread from ``open`` to ``close`` (clients such as
    ``aiohttp.ClientSession`` belong to one loop) and ``request_many`` runs one task per URL
    there at once. Subclasses send one request."""

    concurrency = "tasks"
    runtime = "asyncio"
    _loop: Optional[Union[LoopThread, TrioThread]] = None

    def _start_loop(self, make_client: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        """Start the loop and return the client ``make_client`` builds on it."""
        runner = TrioThread if self.runtime == "trio" else LoopThread
        self._loop = runner(f"{self.name}-driver")
        return self._loop.run(make_client())

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        assert self._loop is not None
        return self._loop.run(coro)

    def close(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.run(self._close_client())
        finally:
            loop.stop()
            self._loop = None

    @abc.abstractmethod
    async def _close_client(self) -> None:
        """Close the client, on its loop."""

    @abc.abstractmethod
    async def _send_one(self, request: Outgoing) -> Result:
        """Send one request through the client and describe its response (may raise)."""

    async def _send(self, request: Outgoing) -> Result:
        try:
            return await self._send_one(request)
        except Exception as exc:  # a request's exception is part of its result
            return Result(error=exc)

    def _send_all(self, requests: List[Outgoing]) -> List[Result]:
        async def _all() -> List[Result]:
            return await gather(self.runtime, [self._send(request) for request in requests])

        return self._run(_all())

    def send_unreplayable(self, url: str) -> Result:
        return self._run(self._send(Outgoing("POST", url, None, one_shot_stream())))


# name -> "module:Class"; a module whose HTTP library is missing is skipped with its reason.
DRIVERS: Dict[str, str] = {
    "requests": "tests.compliance.driver_requests:RequestsDriver",
    "httpx-sync": "tests.compliance.driver_httpx:HttpxSyncDriver",
    "httpx-async": "tests.compliance.driver_httpx:HttpxAsyncDriver",
    "httpx2-sync": "tests.compliance.driver_httpx:Httpx2SyncDriver",
    "httpx2-async": "tests.compliance.driver_httpx:Httpx2AsyncDriver",
    "httpx-async-trio": "tests.compliance.driver_httpx:HttpxAsyncTrioDriver",
    "httpx2-async-trio": "tests.compliance.driver_httpx:Httpx2AsyncTrioDriver",
    "aiohttp": "tests.compliance.driver_aiohttp:AiohttpDriver",
    "authlib-requests": "tests.compliance.driver_authlib:AuthlibRequestsDriver",
    "authlib-httpx": "tests.compliance.driver_authlib:AuthlibHttpxDriver",
    "authlib-async": "tests.compliance.driver_authlib:AuthlibAsyncDriver",
    "niquests-sync": "tests.compliance.driver_niquests:NiquestsSyncDriver",
    "niquests-async": "tests.compliance.driver_niquests:NiquestsAsyncDriver",
}


#: The HTTP libraries a flavour may need; only their absence lets a flavour be skipped.
LIBRARIES = frozenset({"requests", "httpx", "httpx2", "aiohttp", "authlib", "niquests", "trio"})
_INSTALL_HINT = "pip install 'navro-adapters["


def httpx_proxy(module: Any, url: str) -> Dict[str, Any]:
    """A proxy as ``module.Client`` takes it: ``proxy=`` (httpx 0.26 and later, httpx2) or
    ``proxies=`` (httpx 0.23 to 0.25), read from the constructor's public signature."""
    if module is None:
        import httpx as module
    parameters = inspect.signature(module.Client.__init__).parameters
    return {"proxy": url} if "proxy" in parameters else {"proxies": url}


def library_missing(exc: BaseException) -> bool:
    """Whether an ImportError means an HTTP library is not installed (not a broken import)."""
    error: Optional[BaseException] = exc
    while error is not None:
        if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] in LIBRARIES:
            return True
        if type(error) is ImportError and _INSTALL_HINT in str(error):
            return True
        error = error.__cause__
    return False


def load_driver(name: str) -> Callable[[], Driver]:
    module_name, _, class_name = DRIVERS[name].partition(":")
    module = importlib.import_module(module_name)
    factory: Callable[[], Driver] = getattr(module, class_name)
    return factory
