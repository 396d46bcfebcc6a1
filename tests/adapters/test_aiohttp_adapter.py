"""Tests specific to the aiohttp middleware: translation, scoping, redirects, 401s, transport."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, List

import pytest

aiohttp = pytest.importorskip("aiohttp")

from yarl import URL

from navro_adapters import (
    ConfigurationError,
    Credentials,
    InvalidClientError,
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

from .support import SECRET, assert_repr_is_safe, import_error_message, ping, recording_provider


def navro_session(source: Any, **kwargs: Any) -> Any:
    return aiohttp.ClientSession(middlewares=(NavroAuthMiddleware(source, **kwargs),))


async def get(session: Any, url: str, **kwargs: Any) -> Any:
    async with session.request(kwargs.pop("method", "GET"), url, **kwargs) as response:
        body = await response.read()
        return response.status, body


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


async def test_sets_bearer_and_api_version_and_token_request_is_navros(sandbox: Sandbox) -> None:
    middleware = NavroAuthMiddleware(sandbox.credentials())
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        status, body = await get(session, ping(sandbox))
    assert status == 200 and json.loads(body)["api_version"] == "1"
    seen = sandbox.requests_seen()
    token_requests = [r for r in seen if r.kind == "token"]
    api_requests = [r for r in seen if r.kind == "api"]
    assert len(token_requests) == 1 and len(api_requests) == 1
    assert token_requests[0].headers["authorization"].startswith("Basic ")
    assert token_requests[0].headers["x-api-version"] == "1"
    token = middleware.provider.token
    assert token is not None
    assert api_requests[0].headers["authorization"] == token.authorization


async def test_caller_api_version_is_kept(sandbox: Sandbox) -> None:
    async with navro_session(sandbox.credentials()) as s:
        status, body = await get(s, ping(sandbox), headers={"x-api-version": "7"})
    assert status == 200 and json.loads(body)["api_version"] == "7"


async def test_other_origins_get_nothing(sandbox: Sandbox, echo: EchoServer) -> None:
    async with navro_session(sandbox.credentials()) as s:
        assert (await get(s, f"{echo.base_url}/elsewhere"))[0] == 200
    (seen,) = echo.requests_seen()
    assert "authorization" not in seen.headers and "x-api-version" not in seen.headers
    assert sandbox.stats().token_requests == 0  # no token is even fetched for another origin


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


async def test_scope_is_per_origin_not_per_host(sandbox: Sandbox) -> None:
    # Same host, another port: a different origin.
    other_port = URL(sandbox.base_url).with_port(1).human_repr()
    middleware = NavroAuthMiddleware(sandbox.credentials())
    assert middleware._decide_scope(URL(ping(sandbox))) is True
    assert middleware._decide_scope(URL(other_port + "/v1/ping")) is False
    assert middleware._decide_scope(URL("https://127.0.0.1/v1/ping")) is False


async def test_cross_origin_redirect_drops_the_token_same_origin_keeps_it(
    sandbox: Sandbox, echo: EchoServer
) -> None:
    middleware = NavroAuthMiddleware(sandbox.credentials())
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        status, _ = await get(session, f"{sandbox.base_url}/v1/redirect?to={echo.base_url}/land")
        assert status == 200
        status, body = await get(session, f"{sandbox.base_url}/v1/redirect?to={ping(sandbox)}")
    assert status == 200 and json.loads(body)["ok"] is True
    assert all("authorization" not in r.headers for r in echo.requests_seen())
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


async def test_token_request_goes_around_every_middleware(sandbox: Sandbox) -> None:
    urls: List[str] = []

    async def spy(request: Any, handler: Any) -> Any:
        urls.append(str(request.url))
        return await handler(request)

    middleware = NavroAuthMiddleware(sandbox.credentials())
    async with aiohttp.ClientSession(middlewares=(middleware, spy)) as session:
        assert (await get(session, ping(sandbox)))[0] == 200
    assert urls == [ping(sandbox)]
    assert sandbox.stats().token_requests == 1


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


async def test_401_invalidates_the_sent_token_and_resends_once() -> None:
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


async def test_always_401_is_sent_exactly_twice() -> None:
    provider, transport = _provider()
    middleware = NavroAuthMiddleware(provider)
    calls: List[Any] = []

    async def handler(request: Any) -> Any:
        calls.append(request)
        return _FakeResponse(401)

    async with aiohttp.ClientSession() as session:
        result = await middleware(_request(session, "https://api.example.com/v1/ping"), handler)
    assert result.status == 401 and not result.released
    assert len(calls) == 2 and transport.calls == 2


async def test_a_late_401_does_not_drop_a_newer_token() -> None:
    provider, transport = _provider()
    middleware = NavroAuthMiddleware(provider)
    old = await provider.aget_token()
    assert provider.invalidate(old)
    new = await provider.aget_token()

    async def handler(request: Any) -> Any:
        return _FakeResponse(401)

    async with aiohttp.ClientSession() as session:
        await middleware._resend_after_401(
            _request(session, "https://api.example.com/v1/ping"), handler, _FakeResponse(401), old
        )
    assert provider.token is new  # compare-and-invalidate left the newer token alone
    assert transport.calls == 2


async def test_one_shot_body_is_not_resent() -> None:
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


async def test_bytes_body_is_resent(sandbox: Sandbox) -> None:
    async with navro_session(sandbox.credentials()) as s:
        assert (await get(s, ping(sandbox)))[0] == 200
        sandbox.revoke_all_tokens()
        status, body = await get(s, ping(sandbox), method="POST", data=b'{"a": 1}')
    assert status == 200 and json.loads(body)["body_bytes"] == 8
    assert sandbox.stats().token_requests == 2


async def test_a_401_from_the_api_end_to_end(sandbox: Sandbox) -> None:
    sandbox.enqueue_api_faults(Fault.status(401))
    async with navro_session(sandbox.credentials()) as s:
        assert (await get(s, ping(sandbox)))[0] == 200
    assert sandbox.stats().api_requests == 2 and sandbox.stats().token_requests == 2


# -- token errors and the transport ----------------------------------------------------------------


async def test_secret_reset_raises_invalid_client_without_the_secret(sandbox: Sandbox) -> None:
    credentials = sandbox.credentials()
    sandbox.reset_secret("a-brand-new-secret")
    async with navro_session(credentials) as s:
        with pytest.raises(InvalidClientError) as caught:
            await get(s, ping(sandbox))
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


async def test_token_endpoint_error_is_typed(sandbox: Sandbox) -> None:
    sandbox.enqueue_token_faults(Fault.status(403))
    async with navro_session(sandbox.credentials()) as s:
        with pytest.raises(TokenEndpointError) as caught:
            await get(s, ping(sandbox))
    assert caught.value.status_code == 403


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


# -- sharing ---------------------------------------------------------------------------------------


async def test_shared_provider_uses_its_own_transport(sandbox: Sandbox) -> None:
    provider, calls = recording_provider(sandbox)
    async with aiohttp.ClientSession(middlewares=(NavroAuthMiddleware(provider),)) as s:
        assert (await get(s, ping(sandbox)))[0] == 200
    assert calls == [sandbox.token_url]
    assert provider.get_token() is provider.token  # one token, usable from sync code too


async def test_one_middleware_on_two_sessions(sandbox: Sandbox) -> None:
    middleware = NavroAuthMiddleware(sandbox.credentials())
    async with aiohttp.ClientSession(middlewares=(middleware,)) as first:
        assert (await get(first, ping(sandbox)))[0] == 200
    middleware.provider.clear()
    async with aiohttp.ClientSession(middlewares=(middleware,)) as second:
        assert (await get(second, ping(sandbox)))[0] == 200  # fetched on the second session
    assert sandbox.stats().token_requests == 2


async def test_many_tasks_one_token(sandbox: Sandbox) -> None:
    sandbox.set_token_latency(0.1)
    connector = aiohttp.TCPConnector(limit=200)
    middleware = NavroAuthMiddleware(sandbox.credentials(), extra_origins=())
    async with aiohttp.ClientSession(connector=connector, middlewares=(middleware,)) as s:
        statuses = await asyncio.gather(*(get(s, ping(sandbox)) for _ in range(300)))
    assert {status for status, _ in statuses} == {200}
    assert sandbox.stats().token_requests == 1


def test_retry_policy_of_a_given_provider_is_respected(sandbox: Sandbox) -> None:
    provider = TokenProvider(sandbox.credentials(), retry_policy=RetryPolicy(max_attempts=1))
    sandbox.enqueue_token_faults(Fault.status(503))

    async def run() -> None:
        async with aiohttp.ClientSession(middlewares=(NavroAuthMiddleware(provider),)) as s:
            with pytest.raises(TokenEndpointError):
                await get(s, ping(sandbox))

    asyncio.run(run())
    assert sandbox.stats().token_requests == 1


async def test_token_requests_never_wait_for_the_callers_connection_pool(sandbox: Sandbox) -> None:
    # Under load every pooled connection is busy with API requests; a token request queued
    # behind them would miss the refresh-ahead window. Hold the session's only connection with
    # a slow API call and check that a needed token is still fetched at once.
    middleware = NavroAuthMiddleware(sandbox.credentials())
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, middlewares=(middleware,)) as session:
        assert (await get(session, ping(sandbox)))[0] == 200
        sandbox.enqueue_api_faults(Fault.delay(1.5))
        slow = asyncio.ensure_future(get(session, ping(sandbox)))  # holds the one connection
        await asyncio.sleep(0.2)
        middleware.provider.invalidate(middleware.provider.token)  # the next request needs one
        queued = asyncio.ensure_future(get(session, ping(sandbox)))
        for _ in range(80):  # well before the slow call frees the connection
            if sandbox.stats().token_requests == 2:
                break
            await asyncio.sleep(0.01)
        assert sandbox.stats().token_requests == 2
        assert not slow.done(), "the connection was not held: the test proves nothing"
        assert [r[0] for r in await asyncio.gather(slow, queued)] == [200, 200]
