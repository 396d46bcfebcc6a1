"""TokenProvider behaviour with no network: a fake clock and scripted transports."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import threading
import time
from typing import List

import pytest

from navro_adapters import (
    Credentials,
    InvalidClientError,
    RefreshPolicy,
    RetryPolicy,
    Token,
    TokenEndpointError,
    TokenProvider,
    TokenResponseError,
    TokenTimeoutError,
    TransportError,
)

from .fakes import (
    AsyncScriptedTransport,
    FakeClock,
    ScriptedTransport,
    error_response,
    token_response,
)

SECRET = "s3cr3t-value-never-logged"
CREDS = Credentials("client-1", SECRET, "acme", token_url="http://127.0.0.1:9/token")


def provider(transport: object, clock: FakeClock | None = None, **kwargs: object) -> TokenProvider:
    return TokenProvider(
        CREDS,
        transport=transport,  # type: ignore[arg-type]
        clock=clock or FakeClock(),
        rng=random.Random(7),
        **kwargs,  # type: ignore[arg-type]
    )


# -- basic caching -----------------------------------------------------------------------------


def test_first_call_fetches_then_serves_from_memory() -> None:
    transport = ScriptedTransport()
    p = provider(transport)
    token = p.get_token()
    assert token.access_token == "tok-1"
    assert p.get_token() is token
    assert len(transport.calls) == 1
    assert p.stats.token_requests == 1 and p.stats.acquisitions == 1


def test_states_follow_proportional_margins() -> None:
    clock = FakeClock()
    transport = ScriptedTransport()
    p = provider(transport, clock)
    first = p.get_token()
    clock.advance(209)  # FRESH for 210 to 240 s of a 300 s token (the refresh jitter)
    assert p.get_token() is first and len(transport.calls) == 1
    clock.advance(285 - 209)  # EXPIRED from 285 s: callers wait for a new token
    second = p.get_token()
    assert second is not first and len(transport.calls) == 2


def test_stale_token_is_served_while_one_background_refresh_runs() -> None:
    clock = FakeClock()
    gate = threading.Event()
    transport = ScriptedTransport(token_response("tok-a"))
    p = provider(transport, clock)
    first = p.get_token()
    transport.gate = gate  # the refresh will hang until we open the gate
    clock.advance(250)  # STALE
    served = [p.get_token() for _ in range(50)]
    assert all(t is first for t in served), "a caller waited or got another token while STALE"
    deadline = time.monotonic() + 5
    while transport.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert transport.in_flight == 1 and p.stats.refreshes_ahead == 1
    gate.set()
    deadline = time.monotonic() + 5
    while p.token is first and time.monotonic() < deadline:
        time.sleep(0.001)
    assert p.get_token() is not first
    assert len(transport.calls) == 2 and transport.max_in_flight == 1


def test_failed_refresh_ahead_keeps_the_valid_token_and_retries_later() -> None:
    clock = FakeClock()
    transport = ScriptedTransport(
        token_response("tok-a"), error_response(400, {"error": "invalid_request"})
    )
    p = provider(transport, clock)
    first = p.get_token()
    clock.advance(250)
    assert p.get_token() is first
    _wait_for(lambda: p.stats.failures == 1)
    assert p.get_token() is first  # within the retry-later pause: no new request
    assert len(transport.calls) == 2
    clock.advance(1.5)
    assert p.get_token() is first  # starts the next refresh
    _wait_for(lambda: p.token is not first)
    assert len(transport.calls) == 3


def test_error_surfaces_only_when_no_valid_token_is_left() -> None:
    clock = FakeClock()
    transport = ScriptedTransport(
        token_response("tok-a"), *[error_response(401, {"error": "invalid_client"})] * 5
    )
    p = provider(transport, clock)
    first = p.get_token()
    clock.advance(250)
    assert p.get_token() is first
    _wait_for(lambda: p.stats.failures == 1)
    clock.advance(40)  # now EXPIRED
    with pytest.raises(InvalidClientError):
        p.get_token()


# -- singleflight --------------------------------------------------------------------------------


def test_hundreds_of_threads_cause_one_fetch_and_share_its_result() -> None:
    gate = threading.Event()
    transport = ScriptedTransport(gate=gate)
    p = TokenProvider(CREDS, transport=transport)
    results: List[object] = []
    threads = [threading.Thread(target=lambda: results.append(p.get_token())) for _ in range(300)]
    for t in threads:
        t.start()
    _wait_for(lambda: transport.in_flight == 1)
    time.sleep(0.05)
    gate.set()
    for t in threads:
        t.join(10)
    assert len(results) == 300 and len({id(r) for r in results}) == 1
    assert len(transport.calls) == 1 and transport.max_in_flight == 1


def test_every_waiter_gets_the_error() -> None:
    gate = threading.Event()
    transport = ScriptedTransport(error_response(401, {"error": "invalid_client"}), gate=gate)
    p = TokenProvider(CREDS, transport=transport)
    errors: List[BaseException] = []

    def call() -> None:
        try:
            p.get_token()
        except InvalidClientError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(50)]
    for t in threads:
        t.start()
    _wait_for(lambda: transport.in_flight == 1)
    gate.set()
    for t in threads:
        t.join(10)
    assert len(errors) == 50 and len(transport.calls) == 1


async def test_thousands_of_tasks_cause_one_fetch() -> None:
    gate = asyncio.Event()
    transport = AsyncScriptedTransport(async_gate=gate)
    p = TokenProvider(CREDS, async_transport=transport)
    tasks = [asyncio.ensure_future(p.aget_token()) for _ in range(2000)]
    await asyncio.sleep(0.05)
    assert transport.in_flight == 1
    gate.set()
    tokens = await asyncio.gather(*tasks)
    assert len({id(t) for t in tokens}) == 1 and len(transport.calls) == 1


async def test_async_with_only_a_sync_transport_runs_off_the_loop() -> None:
    gate = threading.Event()
    transport = ScriptedTransport(gate=gate)
    p = TokenProvider(CREDS, transport=transport)
    tasks = [asyncio.ensure_future(p.aget_token()) for _ in range(100)]
    ticks = 0
    for _ in range(10):  # the loop keeps running while the sync transport blocks on its thread
        await asyncio.sleep(0.005)
        ticks += 1
    assert ticks == 10 and transport.in_flight == 1
    gate.set()
    tokens = await asyncio.gather(*tasks)
    assert len(set(tokens)) == 1 and len(transport.calls) == 1


async def test_cancelling_waiters_neither_cancels_the_fetch_nor_strands_others() -> None:
    gate = asyncio.Event()
    transport = AsyncScriptedTransport(async_gate=gate)
    p = TokenProvider(CREDS, async_transport=transport)
    tasks = [asyncio.ensure_future(p.aget_token()) for _ in range(200)]
    await asyncio.sleep(0.02)
    for task in tasks[::2]:  # including the task that started the fetch
        task.cancel()
    gate.set()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = [d for d in done if isinstance(d, asyncio.CancelledError)]
    tokens = [d for d in done if isinstance(d, Token)]
    assert len(cancelled) == 100 and len(tokens) == 100
    assert len(transport.calls) == 1


def test_provider_works_across_event_loops_and_threads() -> None:
    transport = ScriptedTransport()
    p = TokenProvider(CREDS, transport=transport)

    async def many() -> set:
        return set(await asyncio.gather(*[p.aget_token() for _ in range(100)]))

    first = asyncio.run(many())
    second = asyncio.run(many())
    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(asyncio.run(many()))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert first == second and all(r == first for r in results)
    assert len(transport.calls) == 1


def test_async_flight_abandoned_by_a_closing_loop_is_taken_over() -> None:
    transport = AsyncScriptedTransport(async_gate=None)
    transport_gate = threading.Event()

    async def slow(request: object, *, timeout: float) -> object:
        while not transport_gate.is_set():  # noqa: ASYNC110 (set from another thread/loop)
            await asyncio.sleep(0.005)
        return token_response("late")

    p = TokenProvider(CREDS, async_transport=slow)  # type: ignore[arg-type]

    async def start_and_leave() -> None:
        waiter = asyncio.ensure_future(p.aget_token())
        await asyncio.sleep(0.02)
        waiter.cancel()  # the flight task now runs on this loop; asyncio.run cancels it

    asyncio.run(start_and_leave())
    transport_gate.set()
    token = asyncio.run(asyncio.wait_for(p.aget_token(), 5))
    assert token.access_token == "late"
    del transport


# -- invalidation --------------------------------------------------------------------------------


def test_compare_and_invalidate() -> None:
    transport = ScriptedTransport()
    p = provider(transport)
    old = p.get_token()
    assert p.invalidate(old) is True
    new = p.get_token()
    assert new is not old
    assert p.invalidate(old) is False  # a late 401 for the old token keeps the new one
    assert p.invalidate(old.access_token) is False
    assert p.get_token() is new
    assert p.invalidate(new.access_token) is True and p.stats.invalidations == 2


def test_invalidation_storm_causes_one_fetch() -> None:
    gate = threading.Event()
    transport = ScriptedTransport()
    p = TokenProvider(CREDS, transport=transport)
    old = p.get_token()
    transport.gate = gate
    results: list = []

    def on_401() -> None:
        p.invalidate(old)
        results.append(p.get_token())

    threads = [threading.Thread(target=on_401) for _ in range(100)]
    for t in threads:
        t.start()
    _wait_for(lambda: transport.in_flight == 1)
    gate.set()
    for t in threads:
        t.join(10)
    assert len(transport.calls) == 2 and len(set(results)) == 1 and old not in results


# -- retries -------------------------------------------------------------------------------------


def test_retries_transient_failures_with_backoff() -> None:
    clock = FakeClock()
    transport = ScriptedTransport(
        TransportError("connection refused"),
        TokenTimeoutError("timed out"),
        error_response(500),
        error_response(503),
        token_response("finally"),
    )
    p = provider(transport, clock)
    assert p.get_token().access_token == "finally"
    assert len(transport.calls) == 5
    assert len(clock.sleeps) == 4
    for n, delay in enumerate(clock.sleeps):  # full jitter: 0 <= delay < base * 2**n
        assert 0 <= delay <= min(5.0, 0.2 * 2**n)


def test_retry_after_is_honoured() -> None:
    clock = FakeClock()
    transport = ScriptedTransport(
        error_response(429, {}, {"Retry-After": "3"}), token_response("ok")
    )
    p = provider(transport, clock)
    assert p.get_token().access_token == "ok"
    assert clock.sleeps and clock.sleeps[0] >= 3.0


def test_retry_after_past_the_deadline_fails_at_once() -> None:
    clock = FakeClock()
    transport = ScriptedTransport(error_response(503, {}, {"Retry-After": "120"}))
    p = provider(transport, clock)
    with pytest.raises(TokenEndpointError) as info:
        p.get_token()
    assert info.value.status_code == 503 and info.value.retry_after == 120
    assert clock.sleeps == [] and len(transport.calls) == 1


@pytest.mark.parametrize("status", [400, 401, 403])
def test_client_errors_are_never_retried(status: int) -> None:
    transport = ScriptedTransport(error_response(status, {"error": "x"}))
    p = provider(transport)
    with pytest.raises(TokenEndpointError):
        p.get_token()
    assert len(transport.calls) == 1


def test_malformed_2xx_is_not_retried() -> None:
    transport = ScriptedTransport(error_response(200, ["not", "a", "token"]))
    with pytest.raises(TokenResponseError):
        provider(transport).get_token()
    assert len(transport.calls) == 1


def test_attempts_are_bounded_and_timeouts_fit_the_deadline() -> None:
    clock = FakeClock()
    transport = ScriptedTransport(*[error_response(500)] * 20)
    p = provider(
        transport, clock, retry_policy=RetryPolicy(max_attempts=3, attempt_timeout=10, deadline=12)
    )
    with pytest.raises(TokenEndpointError):
        p.get_token()
    assert len(transport.calls) == 3
    assert transport.timeouts[0] == 10
    assert all(t <= 12 for t in transport.timeouts)


def test_a_server_that_never_answers_cannot_hold_callers_past_the_deadline() -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(50)  # accepts connections, never answers
    port = listener.getsockname()[1]
    try:
        creds = Credentials("client-1", SECRET, "acme", token_url=f"http://127.0.0.1:{port}/token")
        p = TokenProvider(creds, retry_policy=RetryPolicy(attempt_timeout=0.4, deadline=1.0))
        started = time.monotonic()
        with pytest.raises(TokenTimeoutError):
            p.get_token()
        assert time.monotonic() - started < 1.0 + 0.6
    finally:
        listener.close()


async def test_async_deadline_holds_with_a_hanging_async_transport() -> None:
    async def hang(request: object, *, timeout: float) -> object:
        await asyncio.sleep(3600)
        raise AssertionError

    p = TokenProvider(
        CREDS, async_transport=hang, retry_policy=RetryPolicy(attempt_timeout=0.2, deadline=0.7)
    )  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(TokenTimeoutError):
        await p.aget_token()
    assert time.monotonic() - started < 0.7 + 0.5


def test_unknown_transport_exceptions_become_transport_errors_with_cause() -> None:
    class Boom(Exception):
        pass

    transport = ScriptedTransport(*[Boom("kaput")] * 10)
    p = provider(transport, retry_policy=RetryPolicy(max_attempts=2))
    with pytest.raises(TransportError) as info:
        p.get_token()
    assert isinstance(info.value.__cause__, Boom)
    assert len(transport.calls) == 2


def test_a_transport_returning_garbage_is_a_typed_error() -> None:
    p = provider(lambda request, timeout: "nonsense")
    with pytest.raises(TransportError):
        p.get_token()


# -- fork, logging, repr -------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="os.fork is POSIX only")
def test_fork_while_a_fetch_is_in_flight() -> None:
    import os

    gate = threading.Event()
    transport = ScriptedTransport(gate=gate)
    p = TokenProvider(CREDS, transport=transport)
    parent_result: list = []
    leader = threading.Thread(target=lambda: parent_result.append(p.get_token()))
    leader.start()
    _wait_for(lambda: transport.in_flight == 1)
    pid = os.fork()
    if pid == 0:  # the child: the parent's flight and its thread do not exist here
        code = 1
        try:
            transport.gate = None
            token = p.get_token()
            code = 0 if token.access_token.startswith("tok-") and p.stats.acquisitions >= 1 else 2
        finally:
            os._exit(code)
    gate.set()
    leader.join(10)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert parent_result and len(transport.calls) == 1  # the child's fetch was its own


def test_logs_show_fingerprints_never_tokens_or_secrets(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    transport = ScriptedTransport(error_response(503), token_response("the-full-token-value"))
    p = provider(transport, clock)
    with caplog.at_level(logging.DEBUG, logger="navro_adapters"):
        token = p.get_token()
        p.invalidate(token)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert token.fingerprint in text and "503" in text
    assert "the-full-token-value" not in text and SECRET not in text
    assert "the-full-token-value" not in repr(p) and SECRET not in repr(p)


def test_provider_rejects_non_credentials() -> None:
    from navro_adapters import ConfigurationError

    with pytest.raises(ConfigurationError):
        TokenProvider("client-1:secret")  # type: ignore[arg-type]


def test_refresh_policy_validation() -> None:
    from navro_adapters import ConfigurationError

    for bad in (
        {"refresh_fraction": -1},
        {"expiry_fraction": float("nan")},
        {"max_expiry_margin": "x"},
    ):
        with pytest.raises(ConfigurationError):
            RefreshPolicy(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigurationError):
        RetryPolicy(deadline=0)


def test_margins_scale_with_the_lifetime() -> None:
    policy = RefreshPolicy()
    assert policy.margins(300) == (60.0, 15.0)
    refresh, expiry = policy.margins(2)
    assert refresh <= 1.0 and expiry <= refresh  # a 2 s token is served for at least 1 s
    assert policy.margins(86400) == (600.0, 30.0)
    huge = RefreshPolicy(refresh_fraction=5, expiry_fraction=3, min_expiry_margin=1000)
    assert huge.margins(10) == (5.0, 5.0)


def test_provider_is_collectable() -> None:
    import weakref

    p = provider(ScriptedTransport())
    p.get_token()
    ref = weakref.ref(p)
    del p
    gc.collect()
    assert ref() is None


def _wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


def test_fresh_token_never_fetches() -> None:
    clock = FakeClock()
    transport = ScriptedTransport()
    p = provider(transport, clock)
    assert p.fresh_token() is None and transport.calls == []
    token = p.get_token()
    assert p.fresh_token() is token
    clock.advance(250)  # STALE: not fresh, and asking does not start a refresh
    assert p.fresh_token() is None and len(transport.calls) == 1 and p._flight is None


async def test_sync_call_on_the_loop_running_the_flight_does_not_deadlock() -> None:
    gate = asyncio.Event()
    async_transport = AsyncScriptedTransport(async_gate=gate)
    sync_transport = ScriptedTransport(token_response("sync-side"))
    p = TokenProvider(CREDS, transport=sync_transport, async_transport=async_transport)
    waiter = asyncio.ensure_future(p.aget_token())
    await asyncio.sleep(0.01)  # the async flight now runs as a task on this loop, held by the gate
    # A blocking call from this very thread (say, a requests call inside a coroutine) must not
    # wait for a task its own blocking would starve: it fetches on its own.
    token = p.get_token()
    assert token.access_token == "sync-side"
    gate.set()
    assert (await waiter).access_token.startswith("tok-")


def test_stored_tokens_lose_a_bounded_skew_margin() -> None:
    record = {"access_token": "t", "issued_at": 1000.0, "expires_at": 1002.0}
    token = Token.from_record(record, now_monotonic=50.0, now_wall=1000.5, clock_skew=5.0)
    assert token is not None and abs(token.expires_in - 1.8) < 1e-9  # 10% of 2 s, not 5 s
    long_lived = {"access_token": "t", "issued_at": 1000.0, "expires_at": 1300.0}
    token = Token.from_record(long_lived, now_monotonic=50.0, now_wall=1000.0, clock_skew=5.0)
    assert token is not None and token.expires_in == 295.0
    assert token.requested_at == 50.0
    for bad in (
        {},
        {"access_token": "", "issued_at": 1, "expires_at": 2},
        {"access_token": "t", "issued_at": 5, "expires_at": 1},
        "nope",
        {"access_token": "t", "issued_at": True, "expires_at": 2},
    ):
        assert Token.from_record(bad, now_monotonic=0, now_wall=0) is None
