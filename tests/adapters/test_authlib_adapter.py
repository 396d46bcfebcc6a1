"""Tests specific to the Authlib integration; what every adapter does is in tests/compliance.

Here: how the factories configure Authlib for Navro (metadata, reserved arguments), that token
requests go through the client itself (its mounts and transport) and not through Authlib's
``fetch_token``, ``ensure_active_token``, the modes (own provider, ``shared=True``, a given
provider), what goes around our auth (``withhold_token``, an explicit ``auth=``), redirects,
and how token requests on the client's own pool behave when 401s fill it.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
from typing import Any, List, Tuple

import pytest

pytest.importorskip("authlib")

import requests.adapters
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client
from authlib.integrations.requests_client import OAuth2Session

from navro_adapters import (
    ConfigurationError,
    Credentials,
    RetryPolicy,
    TokenEndpointError,
    TokenProvider,
    TokenTimeoutError,
    TransportError,
)
from navro_adapters.authlib import (
    async_oauth2_client,
    oauth2_client,
    oauth2_session,
    shared_provider,
)
from navro_adapters.sandbox import EchoServer, Fault, Sandbox

from .support import assert_repr_is_safe, import_error_message, ping, recording_provider

SYNC_FACTORIES = [oauth2_session, oauth2_client]


def _authlib_httpx() -> Any:
    """The httpx flavour Authlib's clients are built on (httpx2 for recent Authlib releases)."""
    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if issubclass(OAuth2Client, module.Client):
            return module
    raise AssertionError("Authlib's OAuth2Client is not an httpx or httpx2 Client")


httpx = _authlib_httpx()


class Counting(requests.adapters.HTTPAdapter):
    """A real requests connection adapter that records the URL of everything sent through it."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: List[str] = []

    def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.urls.append(request.url)
        return super().send(request, **kwargs)


class CountingTransport(httpx.HTTPTransport):  # type: ignore[misc, name-defined]
    """A real httpx transport that records the URL of everything sent through it."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: List[str] = []

    def handle_request(self, request: Any) -> Any:
        self.urls.append(str(request.url))
        return super().handle_request(request)


class AsyncCountingTransport(httpx.AsyncHTTPTransport):  # type: ignore[misc, name-defined]
    def __init__(self) -> None:
        super().__init__()
        self.urls: List[str] = []

    async def handle_async_request(self, request: Any) -> Any:
        self.urls.append(str(request.url))
        return await super().handle_async_request(request)


def counted(factory: Any, source: Any, **kwargs: Any) -> Tuple[Any, List[str]]:
    """``factory(source)`` on a connection adapter or transport that records every URL sent."""
    if factory is oauth2_session:
        client = factory(source, **kwargs)
        adapter = Counting()
        client.mount("http://", adapter)
        return client, adapter.urls
    transport = CountingTransport()
    return factory(source, transport=transport, **kwargs), transport.urls


def authlib_token_responses(client: Any) -> List[Any]:
    """Record every token response Authlib's own fetch_token machinery would receive."""
    calls: List[Any] = []

    def hook(response: Any) -> Any:
        calls.append(response)
        return response

    client.register_compliance_hook("access_token_response", hook)
    return calls


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- configuration, repr, import -------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "authlib_class"),
    [
        (oauth2_session, OAuth2Session),
        (oauth2_client, OAuth2Client),
    ],
)
def test_sync_factories_configure_authlib_for_navro(
    sandbox: Sandbox, factory: Any, authlib_class: Any
) -> None:
    credentials = sandbox.credentials()
    with factory(credentials) as client:
        assert isinstance(client, authlib_class)
        assert client.metadata["token_endpoint"] == credentials.token_url
        assert client.metadata["grant_type"] == "client_credentials"
        assert client.token_endpoint_auth_method == "client_secret_basic"
        assert client.scope == "openid"


def test_async_factory_configures_authlib_for_navro(sandbox: Sandbox) -> None:
    async def check() -> None:
        async with async_oauth2_client(sandbox.credentials()) as client:
            assert isinstance(client, AsyncOAuth2Client)
            assert client.metadata["token_endpoint"] == sandbox.token_url

    run(check())


@pytest.mark.parametrize(
    "reserved", ["client_secret", "scope", "token_endpoint", "token", "grant_type", "update_token"]
)
def test_reserved_arguments_are_refused(sandbox: Sandbox, reserved: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        oauth2_session(sandbox.credentials(), **{reserved: "x"})
    assert caught.value.field == reserved


def test_rejects_anything_but_credentials_or_provider() -> None:
    with pytest.raises(ConfigurationError):
        oauth2_session("id:secret")  # type: ignore[arg-type]


@pytest.mark.parametrize("factory", SYNC_FACTORIES)
def test_repr_shows_neither_secret_nor_token(sandbox: Sandbox, factory: Any) -> None:
    with factory(sandbox.credentials()) as client:
        assert client.get(ping(sandbox)).status_code == 200
        assert_repr_is_safe(repr(client), client.navro_provider.token)


def test_import_error_names_the_extra() -> None:
    out = import_error_message("authlib", "authlib")
    assert "pip install 'navro-adapters[authlib]'" in out


# -- the token flow: our provider, through the client itself ----------------------------------


@pytest.mark.parametrize("shared", [False, True], ids=["credentials", "provider-without-transport"])
@pytest.mark.parametrize("factory", SYNC_FACTORIES)
def test_token_requests_go_through_the_client_itself_not_fetch_token(
    sandbox: Sandbox, factory: Any, shared: bool
) -> None:
    source = TokenProvider(sandbox.credentials()) if shared else sandbox.credentials()
    client, sent = counted(factory, source)
    with client:
        authlib_fetches = authlib_token_responses(client)
        assert client.get(ping(sandbox)).status_code == 200
        assert client.get(ping(sandbox)).status_code == 200
        assert sent == [sandbox.token_url, ping(sandbox), ping(sandbox)]
        assert authlib_fetches == []
        assert client.token is None  # set by ensure_active_token() only
    token_request = next(r for r in sandbox.requests_seen() if r.kind == "token")
    assert token_request.headers["authorization"].startswith("Basic ")
    assert token_request.headers["x-api-version"] == "1"
    assert b"grant_type=client_credentials" in token_request.body
    assert b"scope=openid" in token_request.body


def test_async_token_requests_go_through_the_client_itself(sandbox: Sandbox) -> None:
    transport = AsyncCountingTransport()

    async def check() -> None:
        async with async_oauth2_client(sandbox.credentials(), transport=transport) as client:
            authlib_fetches = authlib_token_responses(client)
            assert (await client.get(ping(sandbox))).status_code == 200
            assert authlib_fetches == []

    run(check())
    assert transport.urls == [sandbox.token_url, ping(sandbox)]


@pytest.mark.parametrize("factory", SYNC_FACTORIES)
def test_ensure_active_token_fetches_and_sets_client_token(sandbox: Sandbox, factory: Any) -> None:
    with factory(sandbox.credentials()) as client:
        assert client.ensure_active_token() is True
        token = client.navro_provider.token
        assert token is not None
        assert client.token["access_token"] == token.access_token
        assert client.ensure_active_token() is True  # still fresh: no second token request
        assert client.get(ping(sandbox)).status_code == 200
    assert sandbox.stats().token_requests == 1


def test_async_ensure_active_token_fetches_and_sets_client_token(sandbox: Sandbox) -> None:
    async def check() -> None:
        async with async_oauth2_client(sandbox.credentials()) as client:
            assert await client.ensure_active_token() is None
            token = client.navro_provider.token
            assert token is not None
            assert client.token["access_token"] == token.access_token

    run(check())
    assert sandbox.stats().token_requests == 1


def test_short_lived_token_is_not_refetched_on_every_request(sandbox: Sandbox) -> None:
    sandbox.set_token_ttl(30.0)  # Authlib's fixed 60 s leeway would call it expired at once
    with oauth2_session(sandbox.credentials()) as client:
        for _ in range(5):
            assert client.get(ping(sandbox)).status_code == 200
    assert sandbox.stats().token_requests == 1


# -- modes --------------------------------------------------------------------------------------


def test_shared_mode_gives_many_clients_one_token_fetched_by_the_one_that_needs_it(
    sandbox: Sandbox,
) -> None:
    credentials = sandbox.credentials()
    first, first_sent = counted(oauth2_session, credentials, shared=True)
    second, second_sent = counted(oauth2_client, credentials, shared=True)
    try:
        provider = shared_provider(credentials)
        assert first.navro_provider is second.navro_provider is provider
        assert provider.transport is None and provider.async_transport is None
        assert first.get(ping(sandbox)).status_code == 200
        assert second.get(ping(sandbox)).status_code == 200
        assert first_sent == [sandbox.token_url, ping(sandbox)]
        assert second_sent == [ping(sandbox)]
    finally:
        first.close()
        second.close()
    assert sandbox.stats().token_requests == 1


def test_shared_mode_takes_provider_options(sandbox: Sandbox) -> None:
    # Once refused with "set it on the TokenProvider you pass": the options pick the provider.
    credentials = sandbox.credentials()
    policy = RetryPolicy(max_attempts=1)
    with (
        oauth2_session(credentials, shared=True, retry_policy=policy) as first,
        oauth2_client(credentials, shared=True, retry_policy=policy) as second,
        oauth2_session(credentials, shared=True) as other,
    ):
        provider = shared_provider(credentials, retry_policy=policy)
        assert first.navro_provider is second.navro_provider is provider
        assert other.navro_provider is not provider  # other options, another provider
        assert provider.retry_policy.max_attempts == 1
        sandbox.enqueue_token_faults(Fault.status(503))
        with pytest.raises(TokenEndpointError):
            first.get(ping(sandbox))
        assert sandbox.stats().token_requests == 1  # one attempt: the policy was applied
        with pytest.raises(TokenEndpointError):  # the shared provider's failure back-off
            second.get(ping(sandbox))
        assert sandbox.stats().token_requests == 1
        provider.clear()  # ends the back-off
        assert second.get(ping(sandbox)).status_code == 200
        assert first.get(ping(sandbox)).status_code == 200
    assert sandbox.stats().token_requests == 2


def test_unshared_clients_each_fetch(sandbox: Sandbox) -> None:
    with (
        oauth2_session(sandbox.credentials()) as first,
        oauth2_session(sandbox.credentials()) as second,
    ):
        assert first.navro_provider is not second.navro_provider
        first.get(ping(sandbox))
        second.get(ping(sandbox))
    assert sandbox.stats().token_requests == 2


def test_a_given_provider_with_its_own_transport_keeps_it(sandbox: Sandbox) -> None:
    provider, calls = recording_provider(sandbox)
    session, session_sent = counted(oauth2_session, provider)
    client, client_sent = counted(oauth2_client, provider)
    with session, client:
        authlib_fetches = authlib_token_responses(session)
        assert session.get(ping(sandbox)).status_code == 200
        assert client.get(ping(sandbox)).status_code == 200
        assert session.navro_provider is provider and client.navro_provider is provider
    assert session_sent == [ping(sandbox)] and client_sent == [ping(sandbox)]
    assert calls == [sandbox.token_url] and authlib_fetches == []
    assert sandbox.stats().token_requests == 1


# -- scope and what goes around the auth layer ----------------------------------------------


@pytest.mark.parametrize("factory", SYNC_FACTORIES)
def test_extra_origins_get_the_token(sandbox: Sandbox, echo: EchoServer, factory: Any) -> None:
    with factory(sandbox.credentials(), extra_origins=[echo.base_url]) as client:
        assert client.get(f"{echo.base_url}/y").status_code == 200
        token = client.navro_provider.token
    assert token is not None
    (seen,) = echo.requests_seen()
    assert seen.headers["authorization"] == token.authorization


@pytest.mark.parametrize("factory", SYNC_FACTORIES)
def test_withhold_token_and_explicit_auth_pass_through(sandbox: Sandbox, factory: Any) -> None:
    with factory(sandbox.credentials()) as client:
        # httpx's get() has a fixed signature: Authlib's withhold_token goes through request().
        assert client.request("GET", ping(sandbox), withhold_token=True).status_code == 401
        assert client.request("GET", ping(sandbox), auth=("user", "pass")).status_code == 401
    assert sandbox.stats().token_requests == 0
    api = [r for r in sandbox.requests_seen() if r.kind == "api"]
    assert "authorization" not in api[0].headers
    assert api[1].headers["authorization"].startswith("Basic ")


def test_httpx_stream_attaches_the_token(sandbox: Sandbox) -> None:
    with oauth2_client(sandbox.credentials()) as client, client.stream("GET", ping(sandbox)) as r:
        assert r.status_code == 200

    async def check() -> None:
        async with (
            async_oauth2_client(sandbox.credentials()) as client,
            client.stream("GET", ping(sandbox)) as response,
        ):
            assert response.status_code == 200

    run(check())


def test_requests_redirect_to_https_on_the_same_host_drops_the_token(sandbox: Sandbox) -> None:
    # requests keeps Authorization on an http -> https hop; our token must not follow.
    with oauth2_session(sandbox.credentials()) as session:
        session.ensure_active_token()
        token = session.navro_provider.token
        assert token is not None
        hop = requests.Request("GET", "https://127.0.0.1/next").prepare()
        hop.headers["Authorization"] = token.authorization
        previous = requests.Response()
        previous.request = requests.Request("GET", "http://127.0.0.1/v1/x").prepare()
        session.rebuild_auth(hop, previous)
        assert "Authorization" not in hop.headers
        hop.headers["Authorization"] = "Bearer theirs"
        session.rebuild_auth(hop, previous)
        assert hop.headers["Authorization"] == "Bearer theirs"


# -- token request failures, on the client's own transport --------------------------------------


ONE_SHORT_ATTEMPT = RetryPolicy(max_attempts=1, attempt_timeout=0.3)


def unreachable_token_endpoint(sandbox: Sandbox) -> Credentials:
    return Credentials(
        sandbox.client_id,
        sandbox.client_secret,
        sandbox.company,
        base_url=sandbox.base_url,
        token_url="http://127.0.0.1:9/token",  # nothing listens on the discard port
    )


@pytest.mark.parametrize("factory", SYNC_FACTORIES)
def test_token_request_failures_are_typed_errors(sandbox: Sandbox, factory: Any) -> None:
    with factory(unreachable_token_endpoint(sandbox), retry_policy=ONE_SHORT_ATTEMPT) as client:
        with pytest.raises(TransportError) as caught:
            client.get(ping(sandbox))
        assert caught.value.__cause__ is not None
    with factory(sandbox.credentials(), retry_policy=ONE_SHORT_ATTEMPT) as client:
        sandbox.enqueue_token_faults(Fault.hang())
        with pytest.raises(TokenTimeoutError):
            client.get(ping(sandbox))
    assert sandbox.stats().api_requests == 0


def test_async_token_request_failures_are_typed_errors(sandbox: Sandbox) -> None:
    async def check() -> None:
        credentials = unreachable_token_endpoint(sandbox)
        async with async_oauth2_client(credentials, retry_policy=ONE_SHORT_ATTEMPT) as client:
            with pytest.raises(TransportError):
                await client.get(ping(sandbox))
        credentials = sandbox.credentials()
        async with async_oauth2_client(credentials, retry_policy=ONE_SHORT_ATTEMPT) as client:
            sandbox.enqueue_token_faults(Fault.hang())
            with pytest.raises(TokenTimeoutError):
                await client.get(ping(sandbox))

    run(check())
    assert sandbox.stats().api_requests == 0


@pytest.mark.parametrize("factory", SYNC_FACTORIES)
def test_a_redirecting_token_endpoint_is_never_followed(
    sandbox: Sandbox, echo: EchoServer, factory: Any
) -> None:
    # requests follows redirects by default; the httpx client is told to.
    options: Any = {} if factory is oauth2_session else {"follow_redirects": True}
    sandbox.enqueue_token_faults(Fault.status(302, headers={"Location": f"{echo.base_url}/x"}))
    with factory(sandbox.credentials(), retry_policy=ONE_SHORT_ATTEMPT, **options) as client:
        with pytest.raises(TokenEndpointError) as caught:
            client.get(ping(sandbox))
    assert caught.value.status_code == 302
    assert echo.requests_seen() == []  # the client secret never left for the Location


# -- 401s on a full pool ---------------------------------------------------------------------------


# httpcore before 1.0 (httpx before 0.25.1, down to our floor 0.23) races in its sync pool: a
# thread's expiry sweep can close a connection another thread has just started a request on
# (read state IDLE, then the response makes the socket readable). The request then fails with
# ReadError (EBADF) or hangs to ReadTimeout; measured 5 of 40 runs on httpcore 0.15.0, 1 of 30
# on 0.16.3, 0 of 25 on 1.0. The deadlock this test guards against would still fail it.
def _httpcore_pool_races() -> bool:
    if httpx.__name__ != "httpx":  # httpx2 brings its own pool
        return False
    return int(importlib.metadata.version("httpcore").split(".")[0]) < 1


_HTTPCORE_POOL_RACE = _httpcore_pool_races()


@pytest.mark.xfail(
    _HTTPCORE_POOL_RACE,
    reason="httpcore<1.0's sync pool closes a connection in use by another thread",
    raises=(httpx.ReadError, httpx.ReadTimeout),
    strict=False,
)
def test_401_storm_on_a_full_pool_refetches_without_deadlock(sandbox: Sandbox) -> None:
    # The 401s hold every pooled connection while the client fetches a token on itself: each
    # 401 must release its connection first, or the token request waits for the pool forever.
    from concurrent.futures import ThreadPoolExecutor

    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    with oauth2_client(sandbox.credentials(), limits=limits, timeout=5.0) as client:
        assert client.get(ping(sandbox)).status_code == 200
        sandbox.set_token_latency(0.2)
        sandbox.revoke_all_tokens()
        with ThreadPoolExecutor(max_workers=6) as pool:
            statuses = list(pool.map(lambda _: client.get(ping(sandbox)).status_code, range(6)))
    assert statuses == [200] * 6
    assert sandbox.stats().token_requests == 2


def test_async_401_storm_on_a_full_pool_refetches_without_deadlock(sandbox: Sandbox) -> None:
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)

    async def check() -> List[int]:
        async with async_oauth2_client(sandbox.credentials(), limits=limits, timeout=5.0) as client:
            assert (await client.get(ping(sandbox))).status_code == 200
            sandbox.set_token_latency(0.2)
            sandbox.revoke_all_tokens()
            responses = await asyncio.gather(*[client.get(ping(sandbox)) for _ in range(6)])
            return [r.status_code for r in responses]

    assert run(check()) == [200] * 6
    assert sandbox.stats().token_requests == 2
