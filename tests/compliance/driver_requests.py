"""Compliance driver for ``navro_adapters.requests``: one Session shared by a pool of threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, List, Mapping, Optional, Sequence

import requests
from requests.adapters import HTTPAdapter

from navro_adapters import TokenProvider
from navro_adapters.requests import NavroAuth

from .drivers import AuthSource, Driver, Result

MAX_THREADS = 100  # request_many runs one thread per URL, up to this many
POOL_SIZE = 100  # urllib3 connections kept per host, so 100 threads do not fight over 10


def _result(response: requests.Response) -> Result:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    return Result(status=response.status_code, headers=dict(response.headers), json=body)


class RequestsDriver(Driver):
    name = "requests"
    concurrency = "threads"

    def __init__(self) -> None:
        self._auth: Optional[NavroAuth] = None
        self._session: Optional[requests.Session] = None

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        self._auth = NavroAuth(source, **adapter_kwargs)
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.auth = self._auth
        self._session = session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        if self._auth is not None:
            self._auth.close()

    @property
    def provider(self) -> TokenProvider:
        assert self._auth is not None
        return self._auth.provider

    def _send(
        self,
        method: str,
        url: str,
        headers: Optional[Mapping[str, str]],
        body: Any,
        follow_redirects: bool,
    ) -> Result:
        assert self._session is not None
        try:
            response = self._session.request(
                method,
                url,
                headers=dict(headers) if headers else None,
                data=body,
                allow_redirects=follow_redirects,
                timeout=30,
            )
        except Exception as exc:
            return Result(error=exc)
        return _result(response)

    def request_many(
        self,
        method: str,
        urls: Sequence[str],
        *,
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[bytes] = None,
        follow_redirects: bool = True,
    ) -> List[Result]:
        if not urls:
            return []
        with ThreadPoolExecutor(max_workers=min(len(urls), MAX_THREADS)) as pool:
            futures = [
                pool.submit(self._send, method, url, headers, body, follow_redirects)
                for url in urls
            ]
            return [future.result() for future in futures]

    def send_unreplayable(self, url: str) -> Result:
        def chunks() -> Iterator[bytes]:
            yield b'{"amount": '
            yield b"100}"

        return self._send("POST", url, None, chunks(), True)
