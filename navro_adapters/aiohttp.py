"""Navro authentication for aiohttp, as a client middleware (aiohttp >= 3.12).

Usage::

    from navro_adapters.aiohttp import NavroAuthMiddleware

    async with aiohttp.ClientSession(middlewares=(NavroAuthMiddleware(credentials),)) as session:
        async with session.get(f"{credentials.base_url}/v1/ping") as response:
            ...

This module only translates :class:`~navro_adapters.auth.RequestAuth`'s rule to a middleware.
aiohttp runs a session's middlewares once per request *and once per redirect hop*, each hop on
a fresh request, so the middleware decides for every hop whether that URL may carry the token.

Token requests go out on the session of the request that needs the token (its connector and
TLS setting, ``proxy=``/``proxy_auth=`` and ``trust_env``), with ``middlewares=()`` so they
never pass through this middleware, and never redirected; or on the ``token_session=`` you
name for them (for example one with its own connection pool, so a token request never waits
behind API requests for a pooled connection).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Dict, Iterable, Optional, Tuple

try:
    import aiohttp
    from aiohttp.client_middlewares import ClientHandlerType
    from aiohttp.payload import AsyncIterablePayload
    from multidict import istr
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "navro_adapters.aiohttp needs aiohttp>=3.12 (client middlewares): "
        "pip install 'navro-adapters[aiohttp]'"
    ) from exc

from ._pickling import Reduced, not_picklable
from .auth import (
    API_VERSION_HEADER,
    AUTHORIZATION,
    UNAUTHORIZED,
    AuthSource,
    RequestAuth,
    RuleAdapter,
)
from .errors import ConfigurationError, TransportError
from .protocol import TokenRequest, TransportResponse
from .provider import TokenProvider
from .transport import transport_failure

__all__ = ["AiohttpTransport", "NavroAuthMiddleware"]

# istr keys: CIMultiDict looks them up without folding their case on every request.
_HEADER_NAMES = (istr(AUTHORIZATION), istr(API_VERSION_HEADER))
_REMEMBERED_ORIGINS = 64  # scope decisions kept (scheme, authority); others are made each time


class AiohttpTransport:
    """Token requests on a ``ClientSession``, held weakly (a transport never keeps a closed
    session alive): no middleware, no redirect, no raise-for-status (an error status is an
    answer for the core to parse)."""

    __slots__ = ("_session_ref",)

    def __init__(self, session: aiohttp.ClientSession) -> None:
        if not isinstance(session, aiohttp.ClientSession):
            raise ConfigurationError("token_session", "must be an aiohttp.ClientSession")
        self._session_ref = weakref.ref(session)

    @property
    def session(self) -> Optional[aiohttp.ClientSession]:
        return self._session_ref()

    async def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        session = self._session_ref()
        if session is None or session.closed:
            raise TransportError("token request failed: the aiohttp session is closed")
        headers = dict(request.headers)
        basic = None
        if session.auth is not None and AUTHORIZATION in headers:
            # aiohttp refuses a header next to a session's default auth=; as auth= ours wins.
            basic = aiohttp.BasicAuth.decode(headers.pop(AUTHORIZATION), "utf-8")
        try:
            async with session.request(
                request.method,
                request.url,
                headers=headers,
                auth=basic,
                data=request.body,
                allow_redirects=False,
                raise_for_status=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
                middlewares=(),
            ) as response:
                body = await response.read()
                return TransportResponse.build(response.status, response.headers.items(), body)
        except (asyncio.TimeoutError, TimeoutError, aiohttp.ClientError, OSError) as exc:
            # Never aiohttp's text: it can carry the URL and connection details.
            timed_out = isinstance(exc, (asyncio.TimeoutError, TimeoutError))
            raise transport_failure(exc, timed_out=timed_out) from exc

    def __reduce__(self) -> Reduced:
        raise not_picklable(
            "token_session",
            "an aiohttp.ClientSession",
            "build NavroAuthMiddleware(..., token_session=...) in the worker process, with a "
            "session made there",
        )

    def __repr__(self) -> str:
        return "AiohttpTransport()"


def _replayable(body: object) -> bool:
    """Whether a request body can be sent again: aiohttp (3.12.3+) marks a payload it cannot
    rewind as ``consumed``; an async iterable is one-shot whatever the version says."""
    return not getattr(body, "consumed", False) and not isinstance(body, AsyncIterablePayload)


class NavroAuthMiddleware(RuleAdapter):
    """An aiohttp client middleware that authenticates requests to Navro's API.

    ``credentials_or_provider`` is :class:`~navro_adapters.Credentials` (a provider is built
    with ``provider_options``: ``refresh_policy``, ``retry_policy``, ``store``, ...) or a shared
    :class:`~navro_adapters.TokenProvider`. Token requests go through ``token_session`` when
    given, else the request's own session; a provider built with a transport of its own keeps
    using it.

    Requests to the API origin and ``extra_origins`` get ``Authorization: Bearer ...`` and,
    unless set, ``X-API-Version: 1``; any other request, redirect hops included, is passed on
    without our token. On a 401 the token that was sent is invalidated and the request resent
    once with a new one, unless its body cannot be replayed. Token errors are raised as
    :class:`~navro_adapters.NavroAuthError` subclasses. Safe to share between any number of
    tasks; it does no I/O of its own while a valid token is cached. Pickles (for a worker
    process) as its provider and rule; with ``token_session`` it raises ConfigurationError.
    """

    __slots__ = ("_last_route", "_scope", "provider", "rule")

    def __init__(
        self,
        credentials_or_provider: AuthSource,
        *,
        token_session: Optional[aiohttp.ClientSession] = None,
        extra_origins: Iterable[str] = (),
        **provider_options: Any,
    ) -> None:
        named = AiohttpTransport(token_session) if token_session is not None else None
        self.rule = RequestAuth(
            credentials_or_provider,
            extra_origins=extra_origins,
            provider_options=provider_options,
            async_transport=named,
        )
        self.provider: TokenProvider = self.rule.provider
        self._last_route: Optional[AiohttpTransport] = None  # the last session's, reused
        self._scope: Dict[Tuple[str, str], bool] = {}  # yarl parsed them: no re-parsing

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: ClientHandlerType
    ) -> aiohttp.ClientResponse:
        url = request.url
        in_scope = self._scope.get((url.scheme, url.raw_authority))
        if in_scope is None:
            in_scope = self._decide(url)
        if not in_scope:
            if AUTHORIZATION in request.headers:
                self.rule.strip_foreign(request.headers)
            return await handler(request)
        provider = self.provider
        attached = provider.clock.monotonic()  # read once: the freshness check's and the send's
        token = provider.fresh_token(attached)
        if token is None:
            token = await self.rule.atoken(self._route(request))
            attached = provider.clock.monotonic()
        self.rule.set_headers(request.headers, token, _HEADER_NAMES)
        response = await handler(request)
        provider.observe_answer(attached)  # the margins adapt to queues in the pool
        if response.status != UNAUTHORIZED or not self.rule.resend_after(
            response.status, token, replayable=_replayable(request.body)
        ):
            return response
        response.release()
        token = await self.rule.atoken(self._route(request))
        request.headers[AUTHORIZATION] = token.authorization
        return await handler(request)

    def _decide(self, url: Any) -> bool:
        in_scope = self.rule.applies_to_origin(url.scheme, url.host or "", url.port)
        if len(self._scope) < _REMEMBERED_ORIGINS:
            self._scope[(url.scheme, url.raw_authority)] = in_scope
        return in_scope

    def _route(self, request: aiohttp.ClientRequest) -> Optional[AiohttpTransport]:
        """The request's session as a token route, unless one was named (off the hot path)."""
        if self.rule.async_transport is not None:
            return None
        route = self._last_route
        if route is None or route.session is not request.session:
            route = self._last_route = AiohttpTransport(request.session)
        return route

    def __getstate__(self) -> Dict[str, Any]:
        # The remembered route and scope decisions belong to this process's sessions.
        return {"provider": self.provider, "rule": self.rule}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.provider, self.rule = state["provider"], state["rule"]
        self._last_route, self._scope = None, {}
