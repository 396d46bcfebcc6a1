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

from functools import partial
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

try:
    import niquests
    from niquests.auth import AsyncAuthBase, AuthBase
    from niquests.utils import default_headers
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "navro_adapters.niquests needs niquests: pip install 'navro-adapters[niquests]'"
    ) from exc

from ._sessions import UnboundTransport, resend_with_new_token, resent, retry_request
from .auth import UNAUTHORIZED, AuthSource, RequestAuth, RuleAdapter
from .errors import ConfigurationError
from .protocol import TokenRequest, TransportResponse
from .provider import TokenProvider
from .token import Token
from .transport import transport_failure

__all__ = ["AsyncNavroAuth", "AsyncNiquestsTransport", "NavroAuth", "NiquestsTransport"]


_ERRORS = (niquests.RequestException, OSError)


def _prepare(
    session: niquests.Session, request: TokenRequest, timeout: float
) -> Tuple[niquests.PreparedRequest, Dict[str, Any]]:
    """The token request prepared bare (niquests' User-Agent, none of the session's auth,
    headers, cookies or hooks) and the keywords for ``session.send``: the session's proxy and
    TLS settings for its URL, the timeout, and no redirect (it would carry the secret)."""
    headers = default_headers()
    for name, value in request.headers.items():
        headers[name] = value
    prepared = niquests.Request(request.method, request.url, headers=headers, data=request.body)
    options = session.merge_environment_settings(request.url, {}, None, None, None)
    # Read whole even from a session that streams: the token answer is small and parsed at once.
    options.update(stream=False, allow_redirects=False, timeout=timeout)
    return prepared.prepare(), options


def _answer(response: niquests.Response) -> TransportResponse:
    status = response.status_code or 0  # None only for a response that never arrived
    return TransportResponse.build(status, response.headers.items(), response.content or b"")


class _OnSession:
    """A token route through your session; ``is_async`` says which kind it takes."""

    is_async = False
    expects = "niquests.Session (for an AsyncSession use AsyncNavroAuth)"

    def __init__(self, session: Any) -> None:
        is_async = isinstance(session, niquests.AsyncSession)
        if not isinstance(session, niquests.Session) or is_async is not self.is_async:
            raise ConfigurationError("session", f"must be a {self.expects}")
        self.session: Any = session  # a Session, or an AsyncSession when is_async

    def __repr__(self) -> str:
        return f"{type(self).__name__}(caller session)"


class NiquestsTransport(_OnSession):
    """Sync token requests through your ``niquests.Session`` (its ``verify``, ``cert``,
    ``proxies`` and adapters, and the environment's as ``session.request`` merges them); never
    redirected (a redirect would carry the client secret elsewhere)."""

    def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        prepared, options = _prepare(self.session, request, timeout)
        try:
            return _answer(self.session.send(prepared, **options))
        except _ERRORS as exc:
            raise transport_failure(exc, timed_out=isinstance(exc, niquests.Timeout)) from exc


class AsyncNiquestsTransport(_OnSession):
    """:class:`NiquestsTransport` for your ``niquests.AsyncSession``, from its event loop."""

    is_async = True
    expects = "niquests.AsyncSession"

    async def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        prepared, options = _prepare(self.session, request, timeout)
        try:
            return _answer(await self.session.send(prepared, **options))
        except _ERRORS as exc:
            raise transport_failure(exc, timed_out=isinstance(exc, niquests.Timeout)) from exc


class _NavroAuthBase(RuleAdapter):
    """What both auths hold: the rule, its provider, and the 401 decision."""

    _handle_401: Callable[..., Any]  # the response hook: each subclass's, sync or async
    _route = "transport"  # RequestAuth's keyword for the token route: the sync or async one

    def __init__(
        self, source: AuthSource, extra_origins: Iterable[str], options: Dict[str, Any], route: Any
    ) -> None:
        self.rule = RequestAuth(
            source, extra_origins=extra_origins, provider_options=options, **{self._route: route}
        )
        self.provider: TokenProvider = self.rule.provider

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
        resend = r.status_code == UNAUTHORIZED and resend_with_new_token(self.rule, r)
        return getattr(r, "connection", None) if resend else None  # the adapter that sent it

    def close(self) -> None:
        """Nothing to close: token requests use your session or the standard library (kept
        for parity with :meth:`navro_adapters.requests.NavroAuth.close`)."""


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
        bound = NiquestsTransport(session) if session is not None else UnboundTransport("niquests")
        super().__init__(source, extra_origins, provider_options, bound)

    def __call__(self, r: niquests.PreparedRequest) -> niquests.PreparedRequest:
        if self._in_scope(r):
            attached = self.provider.clock.monotonic()
            token = self.provider.fresh_token(attached)
            if token is None:
                token = self.rule.token()
                attached = self.provider.clock.monotonic()
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
        retry = retry_request(r.request, self.rule.token(), type(self)._handle_401)
        return resent(r, connection.send(retry, **kwargs), retry)  # type: ignore[no-any-return]


class AsyncNavroAuth(_NavroAuthBase, AsyncAuthBase):
    """``auth`` for a ``niquests.AsyncSession``: :class:`NavroAuth`'s contract, awaited.

    Token requests go through ``session=`` (an ``AsyncSession``, sent from its event loop) or,
    without it, through the standard library on a worker thread; either way the event loop
    never blocks, and one token request serves every task waiting for it.
    """

    _route = "async_transport"

    def __init__(
        self,
        source: AuthSource,
        *,
        session: Optional[niquests.AsyncSession] = None,
        extra_origins: Iterable[str] = (),
        **provider_options: Any,
    ) -> None:
        bound = AsyncNiquestsTransport(session) if session else UnboundTransport("niquests").asend
        super().__init__(source, extra_origins, provider_options, bound)

    async def __call__(self, r: niquests.PreparedRequest) -> niquests.PreparedRequest:
        if self._in_scope(r):
            attached = self.provider.clock.monotonic()
            token = self.provider.fresh_token(attached)
            if token is None:
                token = await self.rule.atoken()
                attached = self.provider.clock.monotonic()
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
        retry = retry_request(r.request, await self.rule.atoken(), type(self)._handle_401)
        return resent(r, await connection.send(retry, **kwargs), retry)  # type: ignore[no-any-return]
