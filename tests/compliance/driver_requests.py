"""Compliance driver for ``navro_adapters.requests``: one Session shared by a pool of threads."""

from __future__ import annotations

from typing import Any, Optional

import requests
from requests.adapters import HTTPAdapter

from navro_adapters import TokenProvider
from navro_adapters.requests import NavroAuth

from .drivers import (
    MAX_THREADS,
    REQUESTS_STYLE,
    AuthSource,
    Outgoing,
    Result,
    ThreadedDriver,
    pop_client_options,
    result_of,
)

POOL_SIZE = MAX_THREADS  # urllib3 connections kept per host, so 100 threads do not fight over 10
REQUEST_TIMEOUT = 30.0  # seconds


class RequestsDriver(ThreadedDriver):
    name = "requests"

    def __init__(self) -> None:
        self._auth: Optional[NavroAuth] = None
        self._session: Optional[requests.Session] = None

    def open(self, source: AuthSource, **adapter_kwargs: Any) -> None:
        options = pop_client_options(adapter_kwargs)
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        if options is not None:
            # The Session's own settings, and token requests through it (README: session=).
            for name, value in options.requests_settings().items():
                setattr(session, name, value)
            adapter_kwargs.setdefault("session", session)
        self._auth = NavroAuth(source, **adapter_kwargs)
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

    def _send_one(self, request: Outgoing) -> Result:
        assert self._session is not None
        response = self._session.request(
            request.method, request.url, timeout=REQUEST_TIMEOUT, **request.kwargs(REQUESTS_STYLE)
        )
        return result_of(response.status_code, response.headers, response.content)
