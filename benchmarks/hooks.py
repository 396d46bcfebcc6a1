"""Hand-written hooks, per HTTP library, through its public API only.

* fixed-header hooks: set ``Authorization`` (a constant bearer value) and ``X-API-Version: 1``,
  the least an auth hook can do; used for the network rounds;
* same-job hooks: what our adapters do per request with a warm token, written by hand the way
  a user would: check the request's origin, set ``Authorization`` and (unless present)
  ``X-API-Version``, and check the answer for a 401 (a response hook, the flow's second step,
  or after the handler). Our in-process overhead is measured against these, so the difference
  is what our code costs over the same job (the performance issue's "honest overhead").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generator, Optional, Tuple
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import aiohttp
    import httpx
    import requests

__all__ = [
    "API_VERSION_HEADER",
    "API_VERSION_VALUE",
    "fixed_aiohttp_middleware",
    "fixed_httpx_auth",
    "fixed_requests_auth",
    "same_job_aiohttp_middleware",
    "same_job_httpx_auth",
    "same_job_requests_auth",
]

API_VERSION_HEADER = "X-API-Version"
API_VERSION_VALUE = "1"  # per Navro's document


def fixed_requests_auth(authorization: str) -> Any:
    """A ``requests.auth.AuthBase`` setting the two headers."""
    from requests.auth import AuthBase

    class FixedHeaderAuth(AuthBase):
        def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
            r.headers["Authorization"] = authorization
            r.headers[API_VERSION_HEADER] = API_VERSION_VALUE
            return r

    return FixedHeaderAuth()


def fixed_httpx_auth(authorization: str, module: Any = None) -> Any:
    """An ``httpx.Auth`` (or ``module.Auth`` for httpx2) setting the two headers."""
    if module is None:
        import httpx as module

    class FixedHeaderAuth(module.Auth):  # type: ignore[misc]
        def auth_flow(
            self, request: httpx.Request
        ) -> Generator[httpx.Request, httpx.Response, None]:
            request.headers["Authorization"] = authorization
            request.headers[API_VERSION_HEADER] = API_VERSION_VALUE
            yield request

    return FixedHeaderAuth()


Handler = Callable[["aiohttp.ClientRequest"], Awaitable["aiohttp.ClientResponse"]]


def fixed_aiohttp_middleware(
    authorization: str,
) -> Callable[[aiohttp.ClientRequest, Handler], Awaitable[aiohttp.ClientResponse]]:
    """An aiohttp client middleware setting the two headers."""

    async def fixed_header_middleware(
        request: aiohttp.ClientRequest, handler: Handler
    ) -> aiohttp.ClientResponse:
        request.headers["Authorization"] = authorization
        request.headers[API_VERSION_HEADER] = API_VERSION_VALUE
        return await handler(request)

    return fixed_header_middleware


# -- same-job hooks ------------------------------------------------------------------------------


class Unauthorized:
    """What a same-job hook does on a 401: count it (a real hook would drop the token)."""

    def __init__(self) -> None:
        self.count = 0

    def seen(self) -> None:
        self.count += 1


def _origin_parts(origin: str) -> Tuple[str, str, Optional[int]]:
    """``(scheme, host, port or None for the scheme's default)`` of ``origin``."""
    parts = urlsplit(origin)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = None if parts.port == default else parts.port
    return parts.scheme, parts.hostname or "", port


def same_job_requests_auth(authorization: str, origin: str, auth_base: Any = None) -> Any:
    """A ``requests.auth.AuthBase`` (or ``auth_base`` subclass: niquests') doing our job.

    URLs under ``origin`` get both headers and a response hook that checks for a 401.
    """
    if auth_base is None:
        from requests.auth import AuthBase as auth_base

    prefix = origin.rstrip("/") + "/"
    unauthorized = Unauthorized()

    def check_401(response: Any, **_kwargs: Any) -> Any:
        if response.status_code == 401:
            unauthorized.seen()
        return response

    class SameJobAuth(auth_base):  # type: ignore[misc]
        def __call__(self, r: Any) -> Any:
            if not r.url.startswith(prefix):
                return r
            r.headers["Authorization"] = authorization
            if API_VERSION_HEADER not in r.headers:
                r.headers[API_VERSION_HEADER] = API_VERSION_VALUE
            r.register_hook("response", check_401)
            return r

    return SameJobAuth()


def same_job_httpx_auth(authorization: str, origin: str, module: Any = None) -> Any:
    """An ``httpx.Auth`` (``module.Auth`` for httpx2) doing our job: its flow checks the
    origin, sets both headers, yields the request and checks the answer for a 401."""
    if module is None:
        import httpx as module

    scheme, host, port = _origin_parts(origin)
    unauthorized = Unauthorized()

    class SameJobAuth(module.Auth):  # type: ignore[misc]
        def auth_flow(
            self, request: httpx.Request
        ) -> Generator[httpx.Request, httpx.Response, None]:
            url = request.url
            if url.scheme != scheme or url.host != host or url.port != port:
                yield request
                return
            request.headers["Authorization"] = authorization
            if API_VERSION_HEADER not in request.headers:
                request.headers[API_VERSION_HEADER] = API_VERSION_VALUE
            response = yield request
            if response.status_code == 401:
                unauthorized.seen()

    return SameJobAuth()


def same_job_aiohttp_middleware(
    authorization: str, origin: str
) -> Callable[[aiohttp.ClientRequest, Handler], Awaitable[aiohttp.ClientResponse]]:
    """An aiohttp client middleware doing our job: origin check, both headers, 401 check."""
    scheme, host, port = _origin_parts(origin)
    default_port = {"http": 80, "https": 443}.get(scheme)
    unauthorized = Unauthorized()

    async def same_job_middleware(
        request: aiohttp.ClientRequest, handler: Handler
    ) -> aiohttp.ClientResponse:
        url = request.url
        if url.scheme != scheme or url.host != host or url.port != (port or default_port):
            return await handler(request)
        request.headers["Authorization"] = authorization
        if API_VERSION_HEADER not in request.headers:
            request.headers[API_VERSION_HEADER] = API_VERSION_VALUE
        response = await handler(request)
        if response.status == 401:
            unauthorized.seen()
        return response

    return same_job_middleware
