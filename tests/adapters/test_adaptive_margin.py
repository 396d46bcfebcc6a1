"""Zero 401s while requests queue in the client: the expiry margin adapts to the wait.

A token is attached before the client waits for a pooled connection. With the static margins
(5% of the lifetime) a token attached near its end expires while the request queues, and the
API answers 401. The adapters report every request's attach-to-answer time to the provider,
which then stops serving a token while it would not outlive that time. These tests use a
client that holds every API request for longer than the static expiry margin before sending
it, through two rotations. (A real pool's queue is not even fair: httpx's lets
a request wait for seconds while others pass; the margin never grows past half the lifetime.)
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from typing import Any, List

import pytest

from navro_adapters import RefreshPolicy
from navro_adapters.sandbox import Sandbox

from .support import ping

TOKEN_TTL = 3.0  # seconds: static margins 0.6 s (refresh) and 0.15 s (expiry), half life 1.5 s
HOLD = 0.9  # seconds the client holds every API request before sending it (a busy pool's queue)
# Token requests are not held: a held token request would make the token look shorter-lived
# by the hold (its lifetime counts from the request), which hides the effect under test.
API_PATH = "/v1/"
CALLERS = 10
RUN_FOR = 2.2 * TOKEN_TTL  # seconds: two rotations
# Callers start HOLD / CALLERS apart, so a token is attached every ~90 ms, evenly: with the static
# margins the 0.3 s before a token turns stale always holds attachments that reach the server
# after it expired (FRESH until 2.4 s, sent 0.9 s later). Started together, they would attach
# in bursts that may all miss that window, and the control below would pass or fail by chance.
STAGGER = HOLD / CALLERS


def _run_httpx_async(sandbox: Sandbox, policy: RefreshPolicy) -> List[int]:
    httpx = pytest.importorskip("httpx")
    from navro_adapters.httpx import NavroAuth

    class Holding(httpx.AsyncHTTPTransport):  # type: ignore[misc, name-defined]
        async def handle_async_request(self, request: Any) -> Any:
            if request.url.path.startswith(API_PATH):
                await asyncio.sleep(HOLD)
            return await super().handle_async_request(request)

    sandbox.set_token_ttl(TOKEN_TTL)
    auth = NavroAuth(sandbox.credentials(), refresh_policy=policy)

    async def main() -> List[int]:
        statuses: List[int] = []
        async with httpx.AsyncClient(auth=auth, transport=Holding(), timeout=30) as client:
            ends = time.monotonic() + RUN_FOR

            async def caller(index: int) -> None:
                await asyncio.sleep(index * STAGGER)
                while time.monotonic() < ends:
                    statuses.append((await client.get(ping(sandbox))).status_code)

            await asyncio.gather(*[caller(index) for index in range(CALLERS)])
        return statuses

    return asyncio.run(main())


def _run_session(library: str, adapter: str, sandbox: Sandbox, policy: RefreshPolicy) -> List[int]:
    """requests or niquests: staggered threads on one session holding every API request."""
    module = pytest.importorskip(library)
    NavroAuth = importlib.import_module(adapter).NavroAuth

    class Holding(module.adapters.HTTPAdapter):  # type: ignore[misc, name-defined]
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            if request.path_url.startswith(API_PATH):
                time.sleep(HOLD)
            return super().send(request, *args, **kwargs)

    sandbox.set_token_ttl(TOKEN_TTL)
    session = module.Session()
    session.mount("http://", Holding())
    auth = NavroAuth(sandbox.credentials(), session=session, refresh_policy=policy)
    statuses: List[int] = []
    ends = time.monotonic() + RUN_FOR

    def caller(index: int) -> None:
        time.sleep(index * STAGGER)
        while time.monotonic() < ends:
            statuses.append(session.get(ping(sandbox), auth=auth, timeout=30).status_code)

    threads = [threading.Thread(target=caller, args=(index,)) for index in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    session.close()
    return statuses


def _run_requests(sandbox: Sandbox, policy: RefreshPolicy) -> List[int]:
    return _run_session("requests", "navro_adapters.requests", sandbox, policy)


def _run_niquests(sandbox: Sandbox, policy: RefreshPolicy) -> List[int]:
    return _run_session("niquests", "navro_adapters.niquests", sandbox, policy)


def _run_aiohttp(sandbox: Sandbox, policy: RefreshPolicy) -> List[int]:
    aiohttp = pytest.importorskip("aiohttp")
    from navro_adapters.aiohttp import NavroAuthMiddleware

    async def holding(request: Any, handler: Any) -> Any:  # after ours: the pool's queue
        if request.url.path.startswith(API_PATH):
            await asyncio.sleep(HOLD)
        return await handler(request)

    sandbox.set_token_ttl(TOKEN_TTL)
    auth = NavroAuthMiddleware(sandbox.credentials(), refresh_policy=policy)

    async def main() -> List[int]:
        statuses: List[int] = []
        async with aiohttp.ClientSession(middlewares=(auth, holding)) as session:
            ends = time.monotonic() + RUN_FOR

            async def caller(index: int) -> None:
                await asyncio.sleep(index * STAGGER)
                while time.monotonic() < ends:
                    async with session.get(ping(sandbox)) as response:
                        statuses.append(response.status)

            await asyncio.gather(*[caller(index) for index in range(CALLERS)])
        return statuses

    return asyncio.run(main())


RUNS = {
    "aiohttp": _run_aiohttp,
    "httpx-async": _run_httpx_async,
    "niquests": _run_niquests,
    "requests": _run_requests,
}


@pytest.mark.parametrize("stack", sorted(RUNS))
def test_no_token_expires_while_its_request_queues(sandbox: Sandbox, stack: str) -> None:
    statuses = RUNS[stack](sandbox, RefreshPolicy())
    stats = sandbox.stats()
    assert len(statuses) > 40 and set(statuses) == {200}
    assert stats.api_401s == 0  # not even one that a resend would have hidden
    assert stats.tokens_issued >= 3  # the run did cross two rotations


def test_with_static_margins_the_same_queue_gets_401s(sandbox: Sandbox) -> None:
    # The control: the same load with adaptation off does what the static margins allow.
    _run_httpx_async(sandbox, RefreshPolicy(adapt_to_latency=False, refresh_jitter=0.0))
    assert sandbox.stats().api_401s > 0
