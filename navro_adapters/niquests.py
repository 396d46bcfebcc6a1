"""Navro authentication for niquests: :class:`NavroAuth` for ``Session``, :class:`AsyncNavroAuth`
for ``AsyncSession``.

::

    import niquests
    from navro_adapters import Credentials
    from navro_adapters.niquests import AsyncNavroAuth, NavroAuth

    session = niquests.Session()
    session.auth = NavroAuth(Credentials.from_env(), session=session)

    async with niquests.AsyncSession() as session:
        session.auth = AsyncNavroAuth(Credentials.from_env(), session=session)

Why two classes: niquests tells an async auth from a sync one by whether its ``__call__`` is a
coroutine function (``AsyncAuthBase``). A ``Session`` only calls a sync one; an ``AsyncSession``
awaits an async one, and would call a sync one on its event loop, blocking the loop while a
token is fetched. One object cannot be both, which is why niquests itself ships
``HTTPDigestAuth`` and ``AsyncHTTPDigestAuth``. Built from one shared
:class:`~navro_adapters.TokenProvider`, the two share its token.

This module only translates :class:`~navro_adapters.auth.RequestAuth`'s rule to niquests: the
token goes on when niquests calls the auth, and a response hook resends once after a 401 on the
same connection adapter, as niquests' digest auths do. Public niquests API only.
"""

from __future__ import annotations

import asyncio
import urllib.request
from functools import partial
from typing import Any, Callable, Dict, Iterable, Optional, Tuple
from urllib.parse import urlsplit

try:
    import niquests
    from niquests.auth import AsyncAuthBase, AuthBase
    from niquests.utils import default_headers
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "navro_adapters.niquests needs niquests: pip install 'navro-adapters[niquests]'"
    ) from exc

from ._sessions import REPLAYABLE_BODIES, bind_session_hint, without_hook
from .auth import AUTHORIZATION, UNAUTHORIZED, AuthSource, RequestAuth, bearer_token_of
from .credentials import Credentials
from .errors import ConfigurationError, TransportError
from .protocol import TokenRequest, TransportResponse
from .provider import TokenProvider
from .token import Token
from .transport import AsyncTransport, SyncTransport, UrllibTransport, transport_failure

__all__ = ["AsyncNavroAuth", "AsyncNiquestsTransport", "NavroAuth", "NiquestsTransport"]

_UNBOUND = "the standard library (urllib), not your niquests session"


def _prepare(
    session: niquests.Session, request: TokenRequest
) -> Tuple[niquests.PreparedRequest, Dict[str, Any]]:
    """The token request prepared bare (niquests' User-Agent, none of the session's auth,
    headers, cookies or hooks) and the session's proxy/TLS settings for its URL."""
    headers = default_headers()
    for name, value in request.headers.items():
        headers[name] = value
    prepared = niquests.Request(
        request.method, request.url, headers=headers, data=request.body
    ).prepare()
    return prepared, session.merge_environment_settings(request.url, {}, None, None, None)


def _answer(response: niquests.Response) -> TransportResponse:
    status = response.status_code or 0  # None only for a response that never arrived
    return TransportResponse.build(status, response.headers.items(), response.content or b"")


def _failure(exc: BaseException) -> TransportError:
    return transport_failure(exc, timed_out=isinstance(exc, niquests.Timeout))


class NiquestsTransport:
    """Sync token requests through your ``niquests.Session`` (its ``verify``, ``cert``,
    ``proxies`` and adapters, and the environment's as ``session.request`` merges them); never
    redirected (a redirect would carry the client secret elsewhere)."""

    def __init__(self, session: niquests.Session) -> None:
        if not isinstance(session, niquests.Session) or isinstance(session, niquests.AsyncSession):
            raise ConfigurationError(
                "session", "must be a niquests.Session (for an AsyncSession use AsyncNavroAuth)"
            )
        self.session = session

    def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        prepared, settings = _prepare(self.session, request)
        try:
            response = self.session.send(
                prepared, allow_redirects=False, timeout=timeout, **settings
            )
            return _answer(response)
        except (niquests.RequestException, OSError) as exc:
            raise _failure(exc) from exc

    def __repr__(self) -> str:
        return "NiquestsTransport(caller session)"


class AsyncNiquestsTransport:
    """:class:`NiquestsTransport` for your ``niquests.AsyncSession``, from its event loop."""

    def __init__(self, session: niquests.AsyncSession) -> None:
        if not isinstance(session, niquests.AsyncSession):
            raise ConfigurationError("session", "must be a niquests.AsyncSession")
        self.session = session

    async def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        prepared, settings = _prepare(self.session, request)
        try:
            response = await self.session.send(
                prepared, allow_redirects=False, timeout=timeout, **settings
            )
            return _answer(response)  # not streamed: send has read the body
        except (niquests.RequestException, OSError) as exc:
            raise _failure(exc) from exc

    def __repr__(self) -> str:
        return "AsyncNiquestsTransport(caller session)"


def _proxied(url: str) -> bool:
    """Whether urllib sends a request to ``url`` through a proxy from the environment."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    return parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname or "")


class UnboundTransport:
    """Token requests of an auth given no session: the standard library's transport, whose TLS
    and proxy failures say how to send them through your session instead (an auth cannot see
    the session it is attached to)."""

    def __init__(self) -> None:
        self.urllib = UrllibTransport()

    def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        try:
            return self.urllib(request, timeout=timeout)
        except TransportError as failure:
            if failure.retryable and not _proxied(request.url):
                raise
            raise bind_session_hint(failure, _UNBOUND) from failure

    async def asend(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        """The same on a worker thread: the event loop never blocks."""
        return await asyncio.to_thread(self, request, timeout=timeout)

    def __repr__(self) -> str:
        return "UnboundTransport(urllib)"


class _NavroAuthBase:
    """What both auths hold: the rule, its provider, and the 401 decision."""

    _handle_401: Callable[..., Any]  # the response hook: each subclass's, sync or async

    def __init__(
        self,
        source: AuthSource,
        extra_origins: Iterable[str],
        provider_options: Dict[str, Any],
        transport: Optional[SyncTransport] = None,
        async_transport: Optional[AsyncTransport] = None,
    ) -> None:
        self.rule = RequestAuth(
            source,
            extra_origins=extra_origins,
            provider_options=provider_options,
            transport=transport,
            async_transport=async_transport,
        )
        self.provider: TokenProvider = self.rule.provider

    @property
    def credentials(self) -> Credentials:
        return self.rule.credentials

    def _in_scope(self, r: niquests.PreparedRequest) -> bool:
        return r.url is not None and r.headers is not None and self.rule.applies_to(r.url)

    def _attached(self, r: niquests.PreparedRequest, token: Token, attached: float) -> None:
        """Put ``token`` on ``r`` and register the response hook, told when it was attached."""
        self.rule.set_headers(r.headers, token)  # type: ignore[arg-type]  # str or bytes keys
        # The attach time rides on the hook itself: niquests' Response reads every attribute
        # lazily (about 1 us each), so Response.elapsed would cost more than timing it here.
        # Over the plain function, not a bound method: before Python 3.10, inspect tells a
        # coroutine function through a partial only that way (the AsyncSession asks it).
        r.hooks["response"].append(partial(type(self)._handle_401, self, attached))

    def _resend(self, r: niquests.Response, attached: float) -> Any:
        """The connection adapter to resend ``r``'s request on with a new token, or None."""
        self.provider.observe_answer(attached)  # the margins adapt to queues in the pool
        if r.status_code != UNAUTHORIZED:  # every answer but a 401: nothing more to read
            return None
        sent = r.request
        if sent is None or sent.headers is None or r.status_code is None:
            return None
        body, authorization = sent.body, sent.headers.get(AUTHORIZATION)
        resend = self.rule.resend_after(
            r.status_code,
            bearer_token_of(authorization if isinstance(authorization, str) else None),
            replayable=body is None or isinstance(body, REPLAYABLE_BODIES),
        )
        return getattr(r, "connection", None) if resend else None  # the adapter that sent it

    def _retry(self, r: niquests.Response, token: Token) -> niquests.PreparedRequest:
        """A copy of ``r``'s request with ``token``, without our hook: resent once at most."""
        assert r.request is not None
        retry = r.request.copy()
        retry.hooks = without_hook(r.request.hooks, type(self)._handle_401)  # type: ignore[arg-type]
        assert retry.headers is not None
        retry.headers[AUTHORIZATION] = token.authorization  # other headers, cookies too, as sent
        return retry

    def close(self) -> None:
        """Nothing to close: token requests use your session or the standard library (kept
        for parity with :meth:`navro_adapters.requests.NavroAuth.close`)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(provider={self.provider!r}, scope={self.rule.scope!r})"


class NavroAuth(_NavroAuthBase, AuthBase):
    """``auth`` for a ``niquests.Session``: bearer tokens from a TokenProvider.

    ``source`` is :class:`~navro_adapters.Credentials` (a provider is built with
    ``provider_options``: ``refresh_policy``, ``retry_policy``, ``store``, ...) or a shared
    :class:`~navro_adapters.TokenProvider`. Pass the session as ``session=`` for token requests
    to use its TLS and proxy settings; without it they go through the standard library
    (environment settings only) and a TLS or proxy failure says to pass it. A provider built
    with a transport of its own keeps using it.

    Requests to the API origin and ``extra_origins`` get ``Authorization: Bearer <token>`` and
    ``X-API-Version: 1`` (unless set); others are untouched. A 401 to our token invalidates
    exactly that token and the request is resent once; a one-shot body (generator, file) is
    not resent, the 401 is returned. Token failures raise
    :class:`~navro_adapters.NavroAuthError` from the request call. Safe to share between the
    threads using a session: one token request serves them all.
    """

    def __init__(
        self,
        source: AuthSource,
        *,
        session: Optional[niquests.Session] = None,
        extra_origins: Iterable[str] = (),
        **provider_options: Any,
    ) -> None:
        bound = NiquestsTransport(session) if session is not None else UnboundTransport()
        super().__init__(source, extra_origins, provider_options, transport=bound)

    def __call__(self, r: niquests.PreparedRequest) -> niquests.PreparedRequest:
        if self._in_scope(r):
            clock = self.provider.clock
            attached = clock.monotonic()
            token = self.provider.fresh_token(attached)
            if token is None:
                token = self.rule.token()
                attached = clock.monotonic()
            self._attached(r, token, attached)
        return r

    def _handle_401(
        self, attached: float, r: niquests.Response, **kwargs: Any
    ) -> niquests.Response:
        """Response hook: after a 401 to our token, resend once with a new one."""
        connection = self._resend(r, attached)
        if connection is None:
            return r
        r.content  # noqa: B018 - read and release the 401 first: the token request may need a
        r.close()  # connection from the same pool, and the resend can reuse this one
        retry = self._retry(r, self.rule.token())
        second: niquests.Response = connection.send(retry, **kwargs)
        second.history.append(r)
        second.request = retry
        return second


class AsyncNavroAuth(_NavroAuthBase, AsyncAuthBase):
    """``auth`` for a ``niquests.AsyncSession``: :class:`NavroAuth`'s contract, awaited.

    Token requests go through ``session=`` (an ``AsyncSession``, sent from its event loop) or,
    without it, through the standard library on a worker thread; either way the event loop
    never blocks, and one token request serves every task waiting for it.
    """

    def __init__(
        self,
        source: AuthSource,
        *,
        session: Optional[niquests.AsyncSession] = None,
        extra_origins: Iterable[str] = (),
        **provider_options: Any,
    ) -> None:
        bound: AsyncTransport = (
            AsyncNiquestsTransport(session) if session is not None else UnboundTransport().asend
        )
        super().__init__(source, extra_origins, provider_options, async_transport=bound)

    async def __call__(self, r: niquests.PreparedRequest) -> niquests.PreparedRequest:
        if self._in_scope(r):
            clock = self.provider.clock
            attached = clock.monotonic()
            token = self.provider.fresh_token(attached)
            if token is None:
                token = await self.rule.atoken()
                attached = clock.monotonic()
            self._attached(r, token, attached)
        return r

    async def _handle_401(
        self, attached: float, r: niquests.Response, **kwargs: Any
    ) -> niquests.Response:
        """Response hook (awaited by the AsyncSession): :meth:`NavroAuth._handle_401`."""
        connection = self._resend(r, attached)
        if connection is None:
            return r
        if isinstance(r, niquests.AsyncResponse):  # read and release the 401 first (see above)
            await r.content
            await r.close()
        else:
            r.content  # noqa: B018
            r.close()
        retry = self._retry(r, await self.rule.atoken())
        second: niquests.Response = await connection.send(retry, **kwargs)
        second.history.append(r)
        second.request = retry
        return second
