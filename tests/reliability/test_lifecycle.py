"""Concurrency and process lifecycle: cancellation storms, fork, many loops sharing a provider."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from typing import Any, Dict, Iterator, List

import pytest

from navro_adapters import TokenProvider
from navro_adapters.httpx import AsyncHttpxTransport
from navro_adapters.sandbox import Sandbox

from .helpers import REPO_ROOT, SECRET, write_results

LOOPS = 6  # threads, each running its own event loop
TASKS_PER_LOOP = 40
FIGURES: Dict[str, Any] = {}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(client_secret=SECRET) as sb:
        yield sb


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    if FIGURES:
        write_results("lifecycle", FIGURES)


# -- the cancellation storm ------------------------------------------------------------------------


def test_cancellation_storm_under_dev_mode_and_warnings_as_errors(sandbox: Sandbox) -> None:
    sandbox.set_token_latency(0.3)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONASYNCIODEBUG="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "dev",
            "-W",
            "error",
            "-m",
            "tests.reliability.storm",
            sandbox.base_url,
            SECRET,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise = [
        phrase
        for phrase in (
            "Task was destroyed but it is pending",
            "never retrieved",
            "was never awaited",
            "Traceback",
            "Warning",
        )
        if phrase in proc.stderr
    ]
    assert not noise, f"{noise}: {proc.stderr[-3000:]}"
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    FIGURES["cancellation_storm"] = figures
    assert figures["asyncio_log"] == [], figures["asyncio_log"]
    for name in ("core", "aiohttp"):
        storm = figures[name]
        assert storm["errors"] == [], storm
        assert storm["cancelled"] + storm["completed"] == storm["tasks"], storm
        assert storm["cancelled"] > 0 and storm["completed"] > 0, storm
        assert storm["pending_tasks"] == 0, storm  # the provider's own tasks included
        assert not storm["flight_left"], storm
        assert storm["token_requests"] == 1, storm
    assert figures["core"]["distinct_results"] == 1  # every survivor got the same token
    assert figures["aiohttp"]["distinct_results"] == 1  # ... and the same status, 200
    assert sandbox.stats().token_requests == 1


# -- fork ----------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_with_a_fetch_in_flight_child_fetches_its_own_token(sandbox: Sandbox) -> None:
    provider = TokenProvider(sandbox.credentials())
    parent_first = provider.get_token()
    provider.invalidate(parent_first)
    sandbox.set_token_latency(0.8)
    in_flight: List[Any] = []
    fetcher = threading.Thread(target=lambda: in_flight.append(provider.get_token()))
    fetcher.start()
    deadline = time.monotonic() + 10
    while not provider.fetching and time.monotonic() < deadline:
        time.sleep(0.005)
    assert provider.fetching, "the fetch never started"
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, use of fork()"
        pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        status = 1
        try:
            os.close(read_end)
            report: Dict[str, Any] = {"flight_inherited": provider.fetching}
            started = time.monotonic()
            token = provider.get_token()
            again = provider.get_token()
            report.update(
                ok=True,
                token=token.access_token,
                same_twice=again is token,
                seconds=time.monotonic() - started,
            )
            status = 0
        except BaseException as exc:
            report = {"ok": False, "error": repr(exc)}
        finally:
            with os.fdopen(write_end, "w") as pipe:
                pipe.write(json.dumps(report))
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = json.loads(pipe.read() or "{}")
    _, wait_status = os.waitpid(pid, 0)
    fetcher.join(30)
    assert child.get("ok"), child
    assert os.waitstatus_to_exitcode(wait_status) == 0
    assert child["flight_inherited"] is False, "the child inherited the parent's flight"
    assert child["same_twice"], "the child did not cache its token"
    assert in_flight, "the parent's in-flight fetch did not complete"
    parent_token = in_flight[0].access_token
    assert child["token"] != parent_token, "the child reused the parent's in-flight token"
    seen = [
        r.headers.get("authorization", "") for r in sandbox.requests_seen() if r.kind == "token"
    ]
    assert len(seen) == 3  # parent's first, parent's in-flight, the child's own
    FIGURES["fork"] = {
        "child_fetch_seconds": round(child["seconds"], 3),
        "token_requests": len(seen),
    }


# -- many event loops ------------------------------------------------------------------------------


def _run_loops(make_coro: Any) -> List[Any]:
    """Start LOOPS threads, each running ``asyncio.run(make_coro(i))``; return their results."""
    results: List[Any] = [None] * LOOPS
    barrier = threading.Barrier(LOOPS)

    def worker(index: int) -> None:
        barrier.wait(30)
        try:
            results[index] = asyncio.run(make_coro(index))
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(LOOPS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.mark.parametrize("transport", ["sync-default", "async-httpx"])
def test_many_loops_share_one_provider(sandbox: Sandbox, transport: str) -> None:
    sandbox.set_token_latency(0.3)
    async_transport = AsyncHttpxTransport() if transport == "async-httpx" else None
    provider = TokenProvider(sandbox.credentials(), async_transport=async_transport)

    async def many(index: int) -> List[str]:
        tokens = await asyncio.gather(*(provider.aget_token() for _ in range(TASKS_PER_LOOP)))
        return [t.access_token for t in tokens]

    results = _run_loops(many)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[0]
    assert len({token for tokens in results for token in tokens}) == 1
    assert sandbox.stats().token_requests == 1


def test_many_loops_share_one_httpx_auth(sandbox: Sandbox) -> None:
    import httpx

    from navro_adapters.httpx import NavroAuth

    sandbox.set_token_latency(0.3)
    auth = NavroAuth(sandbox.credentials())

    async def many(index: int) -> List[int]:
        async with httpx.AsyncClient(auth=auth) as client:
            responses = await asyncio.gather(
                *(client.get(f"{sandbox.base_url}/v1/ping") for _ in range(TASKS_PER_LOOP))
            )
        return [r.status_code for r in responses]

    try:
        results = _run_loops(many)
    finally:
        auth.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[0]
    assert {s for statuses in results for s in statuses} == {200}
    assert sandbox.stats().token_requests == 1


def test_many_loops_share_one_aiohttp_middleware(sandbox: Sandbox) -> None:
    import aiohttp

    from navro_adapters.aiohttp import NavroAuthMiddleware

    sandbox.set_token_latency(0.3)
    middleware = NavroAuthMiddleware(sandbox.credentials())

    async def many(index: int) -> List[int]:
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:

            async def one() -> int:
                async with session.get(f"{sandbox.base_url}/v1/ping") as response:
                    await response.read()
                    return response.status

            return list(await asyncio.gather(*(one() for _ in range(TASKS_PER_LOOP))))

    results = _run_loops(many)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[0]
    assert {s for statuses in results for s in statuses} == {200}
    assert sandbox.stats().token_requests == 1
