"""Acquiring a token never does blocking set-up work on the event loop.

The measured target (no loop stall over 1 ms at rotation) lives in the benchmarks; these tests
check its structural cause on every async stack, against the HTTPS sandbox: while tokens
rotate, nothing of ours loads CA certificates or builds a client or SSL context on the loop's
thread (tens of milliseconds each), and nothing blocks the loop for a slow token request.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from typing import Any, Awaitable, Callable, Iterator, List

import pytest

from navro_adapters.sandbox import Sandbox

ROTATIONS = 3
SSL_LOADERS = (
    "load_verify_locations",
    "load_default_certs",
    "load_cert_chain",
    "set_default_verify_paths",
)


@pytest.fixture
def tls_sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    pytest.importorskip("trustme")
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # they beat requests' verify=
        monkeypatch.delenv(name, raising=False)
    with Sandbox(tls=True) as sandbox:
        yield sandbox


class LoopThreadWatch:
    """Records every CA/certificate load made on the watched thread (the loop's)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loop_thread: int = -1
        self.on_loop: List[str] = []
        for name in SSL_LOADERS:
            original = getattr(ssl.SSLContext, name)
            monkeypatch.setattr(ssl.SSLContext, name, self._watch(name, original))

    def _watch(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def watched(context: ssl.SSLContext, *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == self.loop_thread:
                self.on_loop.append(name)
            return original(context, *args, **kwargs)

        return watched


async def _rotate(sandbox: Sandbox, send: Callable[[], Awaitable[int]], ticks: List[int]) -> None:
    """Send requests across ``ROTATIONS`` revocations, slow token requests, a ticker running."""
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks[0] += 1
            await asyncio.sleep(0.005)

    ticking = asyncio.ensure_future(ticker())
    try:
        for _ in range(ROTATIONS):
            sandbox.revoke_all_tokens()  # the next request gets a 401: a new token, now
            statuses = await asyncio.gather(*[send() for _ in range(20)])
            assert set(statuses) == {200}
    finally:
        stop.set()
        await ticking


def _check(watch: LoopThreadWatch, ticks: List[int], sandbox: Sandbox) -> None:
    assert watch.on_loop == []  # no certificate loaded on the loop while tokens rotated
    assert sandbox.stats().tokens_issued == ROTATIONS + 1
    # Each of the 3 token requests took 0.2 s: a loop blocked for them would tick a few times.
    assert ticks[0] > 3 * 0.2 / 0.005 / 4


def test_httpx_async_through_the_client(
    tls_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    httpx = pytest.importorskip("httpx")
    from navro_adapters.httpx import NavroAuth

    url = f"{tls_sandbox.base_url}/v1/ping"
    ticks = [0]

    context = ssl.create_default_context(cafile=tls_sandbox.ca_file)  # the user's, made once

    async def main() -> None:
        async with httpx.AsyncClient(
            verify=context, auth=NavroAuth(tls_sandbox.credentials())
        ) as client:
            assert (await client.get(url)).status_code == 200
            watch.loop_thread = threading.get_ident()
            tls_sandbox.set_token_latency(0.2)
            await _rotate(tls_sandbox, lambda: _status(client.get(url)), ticks)

    watch = LoopThreadWatch(monkeypatch)
    asyncio.run(main())
    _check(watch, ticks, tls_sandbox)


def test_aiohttp_middleware(tls_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    from navro_adapters.aiohttp import NavroAuthMiddleware

    url = f"{tls_sandbox.base_url}/v1/ping"
    ticks = [0]
    context = ssl.create_default_context(cafile=tls_sandbox.ca_file)  # the user's, made once

    async def main() -> None:
        connector = aiohttp.TCPConnector(ssl=context)
        middleware = NavroAuthMiddleware(tls_sandbox.credentials())
        async with aiohttp.ClientSession(connector=connector, middlewares=(middleware,)) as session:

            async def send() -> int:
                async with session.get(url) as response:
                    return response.status

            assert await send() == 200
            watch.loop_thread = threading.get_ident()
            tls_sandbox.set_token_latency(0.2)
            await _rotate(tls_sandbox, send, ticks)

    watch = LoopThreadWatch(monkeypatch)
    asyncio.run(main())
    _check(watch, ticks, tls_sandbox)


@pytest.mark.parametrize("bound", [True, False], ids=["session", "unbound"])
def test_niquests_async_session(
    tls_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, bound: bool
) -> None:
    niquests = pytest.importorskip("niquests")
    from navro_adapters.niquests import AsyncNavroAuth

    url = f"{tls_sandbox.base_url}/v1/ping"
    ticks = [0]
    if not bound:  # the unbound route goes through urllib: it trusts what the environment says
        monkeypatch.setenv("SSL_CERT_FILE", tls_sandbox.ca_file or "")

    async def main() -> None:
        async with niquests.AsyncSession(verify=tls_sandbox.ca_file) as session:
            auth = AsyncNavroAuth(tls_sandbox.credentials(), session=session if bound else None)

            async def send() -> int:
                return int((await session.get(url, auth=auth)).status_code or 0)

            assert await send() == 200
            watch.loop_thread = threading.get_ident()
            tls_sandbox.set_token_latency(0.2)
            await _rotate(tls_sandbox, send, ticks)

    watch = LoopThreadWatch(monkeypatch)
    asyncio.run(main())
    _check(watch, ticks, tls_sandbox)


async def _status(response: Awaitable[Any]) -> int:
    return int((await response).status_code)
