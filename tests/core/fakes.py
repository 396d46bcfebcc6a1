"""Test doubles for the core: a clock that moves only when told, and scripted transports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from typing import Any, Callable, Iterator, List, Optional, Union

from navro_adapters import TokenRequest, TransportResponse
from navro_adapters.errors import NavroAuthError


class FakeClock:
    """Monotonic and wall clocks that advance only through ``advance`` (or ``sleep``)."""

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall - start
        self.sleeps: List[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)  # a real yield, so other tasks run as they would

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


def token_response(
    access_token: str = "tok-1", expires_in: Any = 300, status: int = 200, **extra: Any
) -> TransportResponse:
    body = {"access_token": access_token, "token_type": "Bearer", "expires_in": expires_in}
    body.update(extra)
    return TransportResponse.build(
        status, {"content-type": "application/json"}, json.dumps(body).encode()
    )


def error_response(
    status: int, body: Any = None, headers: Optional[dict] = None
) -> TransportResponse:
    raw = json.dumps(body).encode() if body is not None else b""
    return TransportResponse.build(status, headers or {}, raw)


Step = Union[TransportResponse, BaseException, Callable[[], TransportResponse]]


class ScriptedTransport:
    """A sync transport answering from a script; after the script, fresh tokens forever.

    ``gate`` (an Event) holds every request until set, to pile callers up behind one fetch.
    """

    def __init__(self, *steps: Step, gate: Optional[threading.Event] = None) -> None:
        self.steps = list(steps)
        self.calls: List[TokenRequest] = []
        self.timeouts: List[float] = []
        self.gate = gate
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._issued = 0

    def next_response(self) -> TransportResponse:
        with self._lock:
            step: Optional[Step] = self.steps.pop(0) if self.steps else None
            self._issued += 1
            n = self._issued
        if step is None:
            return token_response(f"tok-{n}")
        if isinstance(step, BaseException):
            raise step
        if callable(step) and not isinstance(step, TransportResponse):
            return step()
        return step

    @contextlib.contextmanager
    def _tracked(self, request: TokenRequest, timeout: float) -> Iterator[None]:
        """Record a call and count it in flight while it lasts."""
        with self._lock:
            self.calls.append(request)
            self.timeouts.append(timeout)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1

    def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        with self._tracked(request, timeout):
            if self.gate is not None:
                assert self.gate.wait(30), "test gate never opened"
            return self.next_response()


class AsyncScriptedTransport(ScriptedTransport):
    """The same script, as an async transport; ``async_gate`` holds requests on the loop."""

    def __init__(self, *steps: Step, async_gate: Optional[asyncio.Event] = None) -> None:
        super().__init__(*steps)
        self.async_gate = async_gate

    async def __call__(  # type: ignore[override]
        self, request: TokenRequest, *, timeout: float
    ) -> TransportResponse:
        with self._tracked(request, timeout):
            if self.async_gate is not None:
                await self.async_gate.wait()
            else:
                await asyncio.sleep(0.01)
            return self.next_response()


def raise_(exc: NavroAuthError) -> Callable[[], TransportResponse]:
    def step() -> TransportResponse:
        raise exc

    return step
