"""The cancellation storm, run as a script in a fresh interpreter with ``-X dev -W error``.

1,000 tasks await one token fetch; half of them are cancelled at random instants (before,
during and after the fetch). Prints one JSON line of figures; exits non-zero on any broken
invariant. ``-X dev`` turns on asyncio debug mode (un-awaited coroutines, un-retrieved task
exceptions and destroyed pending tasks are reported), ``-W error`` makes any warning fatal, and
a handler on the ``asyncio`` logger fails the run if asyncio logs anything at all.

Usage: ``python -X dev -W error -m tests.reliability.storm [sandbox-base-url secret]``; with a
sandbox URL a second storm runs through the aiohttp adapter against it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import random
import sys
from typing import Any, Dict, List, Optional

from navro_adapters import Credentials, TokenProvider, TokenRequest, TransportResponse

TASKS = 1000
FETCH_SECONDS = 0.3  # how long the one token fetch takes
CANCEL_WINDOW = 0.6  # cancellations land anywhere from before the fetch to after it


class _Complaints(logging.Handler):
    def __init__(self) -> None:
        # WARNING and up: what asyncio debug mode reports about destroyed pending tasks,
        # never-retrieved exceptions and never-awaited coroutines (DEBUG is selector chatter).
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.getMessage()}")


class SlowTransport:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        self.calls += 1
        await asyncio.sleep(FETCH_SECONDS)
        body = json.dumps({"access_token": f"storm-{self.calls}", "expires_in": 300})
        return TransportResponse.build(200, {}, body.encode())


async def _storm(call: Any, provider: TokenProvider, rng: random.Random) -> Dict[str, Any]:
    loop = asyncio.get_running_loop()
    loop.slow_callback_duration = 30.0  # a loaded CI machine is slow; that is not the point
    tasks = [loop.create_task(call()) for _ in range(TASKS)]
    # The first task starts the fetch: it is always among the cancelled, the fetch must not care.
    doomed = [0, *rng.sample(range(1, TASKS), TASKS // 2 - 1)]
    for index in doomed:
        loop.call_later(rng.uniform(0.0, CANCEL_WINDOW), tasks[index].cancel)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(CANCEL_WINDOW)  # every scheduled cancel has fired
    cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
    values = [r for r in results if not isinstance(r, BaseException)]
    errors = [repr(r) for r in results if isinstance(r, Exception)]
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    return {
        "tasks": TASKS,
        "cancelled": cancelled,
        "completed": len(values),
        "distinct_results": len(set(values)),
        "errors": errors[:3],
        "pending_tasks": len(pending),
        "flight_left": provider.fetching,
    }


async def core_storm() -> Dict[str, Any]:
    transport = SlowTransport()
    credentials = Credentials(
        "storm", "storm-secret-never-shown", "acme", token_url="http://127.0.0.1:9/t"
    )
    provider = TokenProvider(credentials, async_transport=transport)

    async def call() -> str:
        token = await provider.aget_token()
        return token.fingerprint

    figures = await _storm(call, provider, random.Random(1))
    figures["token_requests"] = transport.calls
    return figures


async def aiohttp_storm(base_url: str, secret: str) -> Dict[str, Any]:
    import aiohttp

    from navro_adapters.aiohttp import NavroAuthMiddleware

    credentials = Credentials("sandbox-client", secret, "acme", base_url=base_url)
    middleware = NavroAuthMiddleware(credentials)
    connector = aiohttp.TCPConnector(limit=TASKS)
    async with aiohttp.ClientSession(connector=connector, middlewares=(middleware,)) as session:

        async def call() -> int:
            async with session.get(f"{base_url}/v1/ping") as response:
                await response.read()
                return response.status

        figures = await _storm(call, middleware.provider, random.Random(2))
        figures["token_requests"] = middleware.provider.stats.token_requests
    return figures


def main(argv: List[str]) -> int:
    complaints = _Complaints()
    logging.getLogger("asyncio").addHandler(complaints)
    logging.getLogger("asyncio").setLevel(logging.DEBUG)
    out: Dict[str, Optional[Dict[str, Any]]] = {"core": None, "aiohttp": None}
    out["core"] = asyncio.run(core_storm(), debug=True)
    if len(argv) >= 2:
        out["aiohttp"] = asyncio.run(aiohttp_storm(argv[0], argv[1]), debug=True)
    gc.collect()
    out["asyncio_log"] = complaints.messages[:5]  # type: ignore[assignment]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
