"""Fleets of real processes against one sandbox: one token per lifetime with a shared store.

Each worker is a separate Python process (``tests/stores/fleet_worker.py``) with its own
provider, threads and in-memory cache, as gunicorn workers or Kubernetes replicas would be.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from navro_adapters.sandbox import Sandbox

from .conftest import REPO_ROOT, RedisServer

pytestmark = pytest.mark.slow

PROCESSES = 8
THREADS = 25
TTL = 3.0  # seconds: a short token lifetime so three lifetimes fit in a test
LIFETIMES = 3
DURATION = TTL * LIFETIMES
STORE_CLOCK_SKEW = 0.1  # seconds; the default 5 s would outlive a short token
# Refresh in the last 25% of the life, so a refresh cycle is close to a lifetime, and stop
# serving a token 20% (0.6 s) before it expires: 200 threads on a 2-CPU host can hold a ping
# that long between get_token() and the server (seen on Python 3.12 and 3.13), and a token
# must not expire on the way.
REFRESH_FRACTION = 0.25
EXPIRY_FRACTION = 0.2
PING_EVERY = 1.0  # seconds between two /v1/ping calls of one worker thread
SPAWN_TIMEOUT = 30.0  # seconds for a worker process to import and say READY

# A secret registered with the suite's log guard (tests/conftest.py).
CLIENT_ID, CLIENT_SECRET, COMPANY = "fleet-client", "sandbox-secret", "acme"


@pytest.fixture(scope="module")
def fleet_sandbox() -> Iterator[Sandbox]:
    """The sandbox in its own process, so the test process's GIL is not on its path."""
    with Sandbox(CLIENT_ID, CLIENT_SECRET, COMPANY, token_ttl=TTL, in_process=False) as sandbox:
        yield sandbox


@pytest.fixture
def sandbox_reset(fleet_sandbox: Sandbox) -> Sandbox:
    fleet_sandbox.set_token_ttl(TTL)
    fleet_sandbox.set_token_latency(0.0)
    fleet_sandbox.reset_stats()
    return fleet_sandbox


class Worker:
    """A fleet_worker process and a thread that turns its stdout into a queue of lines."""

    def __init__(self, config: Dict[str, Any]) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.stores.fleet_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(REPO_ROOT),
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self._send(json.dumps(config))

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put("")  # end of output

    def _send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, word: str, timeout: float) -> str:
        """Wait for a line starting with ``word``; fail the test if it never comes."""
        give_up_at = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, give_up_at - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"worker {self.process.pid} did not say {word} in {timeout} s")
            if line.startswith(word):
                return line
            if line == "" and self.process.poll() is not None:
                pytest.fail(f"worker {self.process.pid} exited before saying {word}")

    def go(self) -> None:
        self._send("GO")

    def result(self, timeout: float) -> Dict[str, Any]:
        line = self.expect("RESULT", timeout)
        self.process.wait(timeout)
        parsed: Dict[str, Any] = json.loads(line[len("RESULT ") :])
        return parsed

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(5)


@pytest.fixture
def spawn() -> Iterator[Callable[[Dict[str, Any]], Worker]]:
    workers: List[Worker] = []

    def start(config: Dict[str, Any]) -> Worker:
        worker = Worker(config)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.kill()


def store_config(
    kind: str, tmp_path: Path, redis: Optional[RedisServer], name: str
) -> Dict[str, Any]:
    if kind == "file":
        return {"store": "file", "store_path": str(tmp_path / "fleet-tokens.json")}
    if kind == "redis":
        assert redis is not None
        return {
            "store": "redis",
            "redis_url": redis.url,
            "key_prefix": f"fleet:{name}:{time.time()}:",
        }
    return {"store": "none"}


def base_config(sandbox: Sandbox, **extra: Any) -> Dict[str, Any]:
    return {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "company": COMPANY,
        "base_url": sandbox.base_url,
        "store_clock_skew": STORE_CLOCK_SKEW,
        "refresh_fraction": REFRESH_FRACTION,
        "expiry_fraction": EXPIRY_FRACTION,
        **extra,
    }


def run_fleet(
    sandbox: Sandbox, spawn: Callable[[Dict[str, Any]], Worker], store: Dict[str, Any]
) -> Dict[str, Any]:
    config = base_config(
        sandbox, mode="fleet", threads=THREADS, duration=DURATION, ping_every=PING_EVERY, **store
    )
    workers = [spawn(config) for _ in range(PROCESSES)]
    for worker in workers:
        worker.expect("READY", SPAWN_TIMEOUT)
    sandbox.reset_stats()
    for worker in workers:
        worker.go()
    results = [worker.result(DURATION + 20) for worker in workers]
    stats = sandbox.stats()
    summary = {
        "token_requests": stats.token_requests,
        "per_lifetime": stats.token_requests / LIFETIMES,
        "provider_requests": sum(r["token_requests"] for r in results),
        "calls": sum(r["calls"] for r in results),
        "pings": sum(r["pings"] for r in results),
        "ping_401s": sum(r["ping_401s"] for r in results),
        "ping_errors": sum(r["ping_errors"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "served_expired": sum(r["served_expired"] for r in results),
        "api_401s": stats.api_401s,
    }
    print(f"\nfleet {store['store']}: {summary}")
    return summary


def assert_healthy(summary: Dict[str, Any]) -> None:
    assert summary["errors"] == 0
    assert summary["served_expired"] == 0, "get_token() returned an expired token"
    # A served token is only rejected if its ping outlives the expiry margin: on this 2-CPU
    # host a stall of a second or so (200 threads, other processes) expires one rotation's
    # pings in flight. Allow that, never a pattern: a bad token from a store fails them all.
    assert summary["ping_401s"] == summary["api_401s"] <= summary["pings"] // 4
    assert summary["ping_errors"] == 0
    assert summary["calls"] > PROCESSES * THREADS * 10
    assert summary["pings"] >= PROCESSES * THREADS * (LIFETIMES * TTL / PING_EVERY - 1)
    assert summary["provider_requests"] == summary["token_requests"]


_no_store_cache: Dict[str, Dict[str, Any]] = {}


@pytest.fixture
def no_store_fleet(
    sandbox_reset: Sandbox, spawn: Callable[[Dict[str, Any]], Worker], tmp_path: Path
) -> Dict[str, Any]:
    """The same fleet without a store, run once per module for the contrast."""
    if "summary" not in _no_store_cache:
        _no_store_cache["summary"] = run_fleet(sandbox_reset, spawn, {"store": "none"})
    return _no_store_cache["summary"]


@pytest.mark.timeout(60)
def test_fleet_without_a_store_fetches_once_per_process_per_lifetime(
    no_store_fleet: Dict[str, Any],
) -> None:
    assert_healthy(no_store_fleet)
    # Every process keeps its own cache: about PROCESSES requests per lifetime.
    assert no_store_fleet["per_lifetime"] >= PROCESSES * 0.75


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["file", "redis"])
def test_fleet_with_a_shared_store_fetches_once_per_lifetime(
    kind: str,
    no_store_fleet: Dict[str, Any],
    request: pytest.FixtureRequest,
    sandbox_reset: Sandbox,
    spawn: Callable[[Dict[str, Any]], Worker],
    tmp_path: Path,
) -> None:
    redis = request.getfixturevalue("redis_server") if kind == "redis" else None
    summary = run_fleet(sandbox_reset, spawn, store_config(kind, tmp_path, redis, "fleet"))
    assert_healthy(summary)
    # One request per lifetime for the whole fleet, plus one where a cycle straddles the end.
    assert summary["token_requests"] <= LIFETIMES + 2
    assert summary["per_lifetime"] <= 2.0
    assert no_store_fleet["token_requests"] >= 4 * summary["token_requests"]


# -- a lock holder killed mid-refresh ------------------------------------------------------------

HOLDER_LATENCY = 3.0  # seconds the sandbox takes to answer the holder's token request
DEADLINE = 2.0  # seconds: RetryPolicy deadline, so the lock ttl is DEADLINE + 1 s
LOCK_TTL = DEADLINE + 1.0
PEERS = 4
PEER_THREADS = 5


@pytest.mark.timeout(45)
@pytest.mark.parametrize("kind", ["file", "redis"])
def test_a_sigkilled_lock_holder_is_taken_over(
    kind: str,
    request: pytest.FixtureRequest,
    sandbox_reset: Sandbox,
    spawn: Callable[[Dict[str, Any]], Worker],
    tmp_path: Path,
) -> None:
    redis = request.getfixturevalue("redis_server") if kind == "redis" else None
    sandbox = sandbox_reset
    sandbox.set_token_ttl(300.0)
    sandbox.set_token_latency(HOLDER_LATENCY)
    store = store_config(kind, tmp_path, redis, "kill")
    common = base_config(
        sandbox,
        deadline=DEADLINE,
        attempt_timeout=DEADLINE,
        store_wait=LOCK_TTL + 3.0,  # peers wait for the lock to expire instead of fetching
        store_clock_skew=5.0,
        **store,
    )
    holder = spawn({**common, "mode": "holder", "threads": 1})
    peers = [spawn({**common, "mode": "peer", "threads": PEER_THREADS}) for _ in range(PEERS)]
    for worker in [holder, *peers]:
        worker.expect("READY", SPAWN_TIMEOUT)

    holder.go()
    holder.expect("LOCKED", 10)
    locked_at = time.monotonic()
    for peer in peers:
        peer.go()
    for peer in peers:
        peer.expect("BLOCKED", 10)  # each peer found the lock held and is polling the store
    # The holder announced LOCKED just before sending: wait until its request is in flight.
    give_up_at = time.monotonic() + 5.0
    while sandbox.stats().token_requests < 1 and time.monotonic() < give_up_at:
        time.sleep(0.01)
    assert sandbox.stats().token_requests == 1
    sandbox.set_token_latency(0.0)  # the next fetch (the takeover) answers at once
    holder.kill()
    killed_at = time.monotonic()

    results = [peer.result(LOCK_TTL + 10) for peer in peers]
    outcomes = [outcome for result in results for outcome in result["results"]]
    assert len(outcomes) == PEERS * PEER_THREADS
    assert all("fingerprint" in outcome for outcome in outcomes), outcomes
    assert len({outcome["fingerprint"] for outcome in outcomes}) == 1  # one token for all
    assert sandbox.stats().token_requests == 2  # the dead holder's, and one takeover
    assert sum(result["token_requests"] for result in results) == 1
    waited = time.monotonic() - killed_at
    if kind == "file":
        assert waited < 2.0  # the kernel freed the flock when the holder died
    else:
        # Redis frees the lock only when it expires, LOCK_TTL after the holder took it.
        assert time.monotonic() - locked_at >= LOCK_TTL - 0.2
        assert waited < LOCK_TTL + 2.0
