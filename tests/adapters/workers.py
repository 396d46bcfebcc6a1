"""What the spawned worker processes of ``test_worker_processes.py`` run (importable by name).

Each worker gets an unpickled adapter, makes real requests with it and reports what it saw:
``(pid, status codes, fingerprint of its token, token requests its provider sent)``.
"""

from __future__ import annotations

import asyncio
import os
from typing import List, Tuple

import aiohttp
import httpx
import requests

from navro_adapters import TokenProvider
from navro_adapters.aiohttp import NavroAuthMiddleware
from navro_adapters.httpx import NavroAuth as HttpxAuth

Report = Tuple[int, List[int], str, int]


def _report(statuses: List[int], provider: TokenProvider) -> Report:
    token = provider.token
    return os.getpid(), statuses, token.fingerprint if token else "", provider.stats.token_requests


def with_requests_session(session: requests.Session, url: str, calls: int) -> Report:
    statuses = [session.get(url).status_code for _ in range(calls)]
    auth = session.auth
    assert auth is not None and hasattr(auth, "provider")
    return _report(statuses, auth.provider)


def with_httpx_client(auth: HttpxAuth, url: str, calls: int) -> Report:
    with httpx.Client(auth=auth) as client:
        statuses = [client.get(url).status_code for _ in range(calls)]
    return _report(statuses, auth.provider)


def with_aiohttp_session(middleware: NavroAuthMiddleware, url: str, calls: int) -> Report:
    async def run() -> List[int]:
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            statuses = []
            for _ in range(calls):
                async with session.get(url) as response:
                    statuses.append(response.status)
            return statuses

    return _report(asyncio.run(run()), middleware.provider)


def with_niquests_session(session: object, url: str, calls: int) -> Report:
    auth = getattr(session, "auth", None)
    assert auth is not None and hasattr(auth, "provider")
    statuses = [session.get(url).status_code for _ in range(calls)]  # type: ignore[attr-defined]
    return _report(statuses, auth.provider)


def with_niquests_async_session(auth: object, url: str, calls: int) -> Report:
    import niquests  # only where the niquests tests run: it is an optional extra

    async def run() -> List[int]:
        async with niquests.AsyncSession() as session:
            return [(await session.get(url, auth=auth)).status_code for _ in range(calls)]

    provider = getattr(auth, "provider", None)
    assert isinstance(provider, TokenProvider)
    return _report(asyncio.run(run()), provider)
