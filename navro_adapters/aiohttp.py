"""Navro authentication for aiohttp, as a client middleware (aiohttp >= 3.12).

Usage::

    from navro_adapters.aiohttp import NavroAuthMiddleware

    async with aiohttp.ClientSession(middlewares=(NavroAuthMiddleware(credentials),)) as session:
        async with session.get(f"{credentials.base_url}/v1/ping") as response:
            ...

aiohttp runs a session's middlewares once per request *and once per redirect hop*, each hop on
a fresh request built from the caller's headers, so the middleware decides for every hop on its
own whether that URL may carry the token.

With :class:`~navro_adapters.Credentials`, token requests are sent on a private session modelled
on the session of the request that needs the token (its ``trust_env`` and TLS setting), so they
never pass through this middleware and never queue behind API requests for a pooled connection;
redirects are off. With a shared
:class:`~navro_adapters.TokenProvider`, the provider's own transports are used, so one token
serves every HTTP stack in the process.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Dict, Iterable, Optional

try:
    import aiohttp
    from aiohttp import hdrs
    from aiohttp.client_middlewares import ClientHandlerType
    from aiohttp.payload import AsyncIterablePayload
    from multidict import istr
    from yarl import URL
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "navro_adapters.aiohttp needs aiohttp>=3.12 (client middlewares): "
        "pip install 'navro-adapters[aiohttp]'"
    ) from exc

from ._adapter import API_VERSION_HEADER, AdapterCore, AuthSource
from ._log import logger
from .credentials import Credentials
from .errors import TokenTimeoutError, TransportError
from .protocol import API_VERSION, TokenRequest, TransportResponse
from .provider import TokenProvider
from .token import Token

__all__ = ["AiohttpTransport", "NavroAuthMiddleware"]

# Header keys as multidict ``istr``: CIMultiDict looks them up without folding case each time.
_AUTHORIZATION = hdrs.AUTHORIZATION
_API_VERSION_KEY = istr(API_VERSION_HEADER)
_UNAUTHORIZED = 401
_MAX_REMEMBERED_AUTHORITIES = 64  # scope decisions kept per scheme; others are made every time
_NOTHING: Dict[str, bool] = {}


class AiohttpTransport:
    """An async transport (see :mod:`navro_adapters.transport`) modelled on a ``ClientSession``.

    The token POST goes out on a short-lived private session, not through the caller's pool:
    under load every pooled connection is busy with API requests, and a token request queued
    behind them would starve until the token expired and stalled every caller (measured: the
    refresh ahead missed its window at each rotation with 200 tasks on a pool of 200). The
    private session takes the caller's ``trust_env`` (proxies from the environment) and TLS
    setting, never passes through any middleware, never follows redirects (a redirect would
    carry the client secret elsewhere) and does not raise for status (an error status is a
    response for the core to parse). A token request happens about once per token lifetime,
    so a new session each time costs nothing that matters and belongs to the running loop.
    The caller's session is held weakly: a transport never keeps a closed session alive.
    """

    __slots__ = ("_session_ref",)

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session_ref = weakref.ref(session)

    async def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        session = self._session_ref()
        if session is None or session.closed:
            raise TransportError("token request failed: the aiohttp session is closed")
        # The caller's TLS choice (a custom SSLContext, or verification off for a test proxy);
        # aiohttp has no public accessor for it, so the default applies when it is not there.
        ssl_setting = getattr(session.connector, "_ssl", True)
        try:
            async with (
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=ssl_setting, force_close=True),
                    trust_env=session.trust_env,
                ) as private,
                private.request(
                    request.method,
                    request.url,
                    headers=dict(request.headers),
                    data=request.body,
                    allow_redirects=False,
                    raise_for_status=False,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response,
            ):
                body = await response.read()
                return TransportResponse.build(response.status, response.headers.items(), body)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            # aiohttp's ServerTimeoutError and ConnectionTimeoutError are TimeoutErrors too.
            raise TokenTimeoutError("token request timed out") from exc
        except (aiohttp.ClientError, OSError) as exc:
            # The class name only: aiohttp messages can carry the URL and connection details.
            raise TransportError(f"token request failed: {type(exc).__name__}") from exc

    def __repr__(self) -> str:
        return "AiohttpTransport()"


def _replayable(body: object) -> bool:
    """Whether a request body can be sent a second time after a 401.

    aiohttp (3.12.3+) marks a payload it can no longer rewind as ``consumed``; an async
    iterable (a generator or a stream) is treated as one-shot whatever the version says.
    """
    if getattr(body, "consumed", False):
        return False
    return not isinstance(body, AsyncIterablePayload)


class NavroAuthMiddleware:
    """An aiohttp client middleware that authenticates requests to Navro's API.

    ``credentials_or_provider`` is a :class:`~navro_adapters.Credentials` (a private
    :class:`~navro_adapters.TokenProvider` is built, fetching on the request's own session) or
    a shared :class:`~navro_adapters.TokenProvider` (its transports are used as they are).

    For a request whose scheme, host and port match the API base (or one of
    ``extra_origins``) it sets ``Authorization: Bearer ...`` and, unless the caller set it,
    ``X-API-Version: 1``; any other request, redirect hops included, is passed on untouched.
    On a 401 it invalidates exactly the token it sent, takes a new one (one token request for
    all the requests that failed together) and resends once, unless the body cannot be
    replayed; the second response is returned as it is. Token errors are raised as
    :class:`~navro_adapters.NavroAuthError` subclasses.

    ``provider_options`` (``refresh_policy``, ``retry_policy``, ``store``, ...) go to the
    provider built from Credentials.

    Safe to share between any number of tasks; it holds no lock and does no I/O of its own
    when a valid token is cached.
    """

    __slots__ = ("_core", "_fetch_on_session", "_provider", "_scope_by_authority", "_transport")

    def __init__(
        self,
        credentials_or_provider: AuthSource,
        *,
        extra_origins: Iterable[str] = (),
        **provider_options: Any,
    ) -> None:
        self._core = AdapterCore(
            credentials_or_provider, extra_origins=extra_origins, provider_options=provider_options
        )
        self._provider: TokenProvider = self._core.provider
        # Only a provider we built fetches on the caller's session; a shared one keeps its own.
        self._fetch_on_session = isinstance(credentials_or_provider, Credentials)
        self._transport: Optional[AiohttpTransport] = None
        # scheme -> authority -> may carry the token, as decided by AdapterCore.applies_to.
        # yarl has already parsed both parts, so the hot path neither renders the URL to a
        # string nor parses it again.
        self._scope_by_authority: Dict[str, Dict[str, bool]] = {}

    @property
    def provider(self) -> TokenProvider:
        """The token provider behind this middleware (built or given)."""
        return self._provider

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: ClientHandlerType
    ) -> aiohttp.ClientResponse:
        url = request.url
        in_scope = self._scope_by_authority.get(url.scheme, _NOTHING).get(url.raw_authority)
        if in_scope is None:
            in_scope = self._decide_scope(url)
        headers = request.headers
        if not in_scope:
            if _AUTHORIZATION in headers:
                self._strip_our_token(request)
            return await handler(request)
        if _API_VERSION_KEY not in headers:
            headers[_API_VERSION_KEY] = API_VERSION
        # A fresh token is read without creating a coroutine; otherwise wait (never blocking).
        token = self._provider.fresh_token() or await self._token(request)
        headers[_AUTHORIZATION] = token.authorization
        response = await handler(request)
        if response.status != _UNAUTHORIZED:
            return response
        return await self._resend_after_401(request, handler, response, token)

    def _bind(self, session: Optional[aiohttp.ClientSession]) -> Optional[AiohttpTransport]:
        """The transport for token requests on ``session`` (rebound when the session changes).

        Usually one session per middleware; a middleware shared between sessions rebinds. No
        lock: a racing rebind only builds an equivalent transport.
        """
        if session is None:
            return None
        transport = self._transport = AiohttpTransport(session)
        return transport

    async def _token(self, request: aiohttp.ClientRequest) -> Token:
        """A valid token from the provider, fetched on the request's session if need be."""
        if not self._fetch_on_session:
            return await self._provider.aget_token()
        transport = self._transport
        if transport is None or transport._session_ref() is not request.session:
            transport = self._bind(request.session)
        return await self._provider.aget_token(transport=transport)

    async def _resend_after_401(
        self,
        request: aiohttp.ClientRequest,
        handler: ClientHandlerType,
        response: aiohttp.ClientResponse,
        sent: Token,
    ) -> aiohttp.ClientResponse:
        # Compare-and-invalidate: a late 401 for an older token never drops a newer one.
        self._provider.invalidate(sent)
        if not _replayable(request.body):
            logger.debug("401 for token %s; one-shot body, not resent", sent.fingerprint)
            return response
        response.release()
        token = await self._token(request)
        logger.debug("API answered 401 for token %s; resending once", sent.fingerprint)
        request.headers[_AUTHORIZATION] = token.authorization
        return await handler(request)

    def _decide_scope(self, url: URL) -> bool:
        in_scope = self._core.applies_to(str(url))
        remembered = self._scope_by_authority.setdefault(url.scheme, {})
        if len(remembered) < _MAX_REMEMBERED_AUTHORITIES:
            remembered[url.raw_authority] = in_scope
        return in_scope

    def _strip_our_token(self, request: aiohttp.ClientRequest) -> None:
        """Remove our bearer token from a request to another origin, should one carry it.

        aiohttp builds each redirect hop from the caller's headers, so our header is not
        normally there; this guards against other middlewares copying headers across hops.
        """
        token = self._provider.token
        if token is not None and request.headers.get(_AUTHORIZATION) == token.authorization:
            del request.headers[_AUTHORIZATION]

    def __repr__(self) -> str:
        return f"NavroAuthMiddleware(provider={self._provider!r}, scope={self._core.scope!r})"
