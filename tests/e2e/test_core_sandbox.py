"""The core against the real sandbox: real sockets, real threads, real tasks, exact counts."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Iterator, List

import pytest

from navro_adapters import (
    InvalidClientError,
    RetryPolicy,
    Token,
    TokenEndpointError,
    TokenProvider,
    TokenResponseError,
    TokenTimeoutError,
    TransportError,
)
from navro_adapters.sandbox import Fault, Sandbox

SECRET = "s3cr3t-value-never-logged"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(client_secret=SECRET) as sb:
        yield sb


def fast_retries(**kwargs: float) -> RetryPolicy:
    options = {"backoff_base": 0.01, "backoff_max": 0.05, "attempt_timeout": 2.0, "deadline": 5.0}
    options.update(kwargs)
    return RetryPolicy(**options)  # type: ignore[arg-type]


def test_cold_start_with_100_threads_is_one_token_request(sandbox: Sandbox) -> None:
    sandbox.set_token_latency(0.2)
    provider = TokenProvider(sandbox.credentials())
    barrier = threading.Barrier(100)
    results: List[Token] = []

    def call() -> None:
        barrier.wait()
        results.append(provider.get_token())

    threads = [threading.Thread(target=call) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 100 and len(set(results)) == 1
    assert sandbox.stats().token_requests == 1


def test_cold_start_with_1000_tasks_is_one_token_request(sandbox: Sandbox) -> None:
    sandbox.set_token_latency(0.2)
    provider = TokenProvider(sandbox.credentials())

    async def main() -> List[Token]:
        return await asyncio.gather(*[provider.aget_token() for _ in range(1000)])

    tokens = asyncio.run(main())
    assert len(set(tokens)) == 1
    assert sandbox.stats().token_requests == 1


def test_threads_and_tasks_on_several_loops_share_one_fetch(sandbox: Sandbox) -> None:
    sandbox.set_token_latency(0.3)
    provider = TokenProvider(sandbox.credentials())
    tokens: List[Token] = []

    def loop_thread() -> None:
        async def main() -> List[Token]:
            return await asyncio.gather(*[provider.aget_token() for _ in range(200)])

        tokens.extend(asyncio.run(main()))

    def plain_thread() -> None:
        tokens.append(provider.get_token())

    workers = [threading.Thread(target=loop_thread) for _ in range(4)]
    workers += [threading.Thread(target=plain_thread) for _ in range(20)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert len(tokens) == 820 and len(set(tokens)) == 1
    assert sandbox.stats().token_requests == 1


def test_short_ttl_tokens_are_refreshed_ahead_and_never_served_expired(sandbox: Sandbox) -> None:
    sandbox.set_token_ttl(1.0)
    provider = TokenProvider(sandbox.credentials())
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 3.2
    statuses = []
    while time.monotonic() < deadline:
        token = provider.get_token()
        request = urllib.request.Request(
            f"{sandbox.base_url}/v1/ping",
            headers={"Authorization": token.authorization, "X-API-Version": "1"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                statuses.append(response.status)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)
        time.sleep(0.01)
    assert set(statuses) == {200}
    assert sandbox.stats().api_401s == 0
    assert 3 <= sandbox.stats().token_requests <= 6
    assert provider.stats.refreshes_ahead >= 2


def test_transient_faults_are_retried(sandbox: Sandbox) -> None:
    sandbox.enqueue_token_faults(
        Fault.status(500),
        Fault.status(502),
        Fault.status(503),
        Fault.status(429, retry_after="0"),
        Fault.drop(),
        Fault.reset(),
    )
    provider = TokenProvider(sandbox.credentials(), retry_policy=fast_retries(max_attempts=7))
    assert provider.get_token()
    assert sandbox.stats().token_requests == 7
    assert provider.stats.token_requests == 7


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.malformed_json(), TokenResponseError),
        (Fault.html(), TokenResponseError),
        (Fault.json({"token_type": "Bearer", "expires_in": 300}), TokenResponseError),
        (Fault.json({"access_token": "x", "expires_in": "abc"}), TokenResponseError),
        (Fault.status(400, body={"error": "invalid_scope"}), TokenEndpointError),
        (Fault.status(401, body={"error": "invalid_client"}), InvalidClientError),
    ],
)
def test_non_retryable_answers_fail_at_once(sandbox: Sandbox, fault: Fault, error: type) -> None:
    sandbox.enqueue_token_faults(fault)
    provider = TokenProvider(sandbox.credentials(), retry_policy=fast_retries())
    with pytest.raises(error) as info:
        provider.get_token()
    assert SECRET not in str(info.value)
    assert sandbox.stats().token_requests == 1


def test_hung_token_endpoint_is_bounded_by_the_deadline(sandbox: Sandbox) -> None:
    sandbox.enqueue_token_faults(*[Fault.hang()] * 5)
    provider = TokenProvider(
        sandbox.credentials(), retry_policy=fast_retries(attempt_timeout=0.3, deadline=1.0)
    )
    started = time.monotonic()
    with pytest.raises(TokenTimeoutError):
        provider.get_token()
    assert time.monotonic() - started < 1.6


def test_connection_refused_is_a_transport_error() -> None:
    with Sandbox() as sb:
        credentials = sb.credentials()
    provider = TokenProvider(credentials, retry_policy=fast_retries(deadline=0.5))
    with pytest.raises(TransportError) as info:
        provider.get_token()
    assert not isinstance(info.value, TokenTimeoutError) or info.value.retryable


def test_secret_reset_gives_invalid_client(sandbox: Sandbox) -> None:
    provider = TokenProvider(sandbox.credentials())
    assert provider.get_token()
    sandbox.reset_secret("a-brand-new-secret")
    provider.clear()
    with pytest.raises(InvalidClientError) as info:
        provider.get_token()
    assert "Navro Hub" in str(info.value)
    assert sandbox.stats().token_requests == 2
