"""Per-request overhead of an auth layer with a warm token, against a same-job hook.

In process (no network): the auth hook as the HTTP library invokes it, ``number`` times in a
loop, ``repeats`` loops, the stack's hook and the hand-written same-job one
(:mod:`benchmarks.hooks`: origin check, both headers, a 401 check) alternating so drift on a
busy machine hits both alike; ns/call is the median of the loops.

* requests and niquests: ``auth(prepared_request)`` and the response hooks it registered,
  called with a canned 200 (the 401 check, and our attach-to-answer report, are per request);
* httpx: a whole ``sync_auth_flow`` (or ``async_auth_flow``): the request, then a canned 200;
* aiohttp: one middleware pass with a stub handler returning a canned response.

Over the network: alternating rounds of sequential ``GET /v1/ping`` on the same client, once
through the stack's auth and once with the fixed-header hook passed per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import statistics
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from . import niquests_stacks
from .config import BenchConfig
from .hooks import (
    fixed_aiohttp_middleware,
    fixed_httpx_auth,
    fixed_requests_auth,
    same_job_aiohttp_middleware,
    same_job_httpx_auth,
    same_job_requests_auth,
)
from .stacks import AiohttpDriver, AsyncHttpxDriver, HttpxDriver, RequestsDriver

__all__ = ["hook_cost_async", "hook_cost_sync", "network_rounds_async", "network_rounds_sync"]

SyncLoop = Callable[[int], float]  # runs `number` calls, returns ns/call
AsyncLoop = Callable[[int], Awaitable[float]]


def _timed_sync(call: Callable[[], object]) -> SyncLoop:
    def run(number: int) -> float:
        started = time.perf_counter_ns()
        for _ in range(number):
            call()
        return (time.perf_counter_ns() - started) / number

    return run


def _alternate(
    loops: Dict[str, SyncLoop], config: BenchConfig, between: Callable[[], None]
) -> Dict[str, List[float]]:
    samples: Dict[str, List[float]] = {name: [] for name in loops}
    names = list(loops)
    gc_was_enabled = gc.isenabled()
    try:
        for repeat in range(config.overhead_repeats):
            order = names if repeat % 2 == 0 else names[::-1]
            for name in order:
                between()
                gc.disable()
                try:
                    samples[name].append(loops[name](config.overhead_number))
                finally:
                    if gc_was_enabled:
                        gc.enable()
    finally:
        between()
    return samples


async def _alternate_async(
    loops: Dict[str, AsyncLoop], config: BenchConfig, between: Callable[[], None]
) -> Dict[str, List[float]]:
    samples: Dict[str, List[float]] = {name: [] for name in loops}
    names = list(loops)
    gc_was_enabled = gc.isenabled()
    for repeat in range(config.overhead_repeats):
        order = names if repeat % 2 == 0 else names[::-1]
        for name in order:
            between()
            gc.disable()
            try:
                samples[name].append(await loops[name](config.overhead_number))
            finally:
                if gc_was_enabled:
                    gc.enable()
    between()
    return samples


def _summary(samples: Dict[str, List[float]], hook: str) -> Dict[str, Any]:
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "hook": hook,
        "stack_ns": medians["stack"],
        "same_job_ns": medians["same_job"],
        "extra_ns": medians["stack"] - medians["same_job"],
        "samples_ns": samples,
    }


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def hook_cost_sync(driver: Any, fixed_authorization: str, config: BenchConfig) -> Dict[str, Any]:
    """In-process hook cost for a thread-based stack's driver (after a warm call)."""
    if isinstance(driver, RequestsDriver):
        import requests

        session = driver.session
        auth = session.auth if session.auth is not None else getattr(session, "token_auth", None)
        if auth is None:
            raise LookupError("the session has no auth hook to time")
        prepared = requests.Request("GET", driver.url).prepare()
        response = requests.Response()  # a canned 200, as the session would hand the hooks
        response.status_code, response.request = 200, prepared
        response.elapsed = datetime.timedelta(milliseconds=1)
        same_job = same_job_requests_auth(fixed_authorization, _origin(driver.url))

        def one_request(hook: Any) -> None:
            hook(prepared)
            for on_response in prepared.hooks["response"]:
                on_response(response)
            prepared.hooks["response"].clear()  # registered per request: never piled up

        loops = {
            "stack": _timed_sync(lambda: one_request(auth)),
            "same_job": _timed_sync(lambda: one_request(same_job)),
        }
        return _summary(
            _alternate(loops, config, _nothing), "auth(prepared_request) + response hooks"
        )
    if isinstance(driver, niquests_stacks.NiquestsDriver):

        def alternate(loops: Dict[str, SyncLoop], label: str) -> Dict[str, Any]:
            return _summary(_alternate(loops, config, _nothing), label)

        summary: Dict[str, Any] = niquests_stacks.hook_cost_sync(
            driver, fixed_authorization, alternate, _timed_sync
        )
        return summary
    if isinstance(driver, HttpxDriver):
        client = driver.client
        module = _module_of(client)
        request = client.build_request("GET", driver.url)
        stack_auth = client.auth
        same_job = same_job_httpx_auth(fixed_authorization, _origin(driver.url), module)
        answer = module.Response(200, request=request)

        def whole_flow(auth: Any) -> None:
            flow = auth.sync_auth_flow(request)
            next(flow)
            with contextlib.suppress(StopIteration):
                flow.send(answer)

        loops = {
            "stack": _timed_sync(lambda: whole_flow(stack_auth)),
            "same_job": _timed_sync(lambda: whole_flow(same_job)),
        }
        return _summary(
            _alternate(loops, config, _nothing), "auth.sync_auth_flow(request): request + 200"
        )
    raise TypeError(f"no hook timing for {type(driver).__name__}")


async def hook_cost_async(
    driver: Any, fixed_authorization: str, config: BenchConfig
) -> Dict[str, Any]:
    """In-process hook cost for an asyncio stack's driver (after a warm call)."""
    if isinstance(driver, AsyncHttpxDriver):
        client = driver.client
        module = _module_of(client)
        request = client.build_request("GET", driver.url)
        stack_auth = client.auth
        same_job = same_job_httpx_auth(fixed_authorization, _origin(driver.url), module)

        answer = module.Response(200, request=request)

        def flow_loop(auth: Any) -> AsyncLoop:
            async def run(number: int) -> float:
                started = time.perf_counter_ns()
                for _ in range(number):
                    flow = auth.async_auth_flow(request)
                    await flow.__anext__()
                    with contextlib.suppress(StopAsyncIteration):
                        await flow.asend(answer)
                return (time.perf_counter_ns() - started) / number

            return run

        loops = {"stack": flow_loop(stack_auth), "same_job": flow_loop(same_job)}
        samples = await _alternate_async(loops, config, _nothing)
        return _summary(samples, "auth.async_auth_flow(request): request + 200")
    if isinstance(driver, niquests_stacks.AsyncNiquestsDriver):

        async def alternate(loops: Dict[str, AsyncLoop], label: str) -> Dict[str, Any]:
            return _summary(await _alternate_async(loops, config, _nothing), label)

        found: Dict[str, Any] = await niquests_stacks.hook_cost_async(
            driver, fixed_authorization, alternate
        )
        return found
    if isinstance(driver, AiohttpDriver):
        if driver.middleware is None:
            raise LookupError("the session has no middleware to time")
        request, response = await _capture_request(
            driver, fixed_aiohttp_middleware(fixed_authorization)
        )
        if response.status != 200:  # a 401 would send the stack's hook through its resend path
            raise RuntimeError(f"the captured request answered {response.status}")

        async def stub_handler(_request: Any) -> Any:
            return response

        def middleware_loop(middleware: Any) -> AsyncLoop:
            async def run(number: int) -> float:
                started = time.perf_counter_ns()
                for _ in range(number):
                    await middleware(request, stub_handler)
                return (time.perf_counter_ns() - started) / number

            return run

        same_job = same_job_aiohttp_middleware(fixed_authorization, _origin(driver.url))
        loops = {"stack": middleware_loop(driver.middleware), "same_job": middleware_loop(same_job)}
        samples = await _alternate_async(loops, config, _nothing)
        return _summary(samples, "await middleware(request, stub_handler)")
    raise TypeError(f"no hook timing for {type(driver).__name__}")


async def _capture_request(driver: AiohttpDriver, authenticate: Any) -> Tuple[Any, Any]:
    """A real ``ClientRequest`` and its 200 ``ClientResponse``, taken from one real request
    sent through ``authenticate`` (a middleware)."""
    captured: List[Any] = []

    async def capture(request: Any, handler: Any) -> Any:
        response = await handler(request)
        captured[:] = [request, response]
        return response

    async with driver.session.get(driver.url, middlewares=(authenticate, capture)) as response:
        await response.read()
    return captured[0], captured[1]


def _nothing() -> None:
    return None


def _module_of(client: Any) -> Any:
    """The httpx flavour (``httpx`` or ``httpx2``) a client, or a subclass of one, is built on."""
    import importlib

    for cls in type(client).__mro__:
        if cls.__name__ in ("Client", "AsyncClient"):
            return importlib.import_module(cls.__module__.split(".")[0])
    raise TypeError("not an httpx client")


# -- over the network ------------------------------------------------------------------------------


def _round_summary(rounds: Dict[str, List[List[float]]]) -> Dict[str, Any]:
    flat = {name: [v for r in values for v in r] for name, values in rounds.items()}
    medians = {name: statistics.median(values) * 1e6 for name, values in flat.items()}
    per_round = [
        (statistics.median(s) - statistics.median(f)) * 1e6
        for s, f in zip(rounds["stack"], rounds["fixed"])
    ]
    return {
        "stack_us": medians["stack"],
        "fixed_us": medians["fixed"],
        "extra_us": medians["stack"] - medians["fixed"],
        "extra_us_per_round": per_round,
        "requests_per_round": len(rounds["stack"][0]) if rounds["stack"] else 0,
    }


def network_rounds_sync(
    driver: Any, fixed_authorization: str, config: BenchConfig
) -> Dict[str, Any]:
    """Sequential requests on one client, alternating stack auth and fixed-header rounds."""
    if isinstance(driver, RequestsDriver):
        fixed = fixed_requests_auth(fixed_authorization)
        session, url, timeout = driver.session, driver.url, driver.timeout
        calls: Dict[str, Callable[[], Any]] = {
            "stack": lambda: session.get(url, timeout=timeout),
            "fixed": lambda: session.get(url, timeout=timeout, auth=fixed),
        }
    elif isinstance(driver, HttpxDriver):
        fixed = fixed_httpx_auth(fixed_authorization, _module_of(driver.client))
        client, url = driver.client, driver.url
        calls = {"stack": lambda: client.get(url), "fixed": lambda: client.get(url, auth=fixed)}
    elif isinstance(driver, niquests_stacks.NiquestsDriver):
        fixed = fixed_requests_auth(fixed_authorization)  # any callable is a niquests auth
        session, url, timeout = driver.session, driver.url, driver.timeout
        calls = {
            "stack": lambda: session.get(url, timeout=timeout),
            "fixed": lambda: session.get(url, timeout=timeout, auth=fixed),
        }
    else:
        raise TypeError(f"no network rounds for {type(driver).__name__}")
    rounds: Dict[str, List[List[float]]] = {"stack": [], "fixed": []}
    for index in range(config.network_rounds):
        order = ("stack", "fixed") if index % 2 == 0 else ("fixed", "stack")
        for name in order:
            latencies = []
            for _ in range(config.network_requests):
                began = time.perf_counter()
                response = calls[name]()
                latencies.append(time.perf_counter() - began)
                _check(response.status_code)
            rounds[name].append(latencies)
    return _round_summary(rounds)


async def network_rounds_async(
    driver: Any, fixed_authorization: str, config: BenchConfig
) -> Dict[str, Any]:
    """:func:`network_rounds_sync` for asyncio clients."""
    calls: Dict[str, Callable[[], Awaitable[int]]]
    if isinstance(driver, AsyncHttpxDriver):
        fixed = fixed_httpx_auth(fixed_authorization, _module_of(driver.client))
        client, url = driver.client, driver.url

        async def stack_httpx() -> int:
            return int((await client.get(url)).status_code)

        async def fixed_httpx() -> int:
            return int((await client.get(url, auth=fixed)).status_code)

        calls = {"stack": stack_httpx, "fixed": fixed_httpx}
    elif isinstance(driver, AiohttpDriver):
        middleware = fixed_aiohttp_middleware(fixed_authorization)
        session, url = driver.session, driver.url

        async def through(middlewares: Optional[Tuple[Any, ...]]) -> int:
            extra = {} if middlewares is None else {"middlewares": middlewares}
            async with session.get(url, **extra) as response:
                await response.read()
                return int(response.status)

        async def stack_aiohttp() -> int:
            return await through(None)

        async def fixed_aiohttp() -> int:
            return await through((middleware,))

        calls = {"stack": stack_aiohttp, "fixed": fixed_aiohttp}
    elif isinstance(driver, niquests_stacks.AsyncNiquestsDriver):
        fixed = fixed_requests_auth(fixed_authorization)
        nsession, url, auth = driver.session, driver.url, driver.auth

        async def stack_niquests() -> int:
            return int((await nsession.get(url, auth=auth)).status_code or 0)

        async def fixed_niquests() -> int:
            return int((await nsession.get(url, auth=fixed)).status_code or 0)

        calls = {"stack": stack_niquests, "fixed": fixed_niquests}
    else:
        raise TypeError(f"no network rounds for {type(driver).__name__}")
    rounds: Dict[str, List[List[float]]] = {"stack": [], "fixed": []}
    for index in range(config.network_rounds):
        order = ("stack", "fixed") if index % 2 == 0 else ("fixed", "stack")
        for name in order:
            latencies = []
            for _ in range(config.network_requests):
                began = time.perf_counter()
                status = await calls[name]()
                latencies.append(time.perf_counter() - began)
                _check(status)
            rounds[name].append(latencies)
    await asyncio.sleep(0)
    return _round_summary(rounds)


def _check(status: int) -> None:
    if status != 200:
        raise RuntimeError(f"a timed request answered {status}")
