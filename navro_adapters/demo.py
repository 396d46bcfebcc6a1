"""The demo: every installed adapter against the embedded sandbox, summed up in a table.

Each row builds one adapter from the sandbox's credentials, sends a few concurrent requests to
the protected ``/v1/ping`` endpoint and reports the statuses and how many token requests it
cost. The last row shares one ``TokenProvider`` between every adapter: one token for all.
"""

from __future__ import annotations

import asyncio
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .credentials import Credentials
from .errors import NavroAuthError
from .provider import TokenProvider
from .sandbox import Sandbox

REQUESTS_PER_ROW = 8  # concurrent calls per adapter: enough to show one token serves them all

Source = Union[Credentials, TokenProvider]
Runner = Callable[[Source, str, int], List[int]]


@dataclass
class Row:
    adapter: str
    statuses: str
    token_fetches: int
    note: str = ""
    ok: bool = True


def _threads(call: Callable[[], int], count: int) -> List[int]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda _: call(), range(count)))


def _run_core(source: Source, url: str, count: int) -> List[int]:
    import urllib.request

    provider = source if isinstance(source, TokenProvider) else TokenProvider(source)

    def call() -> int:
        token = provider.get_token()
        request = urllib.request.Request(
            url, headers={"Authorization": token.authorization, "X-API-Version": "1"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)

    return _threads(call, count)


def _run_requests(source: Source, url: str, count: int) -> List[int]:
    import requests

    from .requests import NavroAuth

    with requests.Session() as session:
        session.auth = NavroAuth(source, session=session)
        return _threads(lambda: session.get(url, timeout=10).status_code, count)


def _run_niquests(source: Source, url: str, count: int) -> List[int]:
    import niquests

    from .niquests import NavroAuth

    with niquests.Session() as session:
        session.auth = NavroAuth(source, session=session)
        return _threads(lambda: int(session.get(url, timeout=10).status_code or 0), count)


def _run_niquests_async(source: Source, url: str, count: int) -> List[int]:
    import niquests

    from .niquests import AsyncNavroAuth

    async def main() -> List[int]:
        async with niquests.AsyncSession() as session:
            auth = AsyncNavroAuth(source, session=session)  # per request: typed as async there
            calls = [session.get(url, auth=auth, timeout=10) for _ in range(count)]
            return [int(r.status_code or 0) for r in await asyncio.gather(*calls)]

    return asyncio.run(main())


def _httpx_module() -> Any:
    """httpx, or its successor httpx2 when only that is installed (same API)."""
    try:
        import httpx
    except ImportError:
        import httpx2 as httpx  # type: ignore[import-not-found,no-redef,unused-ignore]
    return httpx


def _run_httpx(source: Source, url: str, count: int) -> List[int]:
    from .httpx import NavroAuth

    httpx = _httpx_module()
    with httpx.Client(auth=NavroAuth(source)) as client:
        return _threads(lambda: client.get(url).status_code, count)


def _run_httpx_async(source: Source, url: str, count: int) -> List[int]:
    from .httpx import NavroAuth

    httpx = _httpx_module()

    async def main() -> List[int]:
        async with httpx.AsyncClient(auth=NavroAuth(source)) as client:
            responses = await asyncio.gather(*[client.get(url) for _ in range(count)])
            return [r.status_code for r in responses]

    return asyncio.run(main())


def _run_aiohttp(source: Source, url: str, count: int) -> List[int]:
    import aiohttp

    from .aiohttp import NavroAuthMiddleware

    async def main() -> List[int]:
        async with aiohttp.ClientSession(middlewares=(NavroAuthMiddleware(source),)) as session:

            async def one() -> int:
                async with session.get(url) as response:
                    await response.read()
                    return response.status

            return list(await asyncio.gather(*[one() for _ in range(count)]))

    return asyncio.run(main())


def _run_authlib(source: Source, url: str, count: int) -> List[int]:
    from .authlib import oauth2_session

    session = oauth2_session(source)
    try:
        return _threads(lambda: session.get(url, timeout=10).status_code, count)
    finally:
        session.close()


def _run_authlib_async(source: Source, url: str, count: int) -> List[int]:
    from .authlib import async_oauth2_client

    async def main() -> List[int]:
        client = async_oauth2_client(source)
        try:
            responses = await asyncio.gather(*[client.get(url) for _ in range(count)])
            return [r.status_code for r in responses]
        finally:
            await client.aclose()

    return asyncio.run(main())


#: (row label, libraries it needs, runner)
ADAPTERS: Sequence[Tuple[str, Tuple[str, ...], Runner]] = (
    ("core (urllib)", (), _run_core),
    ("requests", ("requests",), _run_requests),
    ("niquests (sync)", ("niquests",), _run_niquests),
    ("niquests (async)", ("niquests",), _run_niquests_async),
    ("httpx (sync)", ("httpx|httpx2",), _run_httpx),
    ("httpx (async)", ("httpx|httpx2",), _run_httpx_async),
    ("aiohttp", ("aiohttp",), _run_aiohttp),
    ("authlib (requests)", ("authlib", "requests"), _run_authlib),
    ("authlib (httpx async)", ("authlib", "httpx"), _run_authlib_async),
)


def _installed(requirements: Tuple[str, ...]) -> bool:
    return all(
        any(importlib.util.find_spec(name) is not None for name in alternatives.split("|"))
        for alternatives in requirements
    )


def _summarise(statuses: List[int]) -> str:
    counts: Dict[int, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n}x {status}" for status, n in sorted(counts.items()))


def run_demo(
    *, requests_per_row: int = REQUESTS_PER_ROW, sandbox: Optional[Sandbox] = None
) -> List[Row]:
    """Run every installed adapter against a sandbox (a new one unless given)."""
    own = sandbox is None
    sb = sandbox or Sandbox().start()
    try:
        url = f"{sb.base_url}/v1/ping"
        rows: List[Row] = []
        available = [(label, runner) for label, needs, runner in ADAPTERS if _installed(needs)]
        for label, needs, _ in ADAPTERS:
            if not _installed(needs):
                rows.append(Row(label, "-", 0, "not installed", ok=True))
        for label, runner in available:
            sb.reset_stats()
            try:
                statuses = runner(sb.credentials(), url, requests_per_row)
                ok = statuses == [200] * requests_per_row
                rows.append(Row(label, _summarise(statuses), sb.stats().token_requests, ok=ok))
            except (NavroAuthError, ImportError) as exc:
                rows.append(
                    Row(label, "error", sb.stats().token_requests, type(exc).__name__, False)
                )
        sb.reset_stats()
        shared = TokenProvider(sb.credentials())
        shared_statuses: List[int] = []
        for _label, runner in available:
            try:
                shared_statuses += runner(shared, url, 2)
            except (NavroAuthError, ImportError):
                shared_statuses.append(0)
        rows.append(
            Row(
                "one shared TokenProvider",
                _summarise(shared_statuses),
                sb.stats().token_requests,
                f"{len(available)} adapters",
                ok=set(shared_statuses) == {200} and sb.stats().token_requests == 1,
            )
        )
        rows.sort(key=lambda row: row.note == "not installed")
        return rows
    finally:
        if own:
            sb.close()


def format_table(rows: Sequence[Row]) -> str:
    header = ("adapter", "status", "token fetches", "note")
    cells = [header] + [(r.adapter, r.statuses, str(r.token_fetches), r.note) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
