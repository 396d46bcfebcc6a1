"""Hand-written fixed-header hooks: the least an auth hook can do, per HTTP library.

Each sets ``Authorization`` (a constant bearer value) and ``X-API-Version: 1`` the way a user
would write it against the library's public API. The per-request overhead of our adapters is
measured against these, so the difference is what token management costs when a token is warm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generator

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
