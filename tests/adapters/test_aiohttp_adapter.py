"""Tests specific to the aiohttp middleware; what every adapter does is in tests/compliance.

Here: how the rule meets a client middleware (run once per redirect hop, our token stripped
from a hop to another origin, the 401 response released before the resend, which bodies can
be resent), which session sends the token requests (the request's own, or ``token_session=``)
and how that meets the caller's connection pool, and the token transport itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, AsyncIterator, Callable, List

import pytest

aiohttp = pytest.importorskip("aiohttp")

from yarl import URL

from navro_adapters import (
    ConfigurationError,
    Credentials,
    RetryPolicy,
    TokenEndpointError,
    TokenProvider,
    TokenRequest,
    TokenTimeoutError,
    TransportError,
    TransportResponse,
    build_token_request,
)
from navro_adapters.aiohttp import AiohttpTransport, NavroAuthMiddleware
from navro_adapters.sandbox import EchoServer, Fault, Sandbox

from .support import (
    SECRET,
    UNREACHABLE_BASE,
    assert_repr_is_safe,
    behind_proxy,
    import_error_message,
    ping,
    recording_provider,
)


def navro_session(source: Any, **kwargs: Any) -> Any:
    return aiohttp.ClientSession(middlewares=(NavroAuthMiddleware(source, **kwargs),))


async def get(session: Any, url: str, **kwargs: Any) -> Any:
    async with session.request(kwargs.pop("method", "GET"), url, **kwargs) as response:
        body = await response.read()
        return response.status, body


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for ``condition`` (checked every 10 ms); fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


# -- construction, repr, import ----------------------------------------------------------------


def test_rejects_anything_but_credentials_or_provider() -> None:
    with pytest.raises(ConfigurationError):
        NavroAuthMiddleware("client-id:secret")  # type: ignore[arg-type]


def test_bad_extra_origin_is_a_configuration_error(sandbox: Sandbox) -> None:
    with pytest.raises(ConfigurationError):
        NavroAuthMiddleware(sandbox.credentials(), extra_origins=["ftp://example.com"])


async def test_repr_shows_neither_secret_nor_token(sandbox: Sandbox) -> None:
    middleware = NavroAuthMiddleware(sandbox.credentials())
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        assert (await get(session, ping(sandbox)))[0] == 200
    assert_repr_is_safe(repr(middleware), middleware.provider.token)


def test_import_error_names_the_extra() -> None:
    out = import_error_message("aiohttp", "aiohttp")
    assert "pip install 'navro-adapters[aiohttp]'" in out


# -- headers and scope ---------------------------------------------------------------------------


async def test_a_callers_own_header_to_another_origin_is_left_alone(
    sandbox: Sandbox, echo: EchoServer
) -> None:
    async with navro_session(sandbox.credentials()) as s:
        await get(s, f"{echo.base_url}/x", headers={"Authorization": "Bearer theirs"})
    assert echo.requests_seen()[0].headers["authorization"] == "Bearer theirs"


async def test_extra_origins_get_the_token(sandbox: Sandbox, echo: EchoServer) -> None:
    middleware = NavroAuthMiddleware(sandbox.credentials(), extra_origins=[echo.base_url])
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        await get(session, f"{echo.base_url}/x")
    token = middleware.provider.token
    assert token is not None
    assert echo.requests_seen()[0].headers["authorization"] == token.authorization


async def test_a_same_origin_redirect_hop_keeps_the_token(sandbox: Sandbox) -> None:
    # The middleware runs again for each hop, on a fresh request: it must put the token back.
    async with navro_session(sandbox.credentials()) as session:
        status, body = await get(session, f"{sandbox.base_url}/v1/redirect?to={ping(sandbox)}")
    assert status == 200 and json.loads(body)["ok"] is True
    hops = [r for r in sandbox.requests_seen() if r.kind == "api"]
    assert len(hops) == 2
    assert all(r.headers["authorization"].startswith("Bearer ") for r in hops)
    assert sandbox.stats().api_401s == 0


async def test_our_token_copied_to_another_origin_is_stripped(sandbox: Sandbox) -> None:
    middleware = NavroAuthMiddleware(sandbox.credentials())
    token = await middleware.provider.aget_token()
    seen: List[Any] = []

    async def handler(request: Any) -> Any:
        seen.append(request.headers.get("Authorization"))
        return _FakeResponse(200)

    async with aiohttp.ClientSession() as session:
        request = _request(session, "https://elsewhere.example/x")
        request.headers["Authorization"] = token.authorization
        await middleware(request, handler)
        request = _request(session, "https://elsewhere.example/x")
        request.headers["Authorization"] = "Bearer theirs"
        await middleware(request, handler)
    assert seen == [None, "Bearer theirs"]


# -- the 401 rule, driven with a fake handler ----------------------------------------------------


class _FakeResponse:
    def __init__(self, status: int) -> None:
        self.status = status
        self.released = False

    def release(self) -> None:
        self.released = True


def _request(session: Any, url: str, data: Any = None) -> Any:
    return aiohttp.ClientRequest(
        "POST" if data is not None else "GET",
        URL(url),
        data=data,
        session=session,
        loop=asyncio.get_running_loop(),
    )


class _CountingTransport:
    """An async transport issuing tok-1, tok-2, ... and counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        self.calls += 1
        body = {"access_token": f"tok-{self.calls}", "token_type": "Bearer", "expires_in": 300}
        return TransportResponse.build(200, {}, json.dumps(body).encode())


def _provider() -> tuple:
    transport = _CountingTransport()
    credentials = Credentials("id", SECRET, "acme", base_url="https://api.example.com")
    return TokenProvider(credentials, async_transport=transport), transport


async def test_a_401_is_released_before_the_resend_with_a_new_token() -> None:
    provider, transport = _provider()
    middleware = NavroAuthMiddleware(provider)
    sent: List[str] = []
    responses = [_FakeResponse(401), _FakeResponse(200)]

    async def handler(request: Any) -> Any:
        sent.append(request.headers["Authorization"])
        return responses[len(sent) - 1]

    async with aiohttp.ClientSession() as session:
        result = await middleware(_request(session, "https://api.example.com/v1/ping"), handler)
    assert result is responses[1]
    assert responses[0].released  # the first response's connection goes back to the pool
    assert sent == ["Bearer tok-1", "Bearer tok-2"]
    assert transport.calls == 2


async def test_a_late_401_does_not_drop_a_newer_token() -> None:
    provider, transport = _provider()
    middleware = NavroAuthMiddleware(provider)
    sent: List[str] = []

    async def handler(request: Any) -> Any:
        sent.append(request.headers["Authorization"])
        if len(sent) == 1:
            # While this request was in flight, another one had tok-1 refused and got tok-2.
            assert provider.invalidate(provider.token)
            await provider.aget_token()
            return _FakeResponse(401)  # the late 401, to tok-1
        return _FakeResponse(200)

    async with aiohttp.ClientSession() as session:
        result = await middleware(_request(session, "https://api.example.com/v1/ping"), handler)
    assert result.status == 200
    assert sent == ["Bearer tok-1", "Bearer tok-2"]  # resent with the newer token, as it was
    token = provider.token
    assert token is not None and token.access_token == "tok-2"
    assert transport.calls == 2 and provider.stats.invalidations == 1


async def test_a_one_shot_body_is_not_resent_but_its_token_is_dropped() -> None:
    provider, _ = _provider()
    middleware = NavroAuthMiddleware(provider)
    calls = 0

    async def chunks() -> AsyncIterator[bytes]:
        yield b"once"

    async def handler(request: Any) -> Any:
        nonlocal calls
        calls += 1
        return _FakeResponse(401)

    async with aiohttp.ClientSession() as session:
        request = _request(session, "https://api.example.com/v1/ping", data=chunks())
        result = await middleware(request, handler)
    assert calls == 1 and result.status == 401 and not result.released
    assert provider.token is None  # the rejected token was still invalidated


async def test_a_bytes_body_is_resent(sandbox: Sandbox) -> None:
    async with navro_session(sandbox.credentials()) as s:
        assert (await get(s, ping(sandbox)))[0] == 200
        sandbox.revoke_all_tokens()
        status, body = await get(s, ping(sandbox), method="POST", data=b'{"a": 1}')
    assert status == 200 and json.loads(body)["body_bytes"] == 8
    assert sandbox.stats().token_requests == 2


# -- the token transport --------------------------------------------------------------------------


async def test_transport_maps_connection_errors(sandbox: Sandbox) -> None:
    credentials = Credentials("id", SECRET, "acme", token_url="http://127.0.0.1:9/token")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TransportError) as caught:
            await AiohttpTransport(session)(build_token_request(credentials), timeout=5.0)
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)
    assert SECRET not in str(caught.value)


async def test_transport_maps_timeouts(sandbox: Sandbox) -> None:
    sandbox.enqueue_token_faults(Fault.hang())
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TokenTimeoutError):
            await AiohttpTransport(session)(build_token_request(sandbox.credentials()), timeout=0.3)


async def test_transport_on_a_closed_session_is_a_transport_error(sandbox: Sandbox) -> None:
    session = aiohttp.ClientSession()
    transport = AiohttpTransport(session)
    await session.close()
    with pytest.raises(TransportError):
        await transport(build_token_request(sandbox.credentials()), timeout=1.0)


async def test_transport_returns_error_statuses_and_never_redirects(
    sandbox: Sandbox, echo: EchoServer
) -> None:
    redirect = TokenRequest(
        "GET", f"{sandbox.base_url}/v1/redirect?to={echo.base_url}/stolen", {}, b""
    )
    async with aiohttp.ClientSession() as session:
        transport = AiohttpTransport(session)
        response = await transport(redirect, timeout=5.0)
        assert response.status_code == 302  # an answer, not followed
        sandbox.enqueue_token_faults(Fault.status(503))
        response = await transport(build_token_request(sandbox.credentials()), timeout=5.0)
        assert response.status_code == 503  # an error status is a response, not an exception
    assert echo.requests_seen() == []


# -- which session sends the token requests -------------------------------------------------------


async def test_token_requests_go_around_every_middleware(sandbox: Sandbox) -> None:
    urls: List[str] = []

    async def spy(request: Any, handler: Any) -> Any:
        urls.append(str(request.url))
        return await handler(request)

    middleware = NavroAuthMiddleware(sandbox.credentials())
    async with aiohttp.ClientSession(middlewares=(middleware, spy)) as session:
        assert (await get(session, ping(sandbox)))[0] == 200
    assert urls == [ping(sandbox)]
    assert sandbox.stats().token_requests == 1


async def test_token_requests_go_through_the_requests_own_session_and_its_trust_env(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", sandbox.base_url)  # the only way to the API (and tokens)
    middleware = NavroAuthMiddleware(behind_proxy(sandbox))
    async with aiohttp.ClientSession(trust_env=True, middlewares=(middleware,)) as session:
        assert (await get(session, f"{UNREACHABLE_BASE}/v1/ping"))[0] == 200
    assert sandbox.stats().token_requests == 1


async def test_one_middleware_on_two_sessions(sandbox: Sandbox) -> None:
    middleware = NavroAuthMiddleware(sandbox.credentials())
    async with aiohttp.ClientSession(middlewares=(middleware,)) as first:
        assert (await get(first, ping(sandbox)))[0] == 200
    middleware.provider.clear()
    async with aiohttp.ClientSession(middlewares=(middleware,)) as second:
        assert (await get(second, ping(sandbox)))[0] == 200  # fetched on the second session
    assert sandbox.stats().token_requests == 2


async def test_a_provider_with_its_own_transport_keeps_it(sandbox: Sandbox) -> None:
    provider, calls = recording_provider(sandbox)
    async with aiohttp.ClientSession(middlewares=(NavroAuthMiddleware(provider),)) as s:
        assert (await get(s, ping(sandbox)))[0] == 200
    assert calls == [sandbox.token_url]
    assert provider.get_token() is provider.token  # one token, usable from sync code too


def test_retry_policy_of_a_given_provider_is_respected(sandbox: Sandbox) -> None:
    provider = TokenProvider(sandbox.credentials(), retry_policy=RetryPolicy(max_attempts=1))
    sandbox.enqueue_token_faults(Fault.status(503))

    async def run() -> None:
        async with aiohttp.ClientSession(middlewares=(NavroAuthMiddleware(provider),)) as s:
            with pytest.raises(TokenEndpointError):
                await get(s, ping(sandbox))

    asyncio.run(run())
    assert sandbox.stats().token_requests == 1


async def test_a_session_with_a_default_auth_can_still_fetch_tokens(sandbox: Sandbox) -> None:
    # aiohttp refuses an Authorization header next to a session's auth=; the token request
    # passes its Basic credentials as auth=, which takes the place of the session's default.
    async with aiohttp.ClientSession(
        auth=aiohttp.BasicAuth("someone", "else"),
        middlewares=(NavroAuthMiddleware(sandbox.credentials()),),
    ) as session:
        assert (await get(session, ping(sandbox)))[0] == 200
    token_request = next(r for r in sandbox.requests_seen() if r.kind == "token")
    assert (
        token_request.headers["authorization"]
        == build_token_request(sandbox.credentials()).headers["Authorization"]
    )
    assert sandbox.stats().token_requests == 1


def test_token_session_must_be_a_client_session(sandbox: Sandbox) -> None:
    with pytest.raises(ConfigurationError) as caught:
        NavroAuthMiddleware(sandbox.credentials(), token_session="not a session")  # type: ignore[arg-type]
    assert caught.value.field == "token_session"


async def _hold_the_only_connection(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> asyncio.Future:
    """Start an API call that hangs, holding the session's one pooled connection."""
    sandbox.enqueue_api_faults(Fault.hang())
    before = sandbox.stats().api_requests
    held = asyncio.ensure_future(get(session, ping(sandbox)))
    await until(lambda: sandbox.stats().api_requests == before + 1)
    return held


async def _release(held: asyncio.Future) -> None:
    held.cancel()  # aiohttp closes the connection: the pool has room again
    with contextlib.suppress(asyncio.CancelledError):
        await held


async def test_token_session_keeps_token_requests_off_the_callers_pool(sandbox: Sandbox) -> None:
    async with aiohttp.ClientSession() as token_session:  # a pool of its own
        middleware = NavroAuthMiddleware(sandbox.credentials(), token_session=token_session)
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, middlewares=(middleware,)) as session:
            assert (await get(session, ping(sandbox)))[0] == 200
            held = await _hold_the_only_connection(sandbox, session)
            middleware.provider.invalidate(middleware.provider.token)  # the next call needs one
            queued = asyncio.ensure_future(get(session, ping(sandbox)))
            await until(lambda: sandbox.stats().token_requests == 2)  # while the pool is full
            assert not held.done(), "the connection was not held: the test proves nothing"
            await _release(held)
            assert (await queued)[0] == 200
    assert sandbox.stats().token_requests == 2


async def test_by_default_a_token_request_waits_for_the_callers_pool(sandbox: Sandbox) -> None:
    # The documented consequence of sending token requests on the request's own session: a
    # full pool delays them too (token_session= is the way out, see the test above).
    middleware = NavroAuthMiddleware(sandbox.credentials())
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, middlewares=(middleware,)) as session:
        assert (await get(session, ping(sandbox)))[0] == 200
        held = await _hold_the_only_connection(sandbox, session)
        middleware.provider.invalidate(middleware.provider.token)
        queued = asyncio.ensure_future(get(session, ping(sandbox)))
        await asyncio.sleep(0.3)
        assert sandbox.stats().token_requests == 1  # queued behind the held connection
        await _release(held)
        assert (await queued)[0] == 200
    assert sandbox.stats().token_requests == 2
