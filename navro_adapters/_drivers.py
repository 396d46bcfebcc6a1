"""The drivers: they perform what the provider's sans-IO flows yield.

A flow (:mod:`navro_adapters._flow`, and the provider's token flow around it) yields actions:
:class:`Send` a token request, :class:`Sleep`, :class:`StoreCall`, :class:`Wait` for another
caller's flight, :class:`Spawn` a flight in the background. Every action but ``Send`` is
performed here, the same way for every caller; ``Send`` is left to whoever drives:

* :func:`sends` / :func:`async_sends` run a flow and yield only its ``Send`` actions, taking the
  answer back. An HTTP client's auth flow can pass those on as its own requests (httpx).
* :func:`drive_sync` / :func:`drive_async` answer them with a transport.

Threads and coroutines, and clients that send token requests themselves, therefore share one
flow and one performer each: nothing is written twice.
"""

from __future__ import annotations

import threading
from typing import (
    Any,
    AsyncGenerator,
    Awaitable,
    Callable,
    Dict,
    Generator,
    List,
    NoReturn,
    Optional,
    Union,
)

from . import _runtime
from ._flow import Action, Send, Sleep, Spawn, StoreCall, Wait
from .errors import NavroAuthError, TokenStoreError, TransportError
from .protocol import TransportResponse
from .store import TokenStore
from .token import Token
from .transport import AsyncTransport, SyncTransport, transport_failure

__all__ = [
    "DEADLOCK",
    "AsyncPerformer",
    "ClientSends",
    "SyncPerformer",
    "async_client_sent",
    "async_sends",
    "client_sent",
    "drive_async",
    "sends",
]

STORE_CALL_TIMEOUT = 2.0  # seconds for one store call from a coroutine; a hung store is skipped
#: What a blocking Wait answers when the flight runs on this very thread's event loop.
DEADLOCK = object()


def _error(action: Action, exc: Exception) -> NavroAuthError:
    """An exception from performing ``action``, as one of ours, its cause kept."""
    if isinstance(exc, NavroAuthError):
        return exc
    if isinstance(action, StoreCall):
        error: NavroAuthError = TokenStoreError(f"{action.method} raised {type(exc).__name__}")
    else:
        error = transport_failure(exc)  # it tells timeouts (asyncio's, trio's, ...) itself
    error.__cause__ = exc
    return error


def _checked(value: object) -> TransportResponse:
    if not isinstance(value, TransportResponse):
        raise TransportError(
            f"transport returned {type(value).__name__}, not a TransportResponse", retryable=False
        )
    return value


class SyncPerformer:
    """Performs actions on the calling thread; ``transport`` serves spawned flights."""

    __slots__ = ("sleep", "store", "transport")

    def __init__(
        self,
        store: Optional[TokenStore],
        sleep: Callable[[float], None],
        transport: Optional[SyncTransport] = None,
    ) -> None:
        self.store, self.sleep, self.transport = store, sleep, transport

    def __call__(self, action: Action) -> Any:
        if isinstance(action, Sleep):
            self.sleep(action.seconds)
        elif isinstance(action, StoreCall):
            assert self.store is not None
            return getattr(self.store, action.method)(*action.args)
        elif isinstance(action, Wait):
            if action.flight.loop_thread == threading.get_ident():
                return DEADLOCK  # blocking here would stop the loop that runs the flight
            return action.flight.wait(action.timeout)
        elif isinstance(action, Spawn):
            assert self.transport is not None
            thread = threading.Thread(
                target=drive_sync,
                args=(action.flow, self.transport, self),
                name="navro-adapters-token",
                daemon=True,
            )
            thread.start()
        else:  # pragma: no cover - a Send reaches the driver, never the performer
            raise TypeError(f"cannot perform {action!r}")
        return None


class AsyncPerformer:
    """Performs actions on the running loop, asyncio's or trio's, without ever blocking it.

    A spawned flight runs as a background task with ``transport`` (async) or, without one, on
    a thread through ``threads`` (a SyncPerformer with its own transport). Store calls run on
    a worker thread. Each operation is the running library's (:mod:`._runtime`).
    """

    __slots__ = ("sleep", "store", "threads", "transport")

    def __init__(
        self,
        store: Optional[TokenStore],
        sleep: Callable[[float], Awaitable[None]],
        transport: Optional[AsyncTransport] = None,
        threads: Optional[SyncPerformer] = None,
    ) -> None:
        self.store, self.sleep = store, sleep
        self.transport, self.threads = transport, threads

    async def __call__(self, action: Action) -> Any:
        if isinstance(action, Sleep):
            await self.sleep(action.seconds)
        elif isinstance(action, StoreCall):
            assert self.store is not None
            runtime = _runtime.current()
            call = runtime.run_in_thread(getattr(self.store, action.method), *action.args)
            return await runtime.wait_for(call, STORE_CALL_TIMEOUT)
        elif isinstance(action, Wait):
            return await action.flight.wait_async(action.timeout)
        elif isinstance(action, Spawn):
            self._spawn(action)
        else:  # pragma: no cover - a Send reaches the driver, never the performer
            raise TypeError(f"cannot perform {action!r}")
        return None

    def _spawn(self, action: Spawn) -> None:
        if self.transport is None:
            assert self.threads is not None
            self.threads(action)  # a thread: off every event loop
            return
        action.flight.loop_thread = threading.get_ident()
        _runtime.current().spawn(lambda: drive_async(action.flow, self))


def sends(flow: Generator[Any, Any, Any], perform: SyncPerformer) -> Generator[Any, Any, None]:
    """Run ``flow``, performing every action but ``Send``; yield each ``Send`` and take its
    answer (a TransportResponse) back, or an exception thrown in; yield the result last."""
    value: Any = None
    error: Optional[NavroAuthError] = None
    try:
        while True:
            try:
                action = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                yield stop.value
                return
            value, error = None, None
            try:
                value = _checked((yield action)) if isinstance(action, Send) else perform(action)
            except Exception as exc:
                error = _error(action, exc)
    finally:
        flow.close()  # whatever ends this, the flow's own cleanup runs now (a flight abandoned)


async def async_sends(
    flow: Generator[Any, Any, Any], perform: AsyncPerformer
) -> AsyncGenerator[Union[Send, Token], Any]:
    """:func:`sends` for coroutines."""
    value: Any = None
    error: Optional[NavroAuthError] = None
    try:
        while True:
            try:
                action = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                yield stop.value
                return
            value, error = None, None
            try:
                sent = isinstance(action, Send)
                value = _checked((yield action)) if sent else await perform(action)
            except Exception as exc:
                error = _error(action, exc)
    finally:
        flow.close()  # see sends()


def drive_sync(
    flow: Generator[Any, Any, Any], transport: SyncTransport, perform: SyncPerformer
) -> Any:
    """Run a flow on the calling thread, sending its token requests with ``transport``."""
    steps = sends(flow, perform)
    step = next(steps)
    while isinstance(step, Send):
        try:
            response = transport(step.request, timeout=step.timeout)
        except Exception as exc:
            step = steps.throw(exc)
        else:
            step = steps.send(response)
    steps.close()
    return step


async def drive_async(flow: Generator[Any, Any, Any], perform: AsyncPerformer) -> Any:
    """Run a flow on the running loop, sending its token requests with the performer's async
    transport (bounded by each attempt's timeout, whatever the transport does)."""
    steps = async_sends(flow, perform)
    step = await steps.asend(None)
    while isinstance(step, Send):
        try:
            assert perform.transport is not None
            sent = perform.transport(step.request, timeout=step.timeout)
            response = await _runtime.current().wait_for(sent, step.timeout)
        except Exception as exc:
            step = await steps.athrow(exc)
        else:
            step = await steps.asend(response)
    await steps.aclose()
    return step


def response_of(response: Any) -> TransportResponse:
    """An httpx-like response (``status_code``, ``headers``, ``content``, read) as ours."""
    return TransportResponse.build(response.status_code, response.headers.items(), response.content)


def client_sent(
    steps: Generator[Any, Any, Any], build: Callable[[Send, Callable[..., Any]], Any]
) -> Generator[Any, Any, Any]:
    """Run ``steps`` (:func:`sends`) from an HTTP client's own sync auth flow, which delegates
    here with ``yield from``: each token request goes out as ``build(send, trace)``, the
    client's request with a ``trace`` callback, for the client to send; returns the token."""
    step = next(steps)
    while isinstance(step, Send):
        client = ClientSends()
        try:
            answer = yield build(step, client.record)
        except GeneratorExit:
            client.abandon(steps)
        step = client.answer(steps, answer)
    return step


async def async_client_sent(
    steps: AsyncGenerator[Any, Any], build: Callable[[Send, Callable[..., Any]], Any]
) -> AsyncGenerator[Any, Any]:
    """:func:`client_sent` for an async auth flow, which cannot delegate: it sends what this
    yields until that is the token. If the client closes the flow, throw ``GeneratorExit``
    in here: that raises what the caller should see (see :meth:`ClientSends.aabandon`)."""
    step = await steps.asend(None)
    while isinstance(step, Send):
        client = ClientSends()
        try:
            answer = yield build(step, client.arecord)
        except GeneratorExit:
            await client.aabandon(steps)
        step = await client.aanswer(steps, answer)
    yield step


class ClientSends:
    """Token requests handed to an HTTP client to send in its own auth flow (httpx's way).

    The client sends what :meth:`request` is given; if it gives up on one without an answer
    it closes the auth flow, raising its own exception around it. ``failures`` collects what
    the client's transport reported (httpx's ``trace`` extension) so that :meth:`abandon`
    can tell a failed token request (raised as our typed error instead; a non-retryable one
    also fails every caller waiting on it) from a cancelled one (the waiters take over).
    """

    __slots__ = ("failures",)

    def __init__(self) -> None:
        self.failures: List[BaseException] = []

    def record(self, event: str, info: Dict[str, Any]) -> None:
        """A ``trace`` callback: keep the exception of every failed transport step."""
        if event.endswith(".failed") and isinstance(info.get("exception"), Exception):
            self.failures.append(info["exception"])

    async def arecord(self, event: str, info: Dict[str, Any]) -> None:
        self.record(event, info)

    def answer(self, steps: Generator[Send, Any, Any], response: Any) -> Any:
        """Pass the client's answer (an httpx-like response, body not read yet) on to
        ``steps`` and return its next step. A body that fails to arrive ends this caller's
        part like a failed send (the client would not take another request after it)."""
        try:
            response.read()
        except Exception as exc:
            self.failures.append(exc)
            self.abandon(steps)
        return steps.send(response_of(response))

    async def aanswer(self, steps: AsyncGenerator[Any, Any], response: Any) -> Any:
        """:meth:`answer` for the async flow."""
        try:
            await response.aread()
        except Exception as exc:
            self.failures.append(exc)
            await self.aabandon(steps)
        return await steps.asend(response_of(response))

    def _error(self) -> Optional[NavroAuthError]:
        if not self.failures:
            return None
        error = transport_failure(self.failures[-1])
        error.__cause__ = self.failures[-1]
        return error

    def abandon(self, steps: Generator[Send, Any, Any]) -> NoReturn:
        """The client closed the flow mid-request: raise what the caller should see."""
        error = self._error()
        if error is not None and not error.retryable:
            steps.throw(error)  # the flight fails with it, so its waiters get it too
        steps.close()  # a cancel, or a transient failure: the waiters take the flight over
        raise error if error is not None else GeneratorExit

    async def aabandon(self, steps: AsyncGenerator[Any, Any]) -> NoReturn:
        """:meth:`abandon` for the async flow."""
        error = self._error()
        if error is not None and not error.retryable:
            await steps.athrow(error)
        await steps.aclose()
        raise error if error is not None else GeneratorExit
