"""The niquests stacks: ``Session`` driven by threads and ``AsyncSession`` by tasks.

Kept apart from :mod:`benchmarks.stacks` (which dispatches here) so that module stays about
one library family. Each stack has its no-auth baseline with the fixed headers on the session,
and ours with ``NavroAuth(credentials, session=session)`` / ``AsyncNavroAuth(...)``, token
requests through the caller's session as the README's first example shows.
"""

from __future__ import annotations

import datetime
import time
from typing import Any, Dict, List, Tuple
from urllib.parse import urlsplit

from .hooks import API_VERSION_HEADER, API_VERSION_VALUE, same_job_requests_auth

__all__ = [
    "ASYNC_KEYS",
    "SYNC_KEYS",
    "AsyncNiquestsDriver",
    "NiquestsDriver",
    "hook_cost_async",
    "hook_cost_sync",
    "make_async_driver",
    "make_sync_driver",
]

SYNC_KEYS = frozenset({"baseline-niquests", "navro-niquests"})
ASYNC_KEYS = frozenset({"baseline-niquests-async", "navro-niquests-async"})
_ELAPSED = datetime.timedelta(milliseconds=1)  # what a canned answer says it took


def _pool(target: Any) -> Dict[str, int]:
    size = target.config.pool_size
    return {"pool_connections": 1, "pool_maxsize": size}


class NiquestsDriver:
    """Threads sharing one ``niquests.Session``."""

    def __init__(self, session: Any, target: Any, closers: Tuple[Any, ...] = ()) -> None:
        from .stacks import AuthIds

        self.session = session
        self.url = target.ping_url
        self.ids = AuthIds()
        self.timeout = target.config.request_timeout
        self._closers = closers

    def warm(self) -> Tuple[int, int, str]:
        return self.call()

    def call(self) -> Tuple[int, int, str]:
        try:
            response = self.session.get(self.url, timeout=self.timeout)
            response.content  # noqa: B018 - read the body, as a caller would
            sent = response.request.headers.get("Authorization")
            return int(response.status_code or 0), self.ids.id_of(sent), ""
        except Exception as exc:
            return 0, 0, type(exc).__name__

    def close(self) -> None:
        for closer in self._closers:
            closer()
        self.session.close()


class AsyncNiquestsDriver:
    """Tasks sharing one ``niquests.AsyncSession``; ours passes its auth per request."""

    def __init__(self, session: Any, target: Any, auth: Any = None) -> None:
        from .stacks import AuthIds

        self.session = session
        self.auth = auth
        self.url = target.ping_url
        self.ids = AuthIds()
        self.timeout = target.config.request_timeout

    async def warm(self) -> Tuple[int, int, str]:
        return await self.call()

    async def call(self) -> Tuple[int, int, str]:
        try:
            response = await self.session.get(self.url, auth=self.auth, timeout=self.timeout)
            sent = response.request.headers.get("Authorization")
            return int(response.status_code or 0), self.ids.id_of(sent), ""
        except Exception as exc:
            return 0, 0, type(exc).__name__

    async def aclose(self) -> None:
        await self.session.close()


def make_sync_driver(key: str, target: Any) -> NiquestsDriver:
    import niquests

    from navro_adapters.niquests import NavroAuth

    if key == "baseline-niquests":
        fixed = {"Authorization": target.fixed_authorization, API_VERSION_HEADER: API_VERSION_VALUE}
        return NiquestsDriver(niquests.Session(headers=fixed, **_pool(target)), target)
    session = niquests.Session(**_pool(target))
    auth = NavroAuth(target.credentials, session=session)
    session.auth = auth
    return NiquestsDriver(session, target)


async def make_async_driver(key: str, target: Any) -> AsyncNiquestsDriver:
    import niquests

    from navro_adapters.niquests import AsyncNavroAuth

    if key == "baseline-niquests-async":
        fixed = {"Authorization": target.fixed_authorization, API_VERSION_HEADER: API_VERSION_VALUE}
        return AsyncNiquestsDriver(niquests.AsyncSession(headers=fixed, **_pool(target)), target)
    session = niquests.AsyncSession(**_pool(target))
    return AsyncNiquestsDriver(session, target, AsyncNavroAuth(target.credentials, session=session))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _answer(prepared: Any) -> Any:
    import niquests

    response = niquests.Response()
    response.status_code = 200
    response.request = prepared
    response.elapsed = _ELAPSED
    return response


def same_job_async_auth(authorization: str, origin: str) -> Any:
    """An ``AsyncAuthBase`` doing our job: origin check, both headers, an async 401 hook."""
    from niquests.auth import AsyncAuthBase

    prefix = origin.rstrip("/") + "/"
    seen: List[int] = []

    async def check_401(response: Any, **_kwargs: Any) -> Any:
        if response.status_code == 401:
            seen.append(1)
        return response

    class SameJobAsyncAuth(AsyncAuthBase):  # type: ignore[misc]
        async def __call__(self, r: Any) -> Any:
            if not r.url.startswith(prefix):
                return r
            r.headers["Authorization"] = authorization
            if API_VERSION_HEADER not in r.headers:
                r.headers[API_VERSION_HEADER] = API_VERSION_VALUE
            r.register_hook("response", check_401)
            return r

    return SameJobAsyncAuth()


def hook_cost_sync(
    driver: NiquestsDriver, fixed_authorization: str, alternate: Any, timed: Any
) -> Any:
    """Ours against the same-job hook: the auth call and its response hook on a 200.
    ``timed`` makes a loop of a call; ``alternate`` runs the loops (benchmarks.overhead's)."""
    import niquests
    from niquests.auth import AuthBase

    prepared = niquests.Request("GET", driver.url).prepare()
    response = _answer(prepared)
    same_job = same_job_requests_auth(fixed_authorization, _origin(driver.url), AuthBase)

    def one_request(auth: Any) -> None:
        auth(prepared)
        for hook in prepared.hooks["response"]:
            hook(response)
        prepared.hooks["response"].clear()

    stack = driver.session.auth
    return alternate(
        {
            "stack": timed(lambda: one_request(stack)),
            "same_job": timed(lambda: one_request(same_job)),
        },
        "auth(prepared_request) + its response hooks on a 200",
    )


async def hook_cost_async(
    driver: AsyncNiquestsDriver, fixed_authorization: str, alternate: Any
) -> Any:
    """:func:`hook_cost_sync` for ``AsyncNavroAuth`` (awaited auth, awaited hooks)."""
    import niquests

    prepared = niquests.Request("GET", driver.url).prepare()
    response = _answer(prepared)
    same_job = same_job_async_auth(fixed_authorization, _origin(driver.url))

    def loop(auth: Any) -> Any:
        async def run(number: int) -> float:
            started = time.perf_counter_ns()
            for _ in range(number):
                await auth(prepared)
                for hook in prepared.hooks["response"]:
                    await hook(response)
                prepared.hooks["response"].clear()
            return (time.perf_counter_ns() - started) / number

        return run

    return await alternate(
        {"stack": loop(driver.auth), "same_job": loop(same_job)},
        "await auth(prepared_request) + its response hooks on a 200",
    )
