"""Adapters pickled to spawned worker processes make real, authenticated requests there.

One pool of two spawn-started workers serves the module (starting one costs about a second).
Each task unpickles its own copy of the adapter, so each fetches its own token: the sandbox
counts one token request per task, and no worker reuses the parent's token.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterator, List

import aiohttp
import httpx
import pytest
import requests

from navro_adapters import ConfigurationError
from navro_adapters.aiohttp import NavroAuthMiddleware
from navro_adapters.httpx import NavroAuth as HttpxAuth
from navro_adapters.requests import NavroAuth as RequestsAuth
from navro_adapters.sandbox import Sandbox

from . import workers

SECRET = "s3cr3t-value-never-logged"
WORKERS = 2
CALLS = 3  # requests per worker: the first fetches the token, the others reuse it
RESULT_TIMEOUT = 60.0  # seconds; a safety net for a stuck worker, not a speed assertion


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(client_secret=SECRET) as sb:
        yield sb


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=WORKERS, mp_context=context) as executor:
        yield executor


def ping(sandbox: Sandbox) -> str:
    return f"{sandbox.base_url}/v1/ping"


def assert_each_worker_fetched_its_own_token(
    pool: ProcessPoolExecutor,
    sandbox: Sandbox,
    worker: Callable[..., workers.Report],
    adapter: Any,
    parent_fingerprint: str,
) -> None:
    before = sandbox.stats().token_requests
    futures = [pool.submit(worker, adapter, ping(sandbox), CALLS) for _ in range(WORKERS)]
    reports = [future.result(timeout=RESULT_TIMEOUT) for future in futures]
    fingerprints: List[str] = []
    for pid, statuses, fingerprint, token_requests in reports:
        assert pid != os.getpid()
        assert statuses == [200] * CALLS
        assert token_requests == 1  # a fresh provider: one token request, then the cache
        fingerprints.append(fingerprint)
    assert parent_fingerprint not in fingerprints
    assert len(set(fingerprints)) == WORKERS
    assert sandbox.stats().token_requests == before + WORKERS


def test_a_requests_session_carrying_its_auth_works_in_spawned_workers(
    pool: ProcessPoolExecutor, sandbox: Sandbox
) -> None:
    session = requests.Session()
    session.auth = auth = RequestsAuth(sandbox.credentials(), session=session)
    assert session.get(ping(sandbox)).status_code == 200
    assert auth.provider.token is not None
    assert_each_worker_fetched_its_own_token(
        pool, sandbox, workers.with_requests_session, session, auth.provider.token.fingerprint
    )


def test_httpx_auth_works_in_spawned_workers(pool: ProcessPoolExecutor, sandbox: Sandbox) -> None:
    auth = HttpxAuth(sandbox.credentials())
    with httpx.Client(auth=auth) as client:
        assert client.get(ping(sandbox)).status_code == 200
    assert auth.provider.token is not None
    assert_each_worker_fetched_its_own_token(
        pool, sandbox, workers.with_httpx_client, auth, auth.provider.token.fingerprint
    )


def test_aiohttp_middleware_works_in_spawned_workers(
    pool: ProcessPoolExecutor, sandbox: Sandbox
) -> None:
    middleware = NavroAuthMiddleware(sandbox.credentials())

    async def parent_request() -> int:
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            async with session.get(ping(sandbox)) as response:
                return response.status

    assert asyncio.run(parent_request()) == 200
    assert middleware.provider.token is not None
    assert_each_worker_fetched_its_own_token(
        pool,
        sandbox,
        workers.with_aiohttp_session,
        middleware,
        middleware.provider.token.fingerprint,
    )


def test_what_cannot_travel_fails_the_submit_with_the_typed_error(
    pool: ProcessPoolExecutor, sandbox: Sandbox
) -> None:
    with httpx.Client() as token_client:
        auth = HttpxAuth(sandbox.credentials(), client=token_client)
        future = pool.submit(workers.with_httpx_client, auth, ping(sandbox), 1)
        with pytest.raises(ConfigurationError, match="client=") as caught:
            future.result(timeout=RESULT_TIMEOUT)
    assert caught.value.field == "client"


def test_a_niquests_session_carrying_its_auth_works_in_spawned_workers(
    pool: ProcessPoolExecutor, sandbox: Sandbox
) -> None:
    niquests = pytest.importorskip("niquests")
    from navro_adapters.niquests import NavroAuth as NiquestsAuth

    session = niquests.Session()
    session.auth = auth = NiquestsAuth(sandbox.credentials(), session=session)
    assert session.get(ping(sandbox)).status_code == 200
    assert auth.provider.token is not None
    assert_each_worker_fetched_its_own_token(
        pool, sandbox, workers.with_niquests_session, session, auth.provider.token.fingerprint
    )


def test_niquests_async_auth_works_in_spawned_workers(
    pool: ProcessPoolExecutor, sandbox: Sandbox
) -> None:
    niquests = pytest.importorskip("niquests")
    from navro_adapters.niquests import AsyncNavroAuth

    auth = AsyncNavroAuth(sandbox.credentials())

    async def parent_request() -> int:
        async with niquests.AsyncSession() as session:
            return int((await session.get(ping(sandbox), auth=auth)).status_code)

    assert asyncio.run(parent_request()) == 200
    assert auth.provider.token is not None
    assert_each_worker_fetched_its_own_token(
        pool, sandbox, workers.with_niquests_async_session, auth, auth.provider.token.fingerprint
    )
