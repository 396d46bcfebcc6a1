"""Fleet benchmark: token requests per lifetime for N processes, with and without a shared store.

Run ``python -m benchmarks.fleet`` from the repository root for a small table, or call
:func:`run_fleet` from code. Every worker is a real process (multiprocessing, spawn) with its
own :class:`~navro_adapters.TokenProvider` and threads calling ``GET /v1/ping`` through
``urllib``, against one sandbox running in its own process.

Measured per run:

* ``token_requests_per_lifetime``: token POSTs seen by the sandbox divided by the number of
  token lifetimes in the run, for the whole fleet;
* ``ping_p50_ms`` / ``ping_p99_ms``: latency of one ``provider.get_token()`` plus one
  ``GET /v1/ping`` as a worker thread sees it;
* ``hot_path_ns_without_store`` / ``hot_path_ns_with_store``: the cost of one
  ``provider.get_token()`` while the cached token is fresh, and ``hot_path_store_calls``, the
  number of store calls made during those calls (always 0: the store is only used on refresh).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from typing import Any, Dict, List, Optional

from navro_adapters import Credentials, TokenProvider, TokenStore
from navro_adapters.errors import NavroAuthError
from navro_adapters.sandbox import Sandbox
from navro_adapters.store import TokenRecord

STORE_KINDS = ("none", "file", "redis")
THINK_TIME = 0.01  # seconds a worker thread pauses between two pings, so the host is not saturated
PING_TIMEOUT = 10.0  # seconds for one GET /v1/ping
HOT_PATH_CALLS = 200_000  # get_token() calls timed on the hot path
SPAWN_TIMEOUT = 60.0  # seconds for every worker process to start and report ready
REDIS_START_TIMEOUT = 10.0  # seconds for a temporary redis-server to accept connections
SKEW_FRACTION = 0.05  # of the token lifetime: store_clock_skew for short benchmark tokens
CLIENT_ID, CLIENT_SECRET, COMPANY = "bench-client", "bench-secret", "acme"


class CountingStore:
    """A TokenStore wrapper that counts every call, to prove the hot path never reaches it."""

    def __init__(self, inner: TokenStore) -> None:
        self.inner = inner
        self.calls = 0
        self._lock = threading.Lock()

    def _count(self) -> None:
        with self._lock:
            self.calls += 1

    def load(self, key: str) -> Optional[TokenRecord]:
        self._count()
        return self.inner.load(key)

    def save(self, key: str, record: TokenRecord, ttl: float) -> None:
        self._count()
        self.inner.save(key, record, ttl)

    def try_lock(self, key: str, owner: str, ttl: float) -> bool:
        self._count()
        return self.inner.try_lock(key, owner, ttl)

    def unlock(self, key: str, owner: str) -> None:
        self._count()
        self.inner.unlock(key, owner)


def _build_store(spec: Dict[str, Any]) -> Optional[TokenStore]:
    if spec["kind"] == "file":
        from navro_adapters.stores import FileStore

        return FileStore(spec["path"])
    if spec["kind"] == "redis":
        from navro_adapters.stores import RedisStore

        return RedisStore(spec["url"], key_prefix=spec["key_prefix"])
    return None


def _provider(config: Dict[str, Any], store: Optional[TokenStore]) -> TokenProvider:
    credentials = Credentials(CLIENT_ID, CLIENT_SECRET, COMPANY, base_url=config["base_url"])
    return TokenProvider(credentials, store=store, store_clock_skew=config["ttl"] * SKEW_FRACTION)


def _fleet_worker(config: Dict[str, Any], ready: Any, go: Any, results: Any) -> None:
    """One process of the fleet (runs in a spawned child)."""
    provider = _provider(config, _build_store(config["store"]))
    ping_url = config["base_url"] + "/v1/ping"
    latencies: List[float] = []
    errors = [0]
    lock = threading.Lock()
    ready.put(os.getpid())
    go.wait()
    end_at = time.monotonic() + config["duration"]

    def loop() -> None:
        mine: List[float] = []
        failed = 0
        while time.monotonic() < end_at:
            started = time.perf_counter()
            try:
                token = provider.get_token()
                request = urllib.request.Request(
                    ping_url, headers={"Authorization": token.authorization}
                )
                with urllib.request.urlopen(request, timeout=PING_TIMEOUT) as response:
                    response.read()
                mine.append(time.perf_counter() - started)
            except urllib.error.HTTPError as exc:
                failed += 1
                if exc.code == 401:
                    provider.invalidate(token)
            except (NavroAuthError, OSError):
                failed += 1
            time.sleep(THINK_TIME)
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=loop) for _ in range(config["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(
        {
            "latencies": latencies,
            "errors": errors[0],
            "token_requests": provider.stats.token_requests,
        }
    )


def _hot_path_ns(provider: TokenProvider) -> float:
    provider.get_token()  # warm: the token is cached and fresh from here on
    get_token = provider.get_token
    started = time.perf_counter()
    for _ in range(HOT_PATH_CALLS):
        get_token()
    return (time.perf_counter() - started) / HOT_PATH_CALLS * 1e9


def _percentile(samples: List[float], fraction: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class _TemporaryRedis:
    """A throwaway redis-server on a free loopback port (nothing persisted)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self._directory = tempfile.TemporaryDirectory(prefix="navro-bench-redis-")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._directory.name,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        give_up_at = time.monotonic() + REDIS_START_TIMEOUT
        while time.monotonic() < give_up_at:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        self.close()
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(5)
        self._directory.cleanup()


def run_fleet(
    processes: int = 4,
    threads: int = 10,
    ttl: float = 2.0,
    duration: float = 6.0,
    store_kind: str = "none",
    *,
    redis_url: Optional[str] = None,
) -> Dict[str, Any]:
    """Run one fleet and return its figures (see the module docstring).

    ``store_kind`` is ``"none"``, ``"file"`` (a temporary directory) or ``"redis"``
    (``redis_url``, or a temporary redis-server when it is not given).
    """
    if store_kind not in STORE_KINDS:
        raise ValueError(f"store_kind must be one of {STORE_KINDS}")
    with ExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="navro-bench-"))
        store_spec: Dict[str, Any] = {"kind": store_kind}
        if store_kind == "file":
            store_spec["path"] = os.path.join(directory, "tokens.json")
        elif store_kind == "redis":
            if redis_url is None:
                redis = _TemporaryRedis()
                stack.callback(redis.close)
                redis_url = redis.url
            store_spec.update(url=redis_url, key_prefix=f"navro-bench:{time.time_ns()}:")
        sandbox = stack.enter_context(
            Sandbox(CLIENT_ID, CLIENT_SECRET, COMPANY, token_ttl=ttl, in_process=False)
        )
        config = {
            "base_url": sandbox.base_url,
            "ttl": ttl,
            "duration": duration,
            "threads": threads,
            "store": store_spec,
        }
        context = multiprocessing.get_context("spawn")
        ready, results, go = context.Queue(), context.Queue(), context.Event()
        workers = [
            context.Process(target=_fleet_worker, args=(config, ready, go, results), daemon=True)
            for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        try:
            for _ in workers:
                ready.get(timeout=SPAWN_TIMEOUT)
            sandbox.reset_stats()
            go.set()
            reports = [results.get(timeout=duration + SPAWN_TIMEOUT) for _ in workers]
        finally:
            for worker in workers:
                worker.join(5)
                if worker.is_alive():
                    worker.kill()
        stats = sandbox.stats()
        latencies = [sample for report in reports for sample in report["latencies"]]

        # The hot path, in this process, on a long-lived token so no refresh falls inside.
        sandbox.set_token_ttl(300.0)
        hot_config = dict(config, ttl=300.0)
        without_store = _hot_path_ns(_provider(hot_config, None))
        hot_spec = (
            store_spec
            if store_kind != "none"
            else {"kind": "file", "path": os.path.join(directory, "hot-path.json")}
        )
        hot_store = _build_store(hot_spec)
        assert hot_store is not None
        counting = CountingStore(hot_store)
        with_store_provider = _provider(hot_config, counting)
        with_store_provider.get_token()
        calls_before = counting.calls
        with_store = _hot_path_ns(with_store_provider)
        store_calls = counting.calls - calls_before
        lifetimes = duration / ttl
        return {
            "store": store_kind,
            "processes": processes,
            "threads": threads,
            "ttl": ttl,
            "duration": duration,
            "token_requests": stats.token_requests,
            "token_requests_per_lifetime": stats.token_requests / lifetimes,
            "pings": len(latencies),
            "errors": sum(report["errors"] for report in reports),
            "api_401s": stats.api_401s,
            "ping_p50_ms": statistics.median(latencies) * 1e3 if latencies else float("nan"),
            "ping_p99_ms": _percentile(latencies, 0.99) * 1e3,
            "hot_path_ns_without_store": without_store,
            "hot_path_ns_with_store": with_store,
            "hot_path_store": hot_spec["kind"],
            "hot_path_store_calls": store_calls,
        }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--stores", default=",".join(STORE_KINDS))
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args(argv)
    header = (
        f"{'store':<6} {'token req':>9} {'req/lifetime':>12} {'pings':>7} {'errors':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'hot ns (no store)':>17} {'hot ns (store)':>14} "
        f"{'store calls':>11}"
    )
    print(
        f"{args.processes} processes x {args.threads} threads, token ttl {args.ttl:g} s, "
        f"{args.duration:g} s ({args.duration / args.ttl:g} lifetimes)"
    )
    print(header)
    print("-" * len(header))
    for kind in args.stores.split(","):
        try:
            row = run_fleet(
                args.processes,
                args.threads,
                args.ttl,
                args.duration,
                kind.strip(),
                redis_url=args.redis_url,
            )
        except RuntimeError as exc:
            print(f"{kind:<6} skipped: {exc}")
            continue
        print(
            f"{row['store']:<6} {row['token_requests']:>9} "
            f"{row['token_requests_per_lifetime']:>12.2f} {row['pings']:>7} {row['errors']:>6} "
            f"{row['ping_p50_ms']:>7.2f} {row['ping_p99_ms']:>7.2f} "
            f"{row['hot_path_ns_without_store']:>17.0f} {row['hot_path_ns_with_store']:>14.0f} "
            f"{row['hot_path_store_calls']:>11}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
