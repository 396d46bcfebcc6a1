"""The load scenarios, for thread-driven and task-driven stacks alike.

Each scenario gets a fresh driver (new client, new auth layer) and the worker's sandbox, and
returns plain JSON-able figures. Token requests are counted by the sandbox (the server's view,
the same for every stack); latencies, statuses and which Authorization value each request
carried are recorded by the caller.

* cold start: ``n`` callers released at once by a barrier, one request each;
* expiry contention: continuous load for ``duration`` with short-lived tokens, starting warm;
  every request is recorded as ``[start, latency, status, auth id, error index]``;
* revocation storm: ``n`` requests held by the sandbox (a delay fault each), every token revoked
  once all of them have arrived, so each of them is answered 401.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional

from navro_adapters.sandbox import Fault, Sandbox

from .stacks import AsyncDriver, CallResult, SyncDriver

__all__ = [
    "Ticker",
    "describe_error",
    "cold_start_async",
    "cold_start_threads",
    "contention_async",
    "contention_threads",
    "storm_async",
    "storm_threads",
]

STATS_POLL_INTERVAL = 0.005  # seconds between sandbox stats polls while waiting for arrivals
ARRIVAL_SHARE_OF_DELAY = 0.8  # revoke at the latest this far into the storm's server delay
JOIN_TIMEOUT = 120.0  # seconds; a stuck caller is reported, never waited for forever

STUCK = "Stuck"  # the error name of a caller still unanswered when the scenario ends
Record = List[Any]  # [start offset s, latency s, status, auth id, error index]


def _summarise(results: List[CallResult]) -> Dict[str, Any]:
    statuses: Dict[str, int] = {}
    errors: Dict[str, int] = {}
    for status, _auth, error in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if error:
            errors[error] = errors.get(error, 0) + 1
    ok = statuses.get("200", 0)
    return {
        "callers": len(results),
        "ok": ok,
        "failed": len(results) - ok,
        "statuses": statuses,
        "errors": errors,
    }


class _ErrorNames:
    """Error class names to small indexes, so records stay compact (0: no error)."""

    def __init__(self) -> None:
        self.names: List[str] = [""]
        self._index: Dict[str, int] = {"": 0}
        self._lock = threading.Lock()

    def index(self, name: str) -> int:
        found = self._index.get(name)
        if found is None:
            with self._lock:
                found = self._index.setdefault(name, len(self.names))
                if found == len(self.names):
                    self.names.append(name)
        return found


def _join_all(threads: List[threading.Thread], timeout: float = JOIN_TIMEOUT) -> int:
    """Join every thread within ``timeout`` seconds; the number still running."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return sum(thread.is_alive() for thread in threads)


# -- event-loop ticker --------------------------------------------------------------------------


class Ticker:
    """A task that sleeps ``interval`` in a loop and records how late each wake-up was.

    A tick's lag is its wake-up minus the instant it was due (when its sleep began plus
    ``interval``): the time the loop spent on other callbacks first. Every tick is kept as
    ``[due offset s, lag s]`` from ``origin`` (a ``perf_counter`` instant, the load's start in
    the contention scenario) so the analysis can take the worst lag around token rotations.
    """

    def __init__(self, interval: float, origin: Optional[float] = None) -> None:
        self.interval = interval
        self.origin = time.perf_counter() if origin is None else origin
        self.ticks: List[List[float]] = []
        self._stop = False
        self._task: Optional[asyncio.Task[None]] = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop:
            due = time.perf_counter() + self.interval
            await asyncio.sleep(self.interval)
            # a wake-up a little early (the loop's clock resolution) is no lag
            self.ticks.append([due - self.origin, max(0.0, time.perf_counter() - due)])

    async def stop(self) -> Dict[str, Any]:
        """Stop ticking; the worst lag and the count over 50 ms (and the ticks, for analysis)."""
        self._stop = True
        if self._task is not None:
            await self._task
        lags = [lag for _due, lag in self.ticks]
        return {
            "loop_stall_max_ms": max(lags, default=0.0) * 1000.0,
            "loop_stalls_over_50ms": float(sum(lag > 0.050 for lag in lags)),
        }


# -- cold start ----------------------------------------------------------------------------------


def cold_start_threads(driver: SyncDriver, callers: int, sandbox: Sandbox) -> Dict[str, Any]:
    sandbox.reset_stats()
    barrier = threading.Barrier(callers + 1)
    results: List[CallResult] = [(0, 0, "NotRun")] * callers
    finished = [0.0] * callers

    def one(index: int) -> None:
        barrier.wait()
        results[index] = driver.call()
        finished[index] = time.perf_counter()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(callers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    released = time.perf_counter()
    stuck = _join_all(threads)
    stats = sandbox.stats()
    return {
        **_summarise(results),
        "stuck_callers": stuck,
        "token_requests": stats.token_requests,
        "seconds_to_last_answer": max(finished) - released,
    }


async def cold_start_async(
    driver: AsyncDriver, callers: int, sandbox: Sandbox, ticker_interval: float
) -> Dict[str, Any]:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sandbox.reset_stats)
    gate = asyncio.Event()
    finished = [0.0] * callers

    async def one(index: int) -> CallResult:
        await gate.wait()
        result = await driver.call()
        finished[index] = time.perf_counter()
        return result

    tasks = [loop.create_task(one(i)) for i in range(callers)]
    await asyncio.sleep(0)  # every task is now parked on the gate
    ticker = Ticker(ticker_interval)
    ticker.start()
    released = time.perf_counter()
    gate.set()
    results = list(await asyncio.gather(*tasks))
    stall = await ticker.stop()
    stats = await loop.run_in_executor(None, sandbox.stats)
    return {
        **_summarise(results),
        "token_requests": stats.token_requests,
        "seconds_to_last_answer": max(finished) - released,
        **stall,
    }


# -- expiry contention ---------------------------------------------------------------------------


def _contention_result(
    records: List[Record], errors: _ErrorNames, warm: CallResult, warm_age: float, stats: Any
) -> Dict[str, Any]:
    records.sort(key=lambda record: float(record[0]))
    return {
        "records": records,
        "error_names": errors.names,
        "warm_status": warm[0],
        "warm_token_age_at_start": warm_age,  # seconds between the warm-up call and the load
        "token_requests": stats.token_requests,
        "server_api_requests": stats.api_requests,
        "server_api_401s": stats.api_401s,
    }


def contention_threads(
    driver: SyncDriver, callers: int, duration: float, sandbox: Sandbox
) -> Dict[str, Any]:
    warm_started = time.perf_counter()
    warm = driver.warm()
    sandbox.reset_stats()
    errors = _ErrorNames()
    per_thread: List[List[Record]] = [[] for _ in range(callers)]
    barrier = threading.Barrier(callers + 1)
    clock = [0.0, 0.0]  # [load start, stop at], written before the barrier opens

    def loop_calls(out: List[Record]) -> None:
        barrier.wait()
        start, stop_at = clock
        while True:
            began = time.perf_counter()
            if began >= stop_at:
                return
            status, auth, error = driver.call()
            ended = time.perf_counter()
            out.append([began - start, ended - began, status, auth, errors.index(error)])

    threads = [threading.Thread(target=loop_calls, args=(out,), daemon=True) for out in per_thread]
    for thread in threads:
        thread.start()
    clock[0] = time.perf_counter()
    clock[1] = clock[0] + duration
    barrier.wait()
    stuck = _join_all(threads)
    stats = sandbox.stats()
    records = [record for out in per_thread for record in out]
    result = _contention_result(records, errors, warm, clock[0] - warm_started, stats)
    result["stuck_callers"] = stuck
    return result


async def contention_async(
    driver: AsyncDriver,
    callers: int,
    duration: float,
    sandbox: Sandbox,
    ticker_interval: float,
) -> Dict[str, Any]:
    loop = asyncio.get_running_loop()
    warm_started = time.perf_counter()
    warm = await driver.warm()
    await loop.run_in_executor(None, sandbox.reset_stats)
    errors = _ErrorNames()
    records: List[Record] = []
    start = time.perf_counter()
    stop_at = start + duration

    async def loop_calls() -> None:
        while True:
            began = time.perf_counter()
            if began >= stop_at:
                return
            status, auth, error = await driver.call()
            ended = time.perf_counter()
            records.append([began - start, ended - began, status, auth, errors.index(error)])

    ticker = Ticker(ticker_interval, origin=start)
    ticker.start()
    await asyncio.gather(*(loop_calls() for _ in range(callers)))
    stall = await ticker.stop()
    stats = await loop.run_in_executor(None, sandbox.stats)
    return {
        **_contention_result(records, errors, warm, start - warm_started, stats),
        **stall,
        "ticks": ticker.ticks,
    }


# -- revocation storm ---------------------------------------------------------------------------


def _wait_for_arrivals(sandbox: Sandbox, expected: int, deadline: float) -> int:
    """Poll the sandbox until ``expected`` API requests arrived or ``deadline`` passed."""
    arrived = 0
    while True:
        arrived = sandbox.stats().api_requests
        if arrived >= expected or time.perf_counter() >= deadline:
            return arrived
        time.sleep(STATS_POLL_INTERVAL)


def _prepare_storm(sandbox: Sandbox, requests: int, delay: float) -> None:
    sandbox.reset_stats()
    sandbox.enqueue_api_faults(*[Fault.delay(delay)] * requests)


def _storm_result(
    results: List[CallResult], arrived: int, stats: Any, seconds: float
) -> Dict[str, Any]:
    return {
        **_summarise(results),
        "in_flight_at_revocation": arrived,
        "token_requests": stats.token_requests,
        "server_api_401s": stats.api_401s,
        "seconds": seconds,
    }


def storm_threads(
    driver: SyncDriver, requests: int, delay: float, grace: float, sandbox: Sandbox
) -> Dict[str, Any]:
    warm = driver.warm()
    if warm[0] != 200:
        return {"status": "error", "error": f"warm-up request answered {warm[0]} {warm[2]}"}
    _prepare_storm(sandbox, requests, delay)
    barrier = threading.Barrier(requests + 1)
    results: List[CallResult] = [(0, 0, STUCK)] * requests

    def one(index: int) -> None:
        barrier.wait()
        results[index] = driver.call()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(requests)]
    for thread in threads:
        thread.start()
    barrier.wait()
    released = time.perf_counter()
    arrived = _wait_for_arrivals(sandbox, requests, released + delay * ARRIVAL_SHARE_OF_DELAY)
    sandbox.revoke_all_tokens()
    stuck = _join_all(threads, max(0.0, released + delay + grace - time.perf_counter()))
    seconds = time.perf_counter() - released
    sandbox.clear_faults()
    result = _storm_result(results, arrived, sandbox.stats(), seconds)
    result["stuck_callers"] = stuck
    return result


async def storm_async(
    driver: AsyncDriver,
    requests: int,
    delay: float,
    grace: float,
    sandbox: Sandbox,
    ticker_interval: float,
) -> Dict[str, Any]:
    loop = asyncio.get_running_loop()

    def in_thread(call: Callable[[], Any]) -> Awaitable[Any]:
        return loop.run_in_executor(None, call)

    warm = await driver.warm()
    if warm[0] != 200:
        return {"status": "error", "error": f"warm-up request answered {warm[0]} {warm[2]}"}
    await in_thread(lambda: _prepare_storm(sandbox, requests, delay))
    ticker = Ticker(ticker_interval)
    ticker.start()
    released = time.perf_counter()
    calls = [loop.create_task(driver.call()) for _ in range(requests)]
    deadline = released + delay * ARRIVAL_SHARE_OF_DELAY
    arrived: int = await in_thread(lambda: _wait_for_arrivals(sandbox, requests, deadline))
    await in_thread(sandbox.revoke_all_tokens)
    _done, pending = await asyncio.wait(
        calls, timeout=max(0.0, released + delay + grace - time.perf_counter())
    )
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    results: List[CallResult] = [
        (0, 0, STUCK) if task in pending else task.result() for task in calls
    ]
    seconds = time.perf_counter() - released
    stall = await ticker.stop()
    await in_thread(sandbox.clear_faults)
    stats = await in_thread(sandbox.stats)
    return {
        **_storm_result(results, arrived, stats, seconds),
        "stuck_callers": len(pending),
        **stall,
    }


def describe_error(exc: BaseException) -> str:
    """An exception as ``Class: message``, cut short (messages here carry no secret)."""
    text = str(exc).replace("\n", " ")
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
