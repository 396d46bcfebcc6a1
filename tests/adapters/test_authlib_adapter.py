"""Tests specific to the Authlib integration: configuration, token flow, modes, scope, 401s."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Iterator, List

import pytest

pytest.importorskip("authlib")

from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client
from authlib.integrations.requests_client import OAuth2Session

from navro_adapters import (
    ConfigurationError,
    InvalidClientError,
    NavroAuthError,
    TokenEndpointError,
    TokenRequest,
    TokenTimeoutError,
    TransportError,
    build_token_request,
)
from navro_adapters.authlib import (
    async_oauth2_client,
    oauth2_client,
    oauth2_session,
    shared_provider,
)
from navro_adapters.sandbox import EchoServer, Fault, Sandbox

from .support import SECRET, assert_repr_is_safe, import_error_message, ping, recording_provider

SYNC_FACTORIES = [oauth2_session, oauth2_client]


def token_hook_calls(client: Any) -> List[Any]:
    """Record every token response Authlib's own fetch_token machinery receives."""
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


@pytest.mark.parametrize("reserved", ["client_secret", "scope", "token_endpoint", "token"])
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


# -- the token flow (default mode: Authlib's fetch_token, driven by our provider) --------------


@pytest.mark.parametrize("factory", SYNC_FACTORIES)
def test_first_request_fetches_through_authlib_and_syncs_the_token(
    sandbox: Sandbox, factory: Any
) -> None:
    with factory(sandbox.credentials()) as client:
        hook_calls = token_hook_calls(client)
        assert client.get(ping(sandbox)).status_code == 200
        assert client.get(ping(sandbox)).status_code == 200
        token = client.navro_provider.token
        assert len(hook_calls) == 1  # the one token request went through fetch_token
        assert client.token["access_token"] == token.access_token
        assert client.leeway == 60  # a fifth of 300 s, as the core's RefreshPolicy says
    assert sandbox.stats().token_requests == 1
    token_request = next(r for r in sandbox.requests_seen() if r.kind == "token")
    assert token_request.headers["authorization"].startswith("Basic ")
    assert token_request.headers["x-api-version"] == "1"
    assert b"grant_type=client_credentials" in token_request.body
    assert b"scope=openid" in token_request.body


def test_async_first_request_fetches_through_authlib(sandbox: Sandbox) -> None:
    async def check() -> None:
        async with async_oauth2_client(sandbox.credentials()) as client:
            hook_calls = token_hook_calls(client)
            assert (await client.get(ping(sandbox))).status_code == 200
            assert len(hook_calls) == 1
            assert client.token["access_token"] == client.navro_provider.token.access_token

    run(check())
    assert sandbox.stats().token_requests == 1


@pytest.mark.parametrize("factory", SYNC_FACTORIES)
def test_ensure_active_token_fetches(sandbox: Sandbox, factory: Any) -> None:
    with factory(sandbox.credentials()) as client:
        assert client.ensure_active_token() is True
        assert client.token["access_token"]
    assert sandbox.stats().token_requests == 1


def test_short_lived_token_is_not_refetched_on_every_request(sandbox: Sandbox) -> None:
    sandbox.set_token_ttl(30.0)  # Authlib's fixed 60 s leeway would call it expired at once
    with oauth2_session(sandbox.credentials()) as client:
        for _ in range(5):
            assert client.get(ping(sandbox)).status_code == 200
    assert sandbox.stats().token_requests == 1


def test_threads_on_one_session_share_one_fetch(sandbox: Sandbox) -> None:
    sandbox.set_token_latency(0.2)
    with oauth2_session(sandbox.credentials()) as client:
        statuses: List[int] = []
        threads = [
            threading.Thread(target=lambda: statuses.append(client.get(ping(sandbox)).status_code))
            for _ in range(20)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert statuses == [200] * 20
    assert sandbox.stats().token_requests == 1


# -- modes --------------------------------------------------------------------------------------


def test_shared_mode_gives_many_clients_one_token(sandbox: Sandbox) -> None:
    credentials = sandbox.credentials()
    first = oauth2_session(credentials, shared=True)
    second = oauth2_client(credentials, shared=True)
    try:
        assert first.navro_provider is second.navro_provider is shared_provider(credentials)
        hook_calls = token_hook_calls(first)
        assert first.get(ping(sandbox)).status_code == 200
        assert second.get(ping(sandbox)).status_code == 200
        assert len(hook_calls) == 1  # fetched by the client that needed it, with fetch_token
        assert second.token["access_token"] == first.token["access_token"]
    finally:
        first.close()
        second.close()
    assert sandbox.stats().token_requests == 1


def test_unshared_clients_each_fetch(sandbox: Sandbox) -> None:
    with (
        oauth2_session(sandbox.credentials()) as first,
        oauth2_session(sandbox.credentials()) as second,
    ):
        assert first.navro_provider is not second.navro_provider
        first.get(ping(sandbox))
        second.get(ping(sandbox))
    assert sandbox.stats().token_requests == 2


def test_given_provider_uses_its_own_transport(sandbox: Sandbox) -> None:
    provider, calls = recording_provider(sandbox)
    with oauth2_session(provider) as session, oauth2_client(provider) as client:
        hook_calls = token_hook_calls(session)
        assert session.get(ping(sandbox)).status_code == 200
        assert client.get(ping(sandbox)).status_code == 200
        assert session.navro_provider is provider and client.navro_provider is provider
    assert calls == [sandbox.token_url] and hook_calls == []
    assert sandbox.stats().token_requests == 1


# -- scope and what goes around the auth layer ----------------------------------------------


@pytest.mark.parametrize("factory", SYNC_FACTORIES)
def test_other_origins_get_nothing_extra_origins_get_the_token(
    sandbox: Sandbox, echo: EchoServer, factory: Any
) -> None:
    with factory(sandbox.credentials()) as client:
        assert client.get(f"{echo.base_url}/x").status_code == 200
    assert sandbox.stats().token_requests == 0
    with factory(sandbox.credentials(), extra_origins=[echo.base_url]) as client:
        client.get(f"{echo.base_url}/y")
        token = client.navro_provider.token
    first, second = echo.requests_seen()
    assert "authorization" not in first.headers and "x-api-version" not in first.headers
    assert second.headers["authorization"] == token.authorization


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


@pytest.mark.parametrize("factory", SYNC_FACTORIES)
def test_caller_api_version_is_kept(sandbox: Sandbox, factory: Any) -> None:
    with factory(sandbox.credentials()) as client:
        response = client.get(ping(sandbox), headers={"X-API-Version": "3"})
    assert response.json()["api_version"] == "3"


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
    import requests

    with oauth2_session(sandbox.credentials()) as session:
        token = session.navro_provider.get_token()
        session.ensure_active_token()
        hop = requests.Request("GET", "https://127.0.0.1/next").prepare()
        hop.headers["Authorization"] = token.authorization
        previous = requests.Response()
        previous.request = requests.Request("GET", "http://127.0.0.1/v1/x").prepare()
        session.rebuild_auth(hop, previous)
        assert "Authorization" not in hop.headers
        hop.headers["Authorization"] = "Bearer theirs"
        session.rebuild_auth(hop, previous)
        assert hop.headers["Authorization"] == "Bearer theirs"


# -- 401s -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", SYNC_FACTORIES)
def test_one_api_401_is_resent_once_with_a_new_token(sandbox: Sandbox, factory: Any) -> None:
    with factory(sandbox.credentials()) as client:
        assert client.get(ping(sandbox)).status_code == 200
        first = client.token["access_token"]
        sandbox.enqueue_api_faults(Fault.status(401))
        response = client.post(ping(sandbox), json={"a": 1})
        assert response.status_code == 200
        assert client.token["access_token"] != first  # the client's token followed
    assert sandbox.stats().token_requests == 2 and sandbox.stats().api_requests == 3


def test_async_401_is_resent_once(sandbox: Sandbox) -> None:
    async def check() -> None:
        async with async_oauth2_client(sandbox.credentials()) as client:
            sandbox.set_api_always_401(True)
            assert (await client.get(ping(sandbox))).status_code == 401

    run(check())
    assert sandbox.stats().api_requests == 2 and sandbox.stats().token_requests == 2


def test_requests_generator_body_is_not_resent(sandbox: Sandbox) -> None:
    def body() -> Iterator[bytes]:
        yield b"once"

    with oauth2_session(sandbox.credentials()) as session:
        session.get(ping(sandbox))
        sandbox.revoke_all_tokens()
        assert session.post(ping(sandbox), data=body()).status_code == 401
        assert session.get(ping(sandbox)).status_code == 200  # the bad token was dropped
    assert sandbox.stats().token_requests == 2


def test_async_generator_body_is_not_resent(sandbox: Sandbox) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"once"

    async def check() -> None:
        async with async_oauth2_client(sandbox.credentials()) as client:
            await client.get(ping(sandbox))
            sandbox.revoke_all_tokens()
            assert (await client.post(ping(sandbox), content=body())).status_code == 401

    run(check())
    assert sandbox.stats().api_requests == 2


# -- token endpoint errors ------------------------------------------------------------------------


@pytest.mark.parametrize("factory", SYNC_FACTORIES)
def test_secret_reset_raises_invalid_client(sandbox: Sandbox, factory: Any) -> None:
    credentials = sandbox.credentials()
    sandbox.reset_secret("a-brand-new-secret")
    with factory(credentials) as client, pytest.raises(InvalidClientError) as caught:
        client.get(ping(sandbox))
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


def test_async_secret_reset_raises_invalid_client(sandbox: Sandbox) -> None:
    credentials = sandbox.credentials()
    sandbox.reset_secret("a-brand-new-secret")

    async def check() -> None:
        async with async_oauth2_client(credentials) as client:
            with pytest.raises(InvalidClientError):
                await client.get(ping(sandbox))

    run(check())


@pytest.mark.parametrize(
    "fault", [Fault.status(400, body={"error": "invalid_scope"}), Fault.html(), Fault.json({})]
)
def test_token_endpoint_answers_become_core_errors(sandbox: Sandbox, fault: Fault) -> None:
    sandbox.enqueue_token_faults(fault)
    with oauth2_session(sandbox.credentials()) as session:
        with pytest.raises(NavroAuthError) as caught:
            session.get(ping(sandbox))
    if fault.status_code == 400:
        assert isinstance(caught.value, TokenEndpointError)
        assert "invalid_scope" in str(caught.value)


@pytest.mark.parametrize("factory", SYNC_FACTORIES)
def test_fetch_maps_connection_errors_and_timeouts(sandbox: Sandbox, factory: Any) -> None:
    with factory(sandbox.credentials()) as client:
        unreachable = TokenRequest("POST", "http://127.0.0.1:9/token", {}, b"")
        with pytest.raises(TransportError) as caught:
            client._navro_fetch(unreachable, timeout=5.0)
        assert caught.value.__cause__ is not None
        sandbox.enqueue_token_faults(Fault.hang())
        with pytest.raises(TokenTimeoutError):
            client._navro_fetch(build_token_request(sandbox.credentials()), timeout=0.3)


def test_async_fetch_maps_timeouts(sandbox: Sandbox) -> None:
    async def check() -> None:
        async with async_oauth2_client(sandbox.credentials()) as client:
            sandbox.enqueue_token_faults(Fault.hang())
            with pytest.raises(TokenTimeoutError):
                await client._navro_fetch(build_token_request(sandbox.credentials()), timeout=0.3)

    run(check())


def test_fetch_never_follows_a_redirect(sandbox: Sandbox, echo: EchoServer) -> None:
    with oauth2_session(sandbox.credentials()) as session:
        redirect = TokenRequest(
            "POST", f"{sandbox.base_url}/v1/redirect?to={echo.base_url}/stolen", {}, b""
        )
        response = session._navro_fetch(redirect, timeout=5.0)
    assert response.status_code != 200
    assert echo.requests_seen() == []


def test_401_storm_on_a_full_pool_refetches_without_deadlock(sandbox: Sandbox) -> None:
    # The 401s hold every pooled connection while the client fetches a token on itself: each
    # 401 must release its connection first, or the token request waits for the pool forever.
    from concurrent.futures import ThreadPoolExecutor

    from navro_adapters.authlib import _httpx_module

    limits = _httpx_module().Limits(max_connections=2, max_keepalive_connections=2)
    with oauth2_client(sandbox.credentials(), limits=limits, timeout=5.0) as client:
        assert client.get(ping(sandbox)).status_code == 200
        sandbox.set_token_latency(0.2)
        sandbox.revoke_all_tokens()
        with ThreadPoolExecutor(max_workers=6) as pool:
            statuses = list(pool.map(lambda _: client.get(ping(sandbox)).status_code, range(6)))
    assert statuses == [200] * 6
    assert sandbox.stats().token_requests == 2


def test_async_401_storm_on_a_full_pool_refetches_without_deadlock(sandbox: Sandbox) -> None:
    from navro_adapters.authlib import _httpx_module

    limits = _httpx_module().Limits(max_connections=2, max_keepalive_connections=2)

    async def check() -> List[int]:
        async with async_oauth2_client(sandbox.credentials(), limits=limits, timeout=5.0) as client:
            assert (await client.get(ping(sandbox))).status_code == 200
            sandbox.set_token_latency(0.2)
            sandbox.revoke_all_tokens()
            responses = await asyncio.gather(*[client.get(ping(sandbox)) for _ in range(6)])
            return [r.status_code for r in responses]

    assert run(check()) == [200] * 6
    assert sandbox.stats().token_requests == 2
