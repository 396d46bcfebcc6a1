"""Tests specific to the niquests adapter; what every adapter does is in tests/compliance.

Here: which session sends the token requests (``session=`` bound, or the standard library with
a hint), that ``AsyncNavroAuth`` never blocks the AsyncSession's event loop while a token is
fetched (and that the sync ``NavroAuth`` would: why there are two classes), one token request
for many tasks, and the session types each class accepts. All against the real sandbox.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Callable, Coroutine, List

import pytest

niquests = pytest.importorskip("niquests", reason="the niquests adapter tests need niquests")

from navro_adapters import ConfigurationError, RetryPolicy, TokenProvider, TransportError
from navro_adapters.niquests import AsyncNavroAuth, NavroAuth
from navro_adapters.sandbox import Sandbox

from .support import (
    UNREACHABLE_BASE,
    assert_repr_is_safe,
    behind_proxy,
    import_error_message,
    ping,
    recording_provider,
)

TASKS = 200
TOKEN_LATENCY = 0.3  # seconds the sandbox holds each token request: the fetch is in flight


@pytest.fixture
def no_proxy_or_ca_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxies and CAs are configured in code only here."""
    proxies = ("NO_PROXY", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    for name in (*proxies, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # these beat verify=
        for spelled in (name, name.lower()):
            monkeypatch.delenv(spelled, raising=False)
    import niquests.utils  # it reads the proxy variables once per process: read them now

    niquests.utils.getproxies.cache_clear()


def run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(main())


# -- AsyncSession: one token for many tasks, and a loop that keeps running -------------------


@pytest.mark.parametrize("bound", [True, False], ids=["session=", "unbound"])
def test_many_tasks_on_an_async_session_cost_one_token_request(
    sandbox: Sandbox, bound: bool
) -> None:
    sandbox.set_token_latency(TOKEN_LATENCY)  # every task arrives while the one fetch is out

    async def main() -> List[int]:
        async with niquests.AsyncSession(pool_maxsize=TASKS) as session:
            bound_to = {"session": session} if bound else {}
            session.auth = AsyncNavroAuth(sandbox.credentials(), **bound_to)
            responses = await asyncio.gather(*[session.get(ping(sandbox)) for _ in range(TASKS)])
            return [r.status_code for r in responses]

    assert run(main) == [200] * TASKS
    assert sandbox.stats().token_requests == 1


def saw_the_fetch_in_flight(sandbox: Sandbox, make_auth: Callable[[Any], Any]) -> bool:
    """Whether a ticker task on an AsyncSession's loop ran while the auth ``make_auth(session)``
    builds was fetching a token for the session's first request."""
    sandbox.set_token_latency(TOKEN_LATENCY)
    seen: List[bool] = []

    async def main() -> int:
        async with niquests.AsyncSession() as session:
            session.auth = auth = make_auth(session)
            stop = asyncio.Event()

            async def ticker() -> None:
                while not stop.is_set():
                    seen.append(auth.provider.fetching)
                    await asyncio.sleep(0)

            ticking = asyncio.ensure_future(ticker())
            try:
                response = await session.get(ping(sandbox))
            finally:
                stop.set()
                await ticking
            return int(response.status_code or 0)

    assert run(main) == 200
    assert sandbox.stats().token_requests == 1
    return any(seen)


@pytest.mark.parametrize("bound", [True, False], ids=["session=", "unbound"])
def test_a_slow_token_request_does_not_block_the_event_loop(sandbox: Sandbox, bound: bool) -> None:
    def make_auth(session: Any) -> AsyncNavroAuth:
        return AsyncNavroAuth(sandbox.credentials(), **({"session": session} if bound else {}))

    assert saw_the_fetch_in_flight(sandbox, make_auth)


def test_the_sync_auth_on_an_async_session_would_block_it(sandbox: Sandbox) -> None:
    # What AsyncNavroAuth exists for: niquests calls a sync auth on the loop itself.
    assert not saw_the_fetch_in_flight(sandbox, lambda _: NavroAuth(sandbox.credentials()))


# -- which session sends the token requests ---------------------------------------------------


@pytest.mark.usefixtures("no_proxy_or_ca_environment")
def test_token_requests_use_the_proxies_of_the_session_given(sandbox: Sandbox) -> None:
    credentials = behind_proxy(sandbox)  # reachable only through the sandbox as a proxy
    with niquests.Session() as session:
        session.proxies = {"http": sandbox.base_url}
        session.auth = NavroAuth(credentials, session=session)
        assert session.get(f"{UNREACHABLE_BASE}/v1/ping").status_code == 200

    async def main() -> int:
        async with niquests.AsyncSession() as session:
            session.proxies = {"http": sandbox.base_url}
            session.auth = AsyncNavroAuth(TokenProvider(credentials), session=session)
            return int((await session.get(f"{UNREACHABLE_BASE}/v1/ping")).status_code or 0)

    assert run(main) == 200
    assert sandbox.stats().token_requests == 2  # one per adapter, both through the proxy


@pytest.mark.usefixtures("no_proxy_or_ca_environment")
def test_token_requests_trust_the_ca_of_the_session_given() -> None:
    with Sandbox(tls=True) as sandbox:
        with niquests.Session() as session:
            session.verify = sandbox.ca_file  # in code only, no environment variable
            session.auth = NavroAuth(sandbox.credentials(), session=session)
            assert session.get(ping(sandbox), timeout=10).status_code == 200

        async def main() -> int:
            async with niquests.AsyncSession() as session:
                session.verify = sandbox.ca_file
                session.auth = AsyncNavroAuth(sandbox.credentials(), session=session)
                return int((await session.get(ping(sandbox), timeout=10)).status_code or 0)

        assert run(main) == 200
        assert sandbox.stats().token_requests == 2


def test_unbound_token_requests_go_through_the_standard_library(sandbox: Sandbox) -> None:
    with niquests.Session() as session:
        session.auth = NavroAuth(sandbox.credentials())
        assert session.get(ping(sandbox)).status_code == 200
    (token_request,) = [r for r in sandbox.requests_seen() if r.kind == "token"]
    assert token_request.headers["user-agent"].startswith("Python-urllib/")
    (api_request,) = [r for r in sandbox.requests_seen() if r.kind == "api"]
    assert api_request.headers["user-agent"].startswith("niquests/")


def test_bound_token_requests_are_bare_niquests_requests(sandbox: Sandbox) -> None:
    with niquests.Session() as session:
        session.headers["X-Custom"] = "session-header"  # the session's, not the token request's
        session.auth = NavroAuth(sandbox.credentials(), session=session)
        assert session.get(ping(sandbox)).status_code == 200
    (token_request,) = [r for r in sandbox.requests_seen() if r.kind == "token"]
    assert token_request.headers["user-agent"].startswith("niquests/")
    assert "x-custom" not in token_request.headers
    assert token_request.headers["authorization"].startswith("Basic ")


def test_a_provider_with_its_own_transport_keeps_it(sandbox: Sandbox) -> None:
    provider, calls = recording_provider(sandbox)
    with niquests.Session() as session:
        session.auth = NavroAuth(provider, session=session)
        assert session.get(ping(sandbox)).status_code == 200
    assert calls == [sandbox.token_url]


@pytest.mark.usefixtures("no_proxy_or_ca_environment")
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_unbound_a_tls_failure_says_to_pass_the_session(flavour: str) -> None:
    with Sandbox(tls=True) as sandbox:

        async def main() -> None:
            async with niquests.AsyncSession() as session:
                session.verify = sandbox.ca_file  # the API call would trust the CA, urllib not
                session.auth = AsyncNavroAuth(sandbox.credentials())
                await session.get(ping(sandbox), timeout=10)

        with pytest.raises(TransportError) as caught:
            if flavour == "async":
                run(main)
            else:
                with niquests.Session() as session:
                    session.verify = sandbox.ca_file
                    session.auth = NavroAuth(sandbox.credentials())
                    session.get(ping(sandbox), timeout=10)
        message = caught.value.message
        assert "TLS certificate problem" in message and "session=" in message, message
        assert "urllib" in message and not caught.value.retryable
        assert sandbox.stats().token_requests == 0  # no handshake completed, nothing retried


def test_unbound_a_failing_environment_proxy_says_to_pass_the_session(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as closed:  # a port nothing listens on: the proxy refuses
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    auth = NavroAuth(sandbox.credentials(), retry_policy=RetryPolicy(max_attempts=1))
    with pytest.raises(TransportError) as caught:
        auth.rule.token()
    assert "session=" in caught.value.message and caught.value.retryable
    assert sandbox.stats().token_requests == 0


# -- what each class accepts ------------------------------------------------------------------


def test_each_class_takes_only_its_own_session_type(sandbox: Sandbox) -> None:
    credentials = sandbox.credentials()

    async def an_async_session() -> Any:  # older niquests make one only on a running loop
        return niquests.AsyncSession()

    with pytest.raises(ConfigurationError, match="AsyncNavroAuth"):  # a Session subclass
        NavroAuth(credentials, session=run(an_async_session))
    with pytest.raises(ConfigurationError, match="AsyncSession"):
        AsyncNavroAuth(credentials, session=niquests.Session())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        NavroAuth(credentials, session=object())  # type: ignore[arg-type]


def test_repr_shows_neither_secret_nor_token(sandbox: Sandbox) -> None:
    with niquests.Session() as session:
        session.auth = auth = NavroAuth(sandbox.credentials(), session=session)
        assert session.get(ping(sandbox)).status_code == 200
    assert_repr_is_safe(repr(auth), auth.provider.token)
    assert repr(auth).startswith("NavroAuth(")


def test_import_error_names_the_extra() -> None:
    out = import_error_message("niquests", "niquests")
    assert "pip install 'navro-adapters[niquests]'" in out
