"""A fleet at scale: many workers as asyncio tasks over a few processes, one sandbox.

Each worker is a task with its own :class:`~navro_adapters.TokenProvider` (with a
:class:`~navro_adapters.stores.RedisStore` on one real ``redis-server``, or no store) calling
``await provider.aget_token()`` every :data:`CALL_INTERVAL` seconds for a few token lifetimes.
``python -m benchmarks.fleet_tasks`` prints one table; the runner calls :func:`run_task_fleet`.

Measured per fleet:

* ``token_requests_per_lifetime``: the sandbox's token POSTs over the number of token
  generations a worker went through (a lone provider makes one request per generation:
  target 1 with a shared store);
* ``redis_commands_per_worker_lifetime``: Redis commands (``INFO commandstats``, connection
  housekeeping left out) after the first lifetime, per worker per lifetime (target <= 3);
* ``store_call_p99_ms``: the store calls as the store wrapper timed them (on the worker thread);
* refresh spread: when each worker first saw each new token (with a store) or when each
  provider requested each of its tokens (without one), after the cold start. Without a store
  the fleet runs twice, with ``RefreshPolicy(refresh_jitter=0.0)`` and with the default, to
  show what refresh-ahead jitter does to a fleet's refreshes (``fleet-jitter.png``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import threading
import time
from contextlib import ExitStack
from typing import Any, Dict, List, Optional, Sequence

from navro_adapters import Credentials, RefreshPolicy, TokenProvider, TokenStore
from navro_adapters.errors import NavroAuthError
from navro_adapters.sandbox import Sandbox
from navro_adapters.store import TokenRecord

from .fleet import CLIENT_ID, CLIENT_SECRET, COMPANY, SKEW_FRACTION, SPAWN_TIMEOUT, _TemporaryRedis

__all__ = ["HOUSEKEEPING_COMMANDS", "TimedStore", "refresh_spread", "run_task_fleet"]

CALL_INTERVAL = 0.1  # seconds a worker task sleeps between two aget_token() calls
#: Commands a redis client sends to set up or inspect a connection, not to serve the store.
HOUSEKEEPING_COMMANDS = frozenset({"info", "client|setinfo", "client", "hello", "ping", "select"})


class TimedStore:
    """A TokenStore wrapper that records the wall instant and duration of every call."""

    def __init__(self, inner: TokenStore) -> None:
        self.inner = inner
        self.calls: List[List[float]] = []  # [wall instant, seconds]; appends are atomic
        self._lock = threading.Lock()

    def _timed(self, call: Any, *args: Any) -> Any:
        wall, started = time.time(), time.perf_counter()
        try:
            return call(*args)
        finally:
            self.calls.append([wall, time.perf_counter() - started])

    def load(self, key: str) -> Optional[TokenRecord]:
        result: Optional[TokenRecord] = self._timed(self.inner.load, key)
        return result

    def save(self, key: str, record: TokenRecord, ttl: float) -> None:
        self._timed(self.inner.save, key, record, ttl)

    def try_lock(self, key: str, owner: str, ttl: float) -> bool:
        return bool(self._timed(self.inner.try_lock, key, owner, ttl))

    def unlock(self, key: str, owner: str) -> None:
        self._timed(self.inner.unlock, key, owner)


def _policy(jitter: Optional[float]) -> Optional[RefreshPolicy]:
    """``RefreshPolicy(refresh_jitter=jitter)``, or the default policy for ``None``."""
    if jitter is None:
        return None
    return RefreshPolicy(refresh_jitter=jitter)  # type: ignore[call-arg,unused-ignore]


async def _worker_tasks(config: Dict[str, Any], ready: Any, go: Any) -> Dict[str, Any]:
    credentials = Credentials(CLIENT_ID, CLIENT_SECRET, COMPANY, base_url=config["base_url"])
    policy = _policy(config["jitter"])
    stores: List[TimedStore] = []
    providers: List[TokenProvider] = []
    for _ in range(config["tasks"]):
        store = None
        if config["redis_url"]:
            from navro_adapters.stores import RedisStore

            store = TimedStore(RedisStore(config["redis_url"], key_prefix=config["key_prefix"]))
            stores.append(store)
        providers.append(
            TokenProvider(
                credentials,
                store=store,
                refresh_policy=policy,
                store_clock_skew=config["ttl"] * SKEW_FRACTION,
            )
        )
    loop = asyncio.get_running_loop()
    ready.put(multiprocessing.current_process().pid)
    await loop.run_in_executor(None, go.wait)
    end_at = time.monotonic() + config["duration"]

    async def work(provider: TokenProvider) -> Dict[str, Any]:
        seen: List[List[float]] = []  # [token requested_at_wall, wall instant first seen]
        errors = 0
        while time.monotonic() < end_at:
            try:
                token = await provider.aget_token()
            except NavroAuthError:
                errors += 1
            else:
                if not seen or seen[-1][0] != token.requested_at_wall:
                    seen.append([token.requested_at_wall, time.time()])
            await asyncio.sleep(CALL_INTERVAL)
        return {"seen": seen, "errors": errors, "token_requests": provider.stats.token_requests}

    workers = await asyncio.gather(*(work(provider) for provider in providers))
    return {
        "workers": list(workers),
        "store_calls": [call for store in stores for call in store.calls],
    }


def _fleet_process(config: Dict[str, Any], ready: Any, go: Any, results: Any) -> None:
    """One process of the fleet (runs in a spawned child)."""
    try:
        results.put(asyncio.run(_worker_tasks(config, ready, go)))
    except Exception as exc:  # reported, so the parent does not wait for nothing
        ready.put(-1)
        results.put({"error": f"{type(exc).__name__}: {exc}"[:300]})


def _commands(redis_url: str) -> Dict[str, int]:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if isinstance(value, dict)
    }


def refresh_spread(refreshes: Sequence[Sequence[float]]) -> Dict[str, Optional[float]]:
    """How ``[generation, offset s]`` refreshes spread in time: per generation (the k-th
    token of every worker), the range and standard deviation of the instants, as the median
    over generations; and the most refreshes that fell in any one second (a sliding window)."""
    by_generation: Dict[int, List[float]] = {}
    for generation, offset in refreshes:
        by_generation.setdefault(int(generation), []).append(offset)
    if not by_generation:
        return {"range_s": None, "stdev_s": None, "busiest_second": None}
    groups = list(by_generation.values())
    return {
        "range_s": statistics.median(max(g) - min(g) for g in groups),
        "stdev_s": statistics.median(statistics.pstdev(g) for g in groups),
        "busiest_second": float(_busiest(sorted(offset for _g, offset in refreshes), 1.0)),
    }


def _busiest(instants: Sequence[float], width: float) -> int:
    """The most of the sorted ``instants`` that fall in any span ``[t, t + width)``."""
    most, first = 0, 0
    for last, instant in enumerate(instants):
        while instants[first] <= instant - width:
            first += 1
        most = max(most, last - first + 1)
    return most


def _percentile(values: Sequence[float], fraction: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_task_fleet(
    processes: int = 4,
    tasks: int = 250,
    ttl: float = 3.0,
    lifetimes: float = 3.0,
    *,
    store: str = "redis",
    jitter: Optional[float] = None,
    redis_url: Optional[str] = None,
) -> Dict[str, Any]:
    """Run one fleet (see the module docstring); ``store`` is ``"redis"`` or ``"none"``,
    ``jitter`` a ``refresh_jitter`` (``None``: the default policy)."""
    if store not in ("redis", "none"):
        raise ValueError("store must be 'redis' or 'none'")
    duration = ttl * lifetimes
    with ExitStack() as stack:
        if store == "redis" and redis_url is None:
            server = _TemporaryRedis()
            stack.callback(server.close)
            redis_url = server.url
        sandbox = stack.enter_context(
            Sandbox(CLIENT_ID, CLIENT_SECRET, COMPANY, token_ttl=ttl, in_process=False)
        )
        config = {
            "base_url": sandbox.base_url,
            "ttl": ttl,
            "duration": duration,
            "tasks": tasks,
            "jitter": jitter,
            "redis_url": redis_url if store == "redis" else None,
            "key_prefix": f"navro-bench:{time.time_ns()}:",
        }
        context = multiprocessing.get_context("spawn")
        ready, results, go = context.Queue(), context.Queue(), context.Event()
        workers = [
            context.Process(target=_fleet_process, args=(config, ready, go, results), daemon=True)
            for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        try:
            started = [ready.get(timeout=SPAWN_TIMEOUT) for _ in workers]
            if -1 in started:
                raise RuntimeError(results.get(timeout=SPAWN_TIMEOUT).get("error", "failed"))
            sandbox.reset_stats()
            go_wall = time.time()
            go.set()
            steady: Dict[str, Any] = {}
            if redis_url and store == "redis":
                time.sleep(ttl)  # the first lifetime is the cold start: steady state after it
                steady = {"from_wall": time.time(), "before": _commands(redis_url)}
            reports = [results.get(timeout=duration + SPAWN_TIMEOUT) for _ in workers]
            if steady:
                steady.update(until_wall=time.time(), after=_commands(str(redis_url)))
        finally:
            for worker in workers:
                worker.join(5)
                if worker.is_alive():
                    worker.kill()
        failed = [report["error"] for report in reports if "error" in report]
        if failed:
            raise RuntimeError(failed[0])
        stats = sandbox.stats()
    return _figures(reports, stats, config, processes, go_wall, steady)


def _figures(
    reports: List[Dict[str, Any]],
    stats: Any,
    config: Dict[str, Any],
    processes: int,
    go_wall: float,
    steady: Dict[str, Any],
) -> Dict[str, Any]:
    workers = [worker for report in reports for worker in report["workers"]]
    generations = statistics.median(len(worker["seen"]) for worker in workers) if workers else 0
    # [generation, offset]: with a shared store when each worker first saw each token after
    # its first; alone, when each provider requested each of its tokens after its first
    instant = 1 if config["redis_url"] else 0
    refreshes = [
        [generation, pair[instant] - go_wall]
        for w in workers
        for generation, pair in enumerate(w["seen"][1:], start=1)
    ]
    store_calls = [call for report in reports for call in report["store_calls"]]
    result: Dict[str, Any] = {
        "store": "redis" if config["redis_url"] else "none",
        "jitter": "default" if config["jitter"] is None else config["jitter"],
        "processes": processes,
        "tasks_per_process": config["tasks"],
        "workers": len(workers),
        "ttl": config["ttl"],
        "duration": config["duration"],
        "token_requests": stats.token_requests,
        "generations": generations,
        "token_requests_per_lifetime": stats.token_requests / generations if generations else None,
        "errors": sum(worker["errors"] for worker in workers),
        "refreshes": refreshes,  # [generation, seconds after the start]
        "refresh_spread": refresh_spread(refreshes),
    }
    if store_calls:
        seconds = [duration for _wall, duration in store_calls]
        result["store_calls"] = len(store_calls)
        result["store_call_p50_ms"] = (_percentile(seconds, 0.50) or 0.0) * 1e3
        result["store_call_p99_ms"] = (_percentile(seconds, 0.99) or 0.0) * 1e3
        result["store_call_max_ms"] = max(seconds) * 1e3
    if steady:
        before, after = steady["before"], steady["after"]
        deltas = {
            name: after.get(name, 0) - before.get(name, 0)
            for name in after
            if name not in HOUSEKEEPING_COMMANDS and after.get(name, 0) > before.get(name, 0)
        }
        window = steady["until_wall"] - steady["from_wall"]
        per_worker_lifetime = (
            sum(deltas.values()) / len(workers) / (window / config["ttl"])
            if workers and window > 0
            else None
        )
        result.update(
            redis_commands_steady=deltas,
            steady_window_s=window,
            redis_commands_per_worker_lifetime=per_worker_lifetime,
        )
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet_tasks")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=250)
    parser.add_argument("--ttl", type=float, default=3.0)
    parser.add_argument("--lifetimes", type=float, default=3.0)
    parser.add_argument("--store", choices=("redis", "none"), default="redis")
    parser.add_argument("--jitter", type=float, default=None, help="refresh_jitter (default: on)")
    args = parser.parse_args(argv)
    row = run_task_fleet(
        args.processes, args.tasks, args.ttl, args.lifetimes, store=args.store, jitter=args.jitter
    )
    row.pop("refreshes")
    for name, value in row.items():
        print(f"{name:<36} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
