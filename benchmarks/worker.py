"""One stack, in its own process: ``python -m benchmarks.worker`` (driven by the runner).

Reads ``{"stack": key, "config": {...}}`` as JSON on stdin, starts its own sandbox in a child
process, runs the scenarios (overhead, cold start, expiry contention, revocation storm) and
writes one JSON document to stdout. Diagnostics go to stderr. A scenario that fails is
reported with its error; the others still run.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import sys
import time
import traceback
import urllib.request
from typing import Any, Callable, Coroutine, Dict

from navro_adapters import build_token_request
from navro_adapters.sandbox import Sandbox

from .config import BenchConfig
from .overhead import hook_cost_async, hook_cost_sync, network_rounds_async, network_rounds_sync
from .scenarios import (
    cold_start_async,
    cold_start_threads,
    contention_async,
    contention_threads,
    describe_error,
    storm_async,
    storm_threads,
)
from .stacks import (
    StackSpec,
    Target,
    make_async_driver,
    make_sync_driver,
    reset_process_caches,
    spec_by_key,
)

__all__ = ["main", "run_stack"]

#: Stacks whose auth hook can be timed in process through the library's own hook interface.
HOOK_TIMED = frozenset(
    {
        "navro-requests",
        "navro-niquests",
        "navro-niquests-async",
        "peer-requests-auth",
        "peer-authlib-requests",
        "navro-httpx",
        "peer-httpx-auth",
        "navro-httpx-async",
        "peer-httpx-auth-async",
        "navro-aiohttp",
    }
)
TOKEN_FETCH_TIMEOUT = 10.0  # seconds, for the baseline's fixed token


def fixed_authorization(sandbox: Sandbox, lifetime: float) -> str:
    """A bearer value valid for ``lifetime`` seconds, fetched once with the standard library.

    The baselines send it as a plain header: the server does the same work for them (one
    token lookup per request) as for the auth stacks, and no token is ever requested by them.
    """
    sandbox.set_token_ttl(lifetime)
    request = build_token_request(sandbox.credentials())
    http_request = urllib.request.Request(
        request.url, data=request.body, headers=dict(request.headers), method=request.method
    )
    with urllib.request.urlopen(http_request, timeout=TOKEN_FETCH_TIMEOUT) as response:
        document = json.loads(response.read().decode("utf-8"))
    return f"Bearer {document['access_token']}"


def _guard(results: Dict[str, Any], name: str, run: Callable[[], Dict[str, Any]]) -> None:
    started = time.perf_counter()
    try:
        results[name] = run()
        results[name].setdefault("status", "ok")
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        results[name] = {"status": "error", "error": describe_error(exc)}
    results[name]["wall_seconds"] = time.perf_counter() - started


def run_stack(spec: StackSpec, config: BenchConfig, sandbox: Sandbox) -> Dict[str, Any]:
    """Every scenario for one stack against ``sandbox``; a JSON-able dict."""
    fixed = fixed_authorization(sandbox, config.baseline_ttl)
    sandbox.set_token_ttl(config.long_ttl)
    sandbox.reset_stats()
    ping_url = f"{sandbox.base_url}/v1/ping"

    def target(ttl: float) -> Target:
        return Target(sandbox.credentials(), ping_url, fixed, ttl, config)

    results: Dict[str, Any] = {}
    threads = spec.kind == "threads"
    is_baseline = spec.role == "baseline"

    def thread_overhead() -> Dict[str, Any]:
        driver = make_sync_driver(spec.key, target(config.long_ttl))
        try:
            warm = driver.warm()
            if warm[0] != 200:
                raise RuntimeError(f"warm-up request answered {warm[0]} {warm[2]}")
            out: Dict[str, Any] = {}
            if spec.key in HOOK_TIMED:
                out["hook"] = hook_cost_sync(driver, fixed, config)
            out["network"] = network_rounds_sync(driver, fixed, config)
            return out
        finally:
            driver.close()

    async def async_overhead() -> Dict[str, Any]:
        driver = await make_async_driver(spec.key, target(config.long_ttl))
        try:
            warm = await driver.warm()
            if warm[0] != 200:
                raise RuntimeError(f"warm-up request answered {warm[0]} {warm[2]}")
            out: Dict[str, Any] = {}
            if spec.key in HOOK_TIMED:
                out["hook"] = await hook_cost_async(driver, fixed, config)
            out["network"] = await network_rounds_async(driver, fixed, config)
            return out
        finally:
            await driver.aclose()

    def thread_scenario(name: str, ttl: float) -> Dict[str, Any]:
        sandbox.set_token_ttl(ttl)
        reset_process_caches()
        driver = make_sync_driver(spec.key, target(ttl))
        try:
            if name == "cold":
                return cold_start_threads(driver, config.threads, sandbox)
            if name == "contention":
                return contention_threads(
                    driver, config.threads, config.contention_duration, sandbox
                )
            return storm_threads(
                driver, config.storm_requests, config.storm_delay, config.storm_grace, sandbox
            )
        finally:
            driver.close()
            sandbox.set_token_ttl(config.long_ttl)

    async def async_scenario(name: str, ttl: float) -> Dict[str, Any]:
        await asyncio.get_running_loop().run_in_executor(None, sandbox.set_token_ttl, ttl)
        reset_process_caches()
        driver = await make_async_driver(spec.key, target(ttl))
        tick = config.ticker_interval
        try:
            if name == "cold":
                return await cold_start_async(driver, config.tasks, sandbox, tick)
            if name == "contention":
                return await contention_async(
                    driver, config.tasks, config.contention_duration, sandbox, tick
                )
            return await storm_async(
                driver,
                config.storm_requests,
                config.storm_delay,
                config.storm_grace,
                sandbox,
                tick,
            )
        finally:
            await driver.aclose()
            sandbox.set_token_ttl(config.long_ttl)

    def run_async(
        make: Callable[..., Coroutine[Any, Any, Dict[str, Any]]], *args: Any
    ) -> Dict[str, Any]:
        return asyncio.run(make(*args))

    plan = [("overhead", None), ("cold", config.long_ttl), ("contention", config.contention_ttl)]
    if not is_baseline:
        plan.append(("storm", config.long_ttl))  # last: it revokes every token, the fixed one too
    for name, ttl in plan:
        if name == "overhead":
            if is_baseline:
                results[name] = {"status": "n/a", "reason": "no auth layer to time"}
                continue
            if threads:
                _guard(results, name, thread_overhead)
            else:
                _guard(results, name, functools.partial(run_async, async_overhead))
            continue
        assert ttl is not None
        if threads:
            _guard(results, name, functools.partial(thread_scenario, name, ttl))
        else:
            _guard(results, name, functools.partial(run_async, async_scenario, name, ttl))
    if is_baseline:
        results["storm"] = {"status": "n/a", "reason": "a fixed token cannot be replaced"}
    return results


def main() -> int:
    logging.getLogger().setLevel(logging.CRITICAL)  # peers log at WARNING under load
    payload = json.loads(sys.stdin.read())
    spec = spec_by_key(payload["stack"])
    config = BenchConfig.from_dict(payload["config"])
    started = time.perf_counter()
    with Sandbox(
        client_id="bench-client",
        client_secret=secrets.token_urlsafe(24),
        company="bench",
        token_ttl=config.long_ttl,
        token_latency=config.token_latency,
        in_process=False,
    ) as sandbox:
        scenarios = run_stack(spec, config, sandbox)
    document = {"stack": spec.key, "scenarios": scenarios, "seconds": time.perf_counter() - started}
    sys.stdout.write(json.dumps(document))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
