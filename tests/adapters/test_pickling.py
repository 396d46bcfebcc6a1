"""Pickling for worker processes: objects travel as their configuration, never their state.

A copy is rebuilt by its constructor: its own lock, an empty cache, zero stats, and it fetches
its own token from the real sandbox. The secret source travels as given; a cached access token,
a flight, a back-off or a counter never does. What cannot travel raises ConfigurationError.
"""

from __future__ import annotations

import inspect
import pickle
import ssl
from pathlib import Path
from typing import Any, Callable, Iterator, List

import aiohttp
import httpx
import pytest
import redis
import requests

from navro_adapters import (
    ConfigurationError,
    Credentials,
    FileStore,
    InvalidClientError,
    ProviderStats,
    RedisStore,
    RefreshPolicy,
    RetryPolicy,
    TokenProvider,
    UrllibTransport,
)
from navro_adapters import provider as provider_module
from navro_adapters.aiohttp import NavroAuthMiddleware
from navro_adapters.credentials import SecretFile
from navro_adapters.httpx import NavroAuth as HttpxAuth
from navro_adapters.requests import NavroAuth as RequestsAuth
from navro_adapters.sandbox import Sandbox

SECRET = "s3cr3t-value-never-logged"
PROTOCOLS = range(2, pickle.HIGHEST_PROTOCOL + 1)
# Names of the runtime state a pickle must not carry (class or attribute names).
RUNTIME_NAMES = (b"ProviderStats", b"Flight", b"_Backoff", b"_entry", b"_lock", b"_rejected")


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(client_secret=SECRET) as sb:
        yield sb


def ping(sandbox: Sandbox) -> str:
    return f"{sandbox.base_url}/v1/ping"


def read_secret() -> str:
    """A secret source that pickles (a module-level function travels by its name)."""
    return SECRET


def assert_carries_no_runtime_state(data: bytes, *access_tokens: str) -> None:
    for access_token in access_tokens:
        assert access_token.encode() not in data
    for name in RUNTIME_NAMES:
        assert name not in data, name


# -- credentials: the secret source travels as given -------------------------------------------


def test_a_string_secret_travels_in_the_pickle_as_basic_auth_does() -> None:
    creds = Credentials("client-id", SECRET, "acme")
    data = pickle.dumps(creds)
    assert SECRET.encode() in data
    assert pickle.loads(data) == creds


def test_a_secret_file_travels_as_its_path_and_is_read_where_it_is_used(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    creds = Credentials("client-id", SecretFile(secret_file), "acme")
    data = pickle.dumps(creds)
    assert SECRET.encode() not in data and str(secret_file).encode() in data
    secret_file.write_text("a-brand-new-secret\n")
    assert pickle.loads(data).client_secret == "a-brand-new-secret"


def test_a_secret_callable_travels_when_it_pickles() -> None:
    clone = pickle.loads(pickle.dumps(Credentials("client-id", read_secret, "acme")))
    assert clone.secret_changes and clone.client_secret == SECRET


# -- the provider: rebuilt by its constructor ---------------------------------------------------


def test_the_pickle_keeps_exactly_the_constructor_parameters() -> None:
    # A parameter added to __init__ must travel too (or be refused there, on purpose).
    provider = TokenProvider(Credentials("client-id", SECRET, "acme"))
    assert set(provider._arguments) == set(inspect.signature(TokenProvider).parameters)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_unpickled_provider_starts_empty_and_fetches_its_own_token(
    sandbox: Sandbox, protocol: int
) -> None:
    provider = TokenProvider(sandbox.credentials())
    token = provider.get_token()
    data = pickle.dumps(provider, protocol)
    assert_carries_no_runtime_state(data, token.access_token)

    clone = pickle.loads(data)
    assert clone.token is None and not clone.fetching
    assert clone.stats == ProviderStats()
    assert clone._lock is not provider._lock
    assert clone in provider_module._providers  # registered for the reset after a fork
    before = sandbox.stats().token_requests
    own = clone.get_token()
    assert own.access_token != token.access_token
    assert sandbox.stats().token_requests == before + 1
    assert clone.stats.token_requests == 1 and provider.token is token


def test_the_provider_options_travel_as_given() -> None:
    retry_policy = RetryPolicy(max_attempts=2, deadline=3.0)
    refresh_policy = RefreshPolicy()
    provider = TokenProvider(
        Credentials("client-id", SECRET, "acme"),
        retry_policy=retry_policy,
        refresh_policy=refresh_policy,
        store_clock_skew=2.0,
    )
    clone = pickle.loads(pickle.dumps(provider))
    assert clone.retry_policy == retry_policy and clone.refresh_policy == refresh_policy
    assert clone.store_wait == 3.0 and clone.store_clock_skew == 2.0
    assert clone.transport is None and clone.store is None


def test_a_back_off_does_not_travel(sandbox: Sandbox) -> None:
    good = sandbox.credentials()
    creds = Credentials(
        good.client_id,
        "not-the-secret",
        good.company,
        base_url=good.base_url,
        token_url=good.token_url,
    )
    provider = TokenProvider(creds)
    with pytest.raises(InvalidClientError):
        provider.get_token()
    before = sandbox.stats().token_requests
    with pytest.raises(InvalidClientError):
        provider.get_token()  # backing off: answered from memory
    assert sandbox.stats().token_requests == before
    clone = pickle.loads(pickle.dumps(provider))
    with pytest.raises(InvalidClientError):
        clone.get_token()  # no inherited back-off: it asks for itself
    assert sandbox.stats().token_requests == before + 1


def test_a_provider_with_a_ca_file_transport_pickles_and_uses_it() -> None:
    with Sandbox(client_secret=SECRET, tls=True) as tls_sandbox:
        assert tls_sandbox.ca_file is not None
        transport = UrllibTransport(ca_file=tls_sandbox.ca_file)
        provider = TokenProvider(tls_sandbox.credentials(), transport=transport)
        clone = pickle.loads(pickle.dumps(provider))
        assert isinstance(clone.transport, UrllibTransport)
        assert clone.transport is not transport
        clone.get_token()  # over TLS, trusting the CA file loaded again
        assert tls_sandbox.stats().tokens_issued == 1


# -- adapters: they pickle because their parts do -----------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_session_whose_auth_refers_back_to_it_pickles_as_one_cycle(
    sandbox: Sandbox, protocol: int
) -> None:
    session = requests.Session()
    session.auth = auth = RequestsAuth(sandbox.credentials(), session=session)
    assert session.get(ping(sandbox)).status_code == 200
    token = auth.provider.token
    assert token is not None
    data = pickle.dumps(session, protocol)
    assert_carries_no_runtime_state(data, token.access_token)

    clone = pickle.loads(data)
    clone_auth = clone.auth
    assert isinstance(clone_auth, RequestsAuth)
    assert clone_auth.rule.transport.session is clone  # token requests use the copied session
    assert clone_auth.provider is clone_auth.rule.provider and clone_auth.provider.token is None
    before = sandbox.stats().token_requests
    assert clone.get(ping(sandbox)).status_code == 200
    assert sandbox.stats().token_requests == before + 1
    assert clone_auth.provider.token != token


def test_requests_auth_alone_pickles_with_its_private_session(sandbox: Sandbox) -> None:
    auth = RequestsAuth(sandbox.credentials())
    assert requests.get(ping(sandbox), auth=auth).status_code == 200
    clone = pickle.loads(pickle.dumps(auth))
    before = sandbox.stats().token_requests
    assert requests.get(ping(sandbox), auth=clone).status_code == 200
    assert sandbox.stats().token_requests == before + 1


def test_httpx_auth_pickles_and_the_copy_fetches_its_own_token(sandbox: Sandbox) -> None:
    auth = HttpxAuth(sandbox.credentials())
    with httpx.Client(auth=auth) as client:
        assert client.get(ping(sandbox)).status_code == 200
    assert auth.provider.token is not None
    data = pickle.dumps(auth)
    assert_carries_no_runtime_state(data, auth.provider.token.access_token)
    clone = pickle.loads(data)
    assert type(clone) is HttpxAuth and clone.provider.token is None
    before = sandbox.stats().token_requests
    with httpx.Client(auth=clone) as client:
        assert client.get(ping(sandbox)).status_code == 200
    assert sandbox.stats().token_requests == before + 1


async def test_httpx_auth_copy_serves_an_async_client(sandbox: Sandbox) -> None:
    clone = pickle.loads(pickle.dumps(HttpxAuth(sandbox.credentials())))
    async with httpx.AsyncClient(auth=clone) as client:
        assert (await client.get(ping(sandbox))).status_code == 200
    assert clone.provider.stats.token_requests == 1


async def test_a_used_aiohttp_middleware_pickles_without_its_sessions(sandbox: Sandbox) -> None:
    middleware = NavroAuthMiddleware(sandbox.credentials())
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        async with session.get(ping(sandbox)) as response:
            assert response.status == 200
        # While the session is open: the remembered route (a weak reference to it) stays home.
        data = pickle.dumps(middleware)
    assert middleware.provider.token is not None
    assert_carries_no_runtime_state(data, middleware.provider.token.access_token)
    clone = pickle.loads(data)
    assert clone.provider.token is None
    before = sandbox.stats().token_requests
    async with aiohttp.ClientSession(middlewares=(clone,)) as session:
        async with session.get(ping(sandbox)) as response:
            assert response.status == 200
    assert sandbox.stats().token_requests == before + 1


# -- stores ---------------------------------------------------------------------------------


def test_a_file_store_pickles_as_its_path_and_holds_none_of_our_locks(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "tokens.json")
    assert store.try_lock("key", "parent", 30.0)
    clone = pickle.loads(pickle.dumps(store))
    assert clone.path == store.path
    assert not clone.try_lock("key", "worker", 30.0)  # the parent still holds it
    store.unlock("key", "parent")
    assert clone.try_lock("key", "worker", 30.0)
    clone.unlock("key", "worker")


def test_a_redis_store_from_a_url_pickles_as_its_url_and_prefix() -> None:
    store = RedisStore("redis://127.0.0.1:6390/0", key_prefix="fleet:")
    clone = pickle.loads(pickle.dumps(store))
    assert repr(clone) == repr(store) and clone.key_prefix == "fleet:"


def test_a_provider_with_a_file_store_pickles(tmp_path: Path) -> None:
    provider = TokenProvider(
        Credentials("client-id", SECRET, "acme"), store=FileStore(tmp_path / "tokens.json")
    )
    clone = pickle.loads(pickle.dumps(provider))
    assert isinstance(clone.store, FileStore) and clone.store.path == provider.store.path


# -- what cannot travel says so, typed ------------------------------------------------------------

CREDS = Credentials("client-id", SECRET, "acme")


def _urllib_with_context() -> UrllibTransport:
    return UrllibTransport(ssl_context=ssl.create_default_context())


UNPICKLABLE: List[Any] = [
    pytest.param(lambda: HttpxAuth(CREDS, client=httpx.Client()), "client", id="httpx-client"),
    pytest.param(
        lambda: HttpxAuth(CREDS, async_client=httpx.AsyncClient()),
        "async_client",
        id="httpx-async-client",
    ),
    pytest.param(_urllib_with_context, "ssl_context", id="urllib-ssl-context"),
    pytest.param(
        lambda: TokenProvider(CREDS, transport=_urllib_with_context()),
        "ssl_context",
        id="provider-with-ssl-context",
    ),
    pytest.param(lambda: RedisStore(redis.Redis()), "client_or_url", id="redis-client"),
    pytest.param(
        lambda: RequestsAuth(CREDS, store=RedisStore(redis.Redis())),
        "client_or_url",
        id="adapter-with-redis-client-store",
    ),
]


@pytest.mark.parametrize(("build", "field"), UNPICKLABLE)
def test_what_cannot_travel_raises_a_typed_error_naming_it(
    build: Callable[[], object], field: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        pickle.dumps(build())
    assert caught.value.field == field
    assert "cannot be pickled" in str(caught.value) and "worker process" in str(caught.value)
    assert "lock" not in str(caught.value)


async def test_an_aiohttp_token_session_cannot_travel() -> None:
    async with aiohttp.ClientSession() as token_session:
        middleware = NavroAuthMiddleware(CREDS, token_session=token_session)
        with pytest.raises(ConfigurationError, match="token_session=") as caught:
            pickle.dumps(middleware)
    assert caught.value.field == "token_session"


def test_a_provider_with_its_own_telemetry_providers_says_to_build_it_in_the_worker() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    for name, given in (("tracer_provider", TracerProvider()), ("meter_provider", MeterProvider())):
        provider = TokenProvider(CREDS, **{name: given})
        with pytest.raises(ConfigurationError) as caught:
            pickle.dumps(provider)
        assert caught.value.field == name
