"""The httpx adapter and the provider under trio and anyio, with asyncio's guarantees.

The compliance suite runs its whole contract on the httpx async flavours in a trio run
(``httpx-async-trio``); these tests cover what only another runtime can break: background
refreshes and flights that no caller owns, cancelled waiters, one provider shared by an asyncio
loop and a trio run at once, store calls and back-off sleeps off the loop, and asyncio users
needing trio installed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import Any, Dict, List

import pytest

trio = pytest.importorskip("trio")
anyio = pytest.importorskip("anyio")
httpx = pytest.importorskip("httpx")

from navro_adapters import RefreshPolicy, RetryPolicy, TokenProvider, UrllibTransport
from navro_adapters.httpx import NavroAuth
from navro_adapters.sandbox import Fault, Sandbox
from navro_adapters.stores import FileStore

from .support import ping

TASKS = 50
# A 300 s token turns stale 0.3 s after it is issued (and stays valid for minutes).
STALE_SOON = RefreshPolicy(refresh_fraction=0.999, max_refresh_margin=600.0)


async def _many(client: Any, url: str, count: int) -> List[int]:
    statuses: List[int] = []

    async def one() -> None:
        statuses.append((await client.get(url)).status_code)

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(one)
    return statuses


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_anyio_on_either_backend_makes_one_token_request_for_many_tasks(
    sandbox: Sandbox, backend: str
) -> None:
    auth = NavroAuth(sandbox.credentials())
    sandbox.set_token_latency(0.3)

    async def main() -> List[int]:
        async with httpx.AsyncClient(auth=auth) as client:
            return await _many(client, ping(sandbox), TASKS)

    assert anyio.run(main, backend=backend) == [200] * TASKS
    assert sandbox.stats().token_requests == 1


@pytest.mark.parametrize("route", ["async_client", "provider_transport"])
def test_under_trio_a_refresh_ahead_runs_in_the_background(sandbox: Sandbox, route: str) -> None:
    # With a route of its own (a client named for token requests: a task no caller owns; the
    # provider's sync transport: a thread), a stale token is served while the refresh runs.
    sandbox.set_token_ttl(2)  # stale after 1 s (STALE_SOON), valid for 1.9 s
    seen_fetching: List[bool] = []
    providers: List[TokenProvider] = []

    async def main() -> None:
        async with httpx.AsyncClient() as token_client:
            if route == "async_client":
                auth = NavroAuth(
                    sandbox.credentials(), async_client=token_client, refresh_policy=STALE_SOON
                )
            else:
                own = TokenProvider(
                    sandbox.credentials(), transport=UrllibTransport(), refresh_policy=STALE_SOON
                )
                auth = NavroAuth(own)
            provider = auth.provider
            providers.append(provider)
            async with httpx.AsyncClient(auth=auth) as client:
                assert (await client.get(ping(sandbox))).status_code == 200
                first = provider.token
                await trio.sleep(1.1)  # now stale
                sandbox.set_token_latency(0.5)
                assert (await client.get(ping(sandbox))).status_code == 200
                seen_fetching.append(provider.fetching)  # answered while the refresh runs
                with trio.fail_after(10):
                    while provider.fetching:
                        await trio.sleep(0.01)
                assert provider.token is not None and provider.token is not first

    trio.run(main)
    assert seen_fetching == [True]
    assert sandbox.stats().token_requests == 2
    assert providers[0].stats.refreshes_ahead == 1


def test_under_trio_cancelled_waiters_never_cancel_the_shared_fetch(sandbox: Sandbox) -> None:
    provider = TokenProvider(sandbox.credentials())
    sandbox.set_token_latency(0.5)
    outcomes: Dict[str, int] = {"cancelled": 0}

    async def impatient() -> None:
        with trio.move_on_after(0.05) as scope:
            await provider.aget_token()
        outcomes["cancelled"] += scope.cancelled_caught

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(impatient)
        async with trio.open_nursery() as nursery:  # a whole task group cancelled at once
            for _ in range(10):
                nursery.start_soon(provider.aget_token)
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        with trio.fail_after(10):
            token = await provider.aget_token()  # the fetch went on: it is waited for, not redone
        assert token.access_token

    trio.run(main)
    assert outcomes["cancelled"] == 10
    assert sandbox.stats().token_requests == 1
    assert provider.stats.acquisitions == 1


def test_one_auth_serves_an_asyncio_loop_and_a_trio_run_at_once(sandbox: Sandbox) -> None:
    auth = NavroAuth(sandbox.credentials())
    sandbox.set_token_latency(0.5)
    start = threading.Barrier(2, timeout=10)
    results: Dict[str, List[int]] = {}
    errors: List[BaseException] = []

    async def requests_from(name: str) -> None:
        async with httpx.AsyncClient(auth=auth) as client:
            start.wait()  # both runs ask for their first token together
            results[name] = await _many(client, ping(sandbox), TASKS)

    def run(name: str, runner: Any) -> None:
        try:
            runner(lambda: requests_from(name))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=("asyncio", lambda main: asyncio.run(main()))),
        threading.Thread(target=run, args=("trio", trio.run)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert results == {"asyncio": [200] * TASKS, "trio": [200] * TASKS}
    assert sandbox.stats().token_requests == 1


async def _ticks_during_first_request(auth: NavroAuth, url: str) -> int:
    """How often a 10 ms ticker ran while the first request (and its token request) ran."""
    count = 0
    fetched = trio.Event()

    async def ticker() -> None:
        nonlocal count
        while not fetched.is_set():
            count += 1
            await trio.sleep(0.01)

    async with httpx.AsyncClient(auth=auth) as client, trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        assert (await client.get(url)).status_code == 200
        fetched.set()
    return count


def test_under_trio_a_slow_token_request_never_blocks_the_run(sandbox: Sandbox) -> None:
    # Both routes: through the client (its own auth flow) and a provider transport on a thread.
    sandbox.set_token_latency(0.5)
    ticks: List[int] = []

    async def main() -> None:
        own_transport = TokenProvider(sandbox.credentials())
        for auth in (NavroAuth(sandbox.credentials()), NavroAuth(own_transport)):
            ticks.append(await _ticks_during_first_request(auth, ping(sandbox)))

    trio.run(main)
    # A blocked run would tick once (before the request) for the whole half second.
    assert all(count > 5 for count in ticks), ticks


def test_under_trio_retries_sleep_and_store_calls_run_off_the_run(
    sandbox: Sandbox, tmp_path: Any
) -> None:
    sandbox.enqueue_token_faults(Fault.status(503), Fault.status(503))
    provider = TokenProvider(
        sandbox.credentials(),
        store=FileStore(tmp_path / "tokens"),
        retry_policy=RetryPolicy(max_attempts=3, backoff_base=0.05, backoff_max=0.1),
    )

    async def main() -> str:
        with trio.fail_after(10):
            return (await provider.aget_token()).fingerprint

    fingerprint = trio.run(main)
    assert sandbox.stats().token_requests == 3
    # The token reached the shared store through a worker thread, not the trio run.
    again = TokenProvider(sandbox.credentials(), store=FileStore(tmp_path / "tokens"))
    assert trio.run(lambda: again.aget_token()).fingerprint == fingerprint
    assert sandbox.stats().token_requests == 3


def test_asyncio_users_need_no_trio(sandbox: Sandbox) -> None:
    # httpcore imports trio when it is installed: hide it, as if it were not.
    code = f"""
import asyncio, sys
sys.modules["trio"] = None
import httpx
from navro_adapters import Credentials
from navro_adapters.httpx import NavroAuth
credentials = Credentials(
    {sandbox.client_id!r}, {sandbox.client_secret!r}, {sandbox.company!r},
    base_url={sandbox.base_url!r}, token_url={sandbox.token_url!r},
)
async def main():
    async with httpx.AsyncClient(auth=NavroAuth(credentials)) as client:
        return (await client.get({ping(sandbox)!r})).status_code
print(asyncio.run(main()))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "200"
