"""Navro authentication for httpx and httpx2, sync and async clients alike.

::

    from navro_adapters import Credentials
    from navro_adapters.httpx import NavroAuth

    auth = NavroAuth(Credentials.from_env())
    client = httpx.Client(auth=auth)              # or httpx2.Client
    async_client = httpx.AsyncClient(auth=auth)   # the same token

One :class:`NavroAuth` works with every installed flavour: it subclasses ``httpx.Auth`` and,
with httpx2 installed too, ``httpx2.Auth``. It only translates
:class:`~navro_adapters.auth.RequestAuth`'s rule to httpx's auth flow: set the headers, yield
the request, and after a 401 to our token yield it once more with a new one.

Token requests go through the ``client=`` / ``async_client=`` you name for them (your proxies,
TLS settings and pool), else through a private client of the request's flavour, never through
this auth and never redirected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncGenerator, Dict, Generator, Iterable, Tuple

from . import _httpx_flavours as flavours
from ._httpx_flavours import AsyncHttpxTransport, HttpxTransport
from .auth import AUTHORIZATION, AuthSource, RequestAuth
from .credentials import Credentials
from .provider import TokenProvider
from .token import Token
from .transport import AsyncTransport, SyncTransport

if TYPE_CHECKING:
    import httpx

    _AuthBase = httpx.Auth
else:
    _bases = tuple(flavour.module.Auth for flavour in flavours.FLAVOURS)
    _AuthBase = _bases[0] if len(_bases) == 1 else type("_NavroAuthBase", _bases, {})

__all__ = ["AsyncHttpxTransport", "HttpxTransport", "NavroAuth", "installed_flavours"]


def installed_flavours() -> Tuple[str, ...]:
    """The httpx flavours this adapter found: ``("httpx",)``, ``("httpx2",)`` or both."""
    return tuple(flavour.name for flavour in flavours.FLAVOURS)


class NavroAuth(_AuthBase):
    """``auth=`` for httpx/httpx2 ``Client`` and ``AsyncClient``: Navro bearer tokens.

    ``source`` is :class:`~navro_adapters.Credentials` (a provider is built with
    ``provider_options``: ``refresh_policy``, ``retry_policy``, ``store``, ...) or a shared
    :class:`~navro_adapters.TokenProvider`. ``client`` / ``async_client`` send the token
    requests when given; a provider built with a transport of its own keeps using it.

    Requests to the API origin and ``extra_origins`` get ``Authorization: Bearer <token>`` and
    ``X-API-Version: 1`` (unless set); others are sent untouched. A 401 from those origins
    invalidates exactly the token that was sent and the request is resent once; a streaming
    body is not resent, the 401 is returned. Token failures raise
    :class:`~navro_adapters.NavroAuthError`.
    """

    requires_request_body = False
    requires_response_body = False  # the 401 body plays no part in the decision to resend

    def __init__(
        self,
        source: AuthSource,
        *,
        client: Any = None,
        async_client: Any = None,
        extra_origins: Iterable[str] = (),
        **provider_options: Any,
    ) -> None:
        self.rule = RequestAuth(
            source, extra_origins=extra_origins, provider_options=provider_options
        )
        self.provider: TokenProvider = self.rule.provider
        named = HttpxTransport(client) if client is not None else None
        named_async = AsyncHttpxTransport(async_client) if async_client is not None else None
        # Per request class, the route for its token requests: the named client, else a
        # private one of the same flavour.
        self._owned = [HttpxTransport(flavour=f.name) for f in flavours.FLAVOURS]
        self._sync_route: Dict[type, SyncTransport] = {
            f.module.Request: named or own for f, own in zip(flavours.FLAVOURS, self._owned)
        }
        self._async_route: Dict[type, AsyncTransport] = {
            f.module.Request: named_async or AsyncHttpxTransport(flavour=f.name)
            for f in flavours.FLAVOURS
        }

    @property
    def credentials(self) -> Credentials:
        return self.rule.credentials

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        if not self._in_scope(request.url):
            yield request
            return
        route = self._sync_route.get(type(request))
        token = self.rule.token(route)
        self.rule.set_headers(request.headers, token)
        response = yield request
        if self._resend(request, response, token):
            # Release the 401's connection first: the token request may need one from the same
            # pool (a client fetching on itself), and a full pool would never free one.
            response.read()
            request.headers[AUTHORIZATION] = self.rule.token(route).authorization
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if not self._in_scope(request.url):
            yield request
            return
        route = self._async_route.get(type(request))
        token = await self.rule.atoken(route)
        self.rule.set_headers(request.headers, token)
        response = yield request
        if self._resend(request, response, token):
            await response.aread()  # release the 401's connection first (see sync_auth_flow)
            request.headers[AUTHORIZATION] = (await self.rule.atoken(route)).authorization
            yield request

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # httpx only calls the two flows above; a direct caller gets the sync behaviour.
        return self.sync_auth_flow(request)

    def _in_scope(self, url: httpx.URL) -> bool:
        return self.rule.applies_to_origin(url.scheme, url.host, url.port)

    def _resend(self, request: httpx.Request, response: httpx.Response, sent: Token) -> bool:
        answered = response.request  # another origin, when a redirect was followed
        flavour = flavours.flavour_of_request(request)
        return self.rule.resend_after(
            response.status_code,
            sent,
            answered_in_scope=answered is request or self._in_scope(answered.url),
            replayable=flavour is not None
            and isinstance(request.stream, flavour.replayable_streams),
        )

    def close(self) -> None:
        """Close the private sync clients this adapter created (idempotent)."""
        for transport in self._owned:
            transport.close()

    def __repr__(self) -> str:
        return (
            f"NavroAuth(flavours={installed_flavours()!r}, provider={self.provider!r}, "
            f"scope={self.rule.scope!r})"
        )
