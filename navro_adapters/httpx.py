"""Navro authentication for httpx and httpx2, sync and async clients alike.

::

    from navro_adapters import Credentials
    from navro_adapters.httpx import NavroAuth

    auth = NavroAuth(Credentials.from_env())
    client = httpx.Client(verify=ctx, proxy=..., auth=auth)   # or httpx2.Client
    async_client = httpx.AsyncClient(auth=auth)               # the same token

One :class:`NavroAuth` works with every installed flavour: it subclasses ``httpx.Auth`` and,
with httpx2 installed too, ``httpx2.Auth``. It only translates
:class:`~navro_adapters.auth.RequestAuth`'s rule to httpx's auth flow: set the headers, yield
the request, and after a 401 to our token yield it once more with a new one.

Token requests are yielded from the same auth flow, so the client you attached the auth to
sends them with its own ``verify``, ``cert``, ``proxy``/``mounts`` and ``trust_env`` (httpx's
documented way for an auth to fetch a token). What that means: the token request and its
answer pass through the client's event hooks and appear in the API response's ``history``;
a token request that gets no answer (a connection, TLS or proxy failure) raises httpx's own
exception from that call; the caller that finds the token stale fetches the next one before
its own request (one round trip), while every other caller goes on with the valid token.
With ``client=`` / ``async_client=`` named for token requests, or a provider that has a
transport of its own, token requests go there instead, and a refresh ahead runs in the
background.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, AsyncGenerator, Generator, Iterable, Tuple

from . import _httpx_flavours as flavours
from ._drivers import async_client_sent, async_sends, client_sent, sends
from ._httpx_flavours import AsyncHttpxTransport, HttpxTransport
from .auth import MAX_AUTH_ATTEMPTS, UNAUTHORIZED, AuthSource, RequestAuth, RuleAdapter
from .provider import TokenProvider
from .token import Token

if TYPE_CHECKING:
    import httpx

    _AuthBase = httpx.Auth
    _SyncFlow = Generator[httpx.Request, httpx.Response, None]
    _AsyncFlow = AsyncGenerator[httpx.Request, httpx.Response]
else:
    _bases = tuple(flavour.module.Auth for flavour in flavours.FLAVOURS)
    _AuthBase = _bases[0] if len(_bases) == 1 else type("_NavroAuthBase", _bases, {})

__all__ = ["AsyncHttpxTransport", "HttpxTransport", "NavroAuth", "installed_flavours"]


def installed_flavours() -> Tuple[str, ...]:
    """The httpx flavours this adapter found: ``("httpx",)``, ``("httpx2",)`` or both."""
    return tuple(flavour.name for flavour in flavours.FLAVOURS)


class NavroAuth(_AuthBase, RuleAdapter):
    """``auth=`` for httpx/httpx2 ``Client`` and ``AsyncClient``: Navro bearer tokens.

    ``source`` is :class:`~navro_adapters.Credentials` (a provider is built with
    ``provider_options``: ``refresh_policy``, ``retry_policy``, ``store``, ...) or a shared
    :class:`~navro_adapters.TokenProvider`. Token requests go through the client the auth is
    attached to, or through ``client`` / ``async_client`` when named; a provider built with a
    transport of its own keeps using it.

    Requests to the API origin and ``extra_origins`` get ``Authorization: Bearer <token>`` and
    ``X-API-Version: 1`` (unless set); others are sent untouched. A 401 from those origins
    invalidates exactly the token that was sent and the request is resent once; a streaming
    body is not resent, the 401 is returned. Token failures raise
    :class:`~navro_adapters.NavroAuthError`.

    Pickles for worker processes (the copy fetches its own token); with ``client`` or
    ``async_client`` it raises ConfigurationError: build it in the worker instead.
    """

    # httpx.Auth's defaults hold: neither body is read for us (a 401's plays no part).

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
            source,
            extra_origins=extra_origins,
            provider_options=provider_options,
            transport=HttpxTransport(client) if client is not None else None,
            async_transport=AsyncHttpxTransport(async_client) if async_client else None,
        )
        self.provider: TokenProvider = self.rule.provider

    def sync_auth_flow(self, request: httpx.Request) -> _SyncFlow:
        if not self._scoped(request.url):
            yield request
            return
        for attempt in range(1, MAX_AUTH_ATTEMPTS + 1):
            # The clock read once: the freshness check's time and the send's.
            attached = self.provider.clock.monotonic()
            token = self.provider.fresh_token(attached)
            if token is None:
                if self.rule.has_route(sync=True):
                    token = self.rule.token()
                else:  # through this client: its token requests are ours to yield
                    steps = sends(self.provider.token_flow(), self.provider.sync_performer())
                    token = yield from client_sent(steps, partial(flavours.token_request, request))
                attached = self.provider.clock.monotonic()
            self.rule.set_headers(request.headers, token)
            response = yield request
            self.provider.observe_answer(attached)  # the margins adapt to queues in the pool
            if response.status_code != UNAUTHORIZED or not self._resend(
                request, response, token, attempt
            ):
                return
            # Release the 401's connection first: the token request may need one from the same
            # pool, and a full pool would never free one.
            response.read()

    async def async_auth_flow(self, request: httpx.Request) -> _AsyncFlow:
        if not self._scoped(request.url):
            yield request
            return
        for attempt in range(1, MAX_AUTH_ATTEMPTS + 1):
            attached = self.provider.clock.monotonic()
            token = self.provider.fresh_token(attached)
            if token is None:
                if self.rule.has_route(sync=False):
                    token = await self.rule.atoken()
                else:  # through this client (see sync_auth_flow)
                    steps = async_sends(self.provider.token_flow(), self.provider.async_performer())
                    sending = async_client_sent(steps, partial(flavours.token_request, request))
                    token = await sending.asend(None)  # a request for this client, or the token
                    while not isinstance(token, Token):
                        try:
                            answer = yield token
                        except GeneratorExit:
                            await sending.athrow(GeneratorExit)  # raises what the caller sees
                        token = await sending.asend(answer)
                attached = self.provider.clock.monotonic()
            self.rule.set_headers(request.headers, token)
            response = yield request
            self.provider.observe_answer(attached)
            if response.status_code != UNAUTHORIZED or not self._resend(
                request, response, token, attempt
            ):
                return
            await response.aread()  # release the 401's connection first (see sync_auth_flow)

    def auth_flow(self, request: httpx.Request) -> _SyncFlow:
        # httpx only calls the two flows above; a direct caller gets the sync behaviour.
        return self.sync_auth_flow(request)

    def _scoped(self, url: httpx.URL) -> bool:
        origin = (url.scheme, url.host, url.port)  # a set lookup first: the usual case
        return origin in self.rule.origin_keys or self.rule.applies_to_origin(*origin)

    def _resend(
        self, request: httpx.Request, response: httpx.Response, sent: Token, attempt: int
    ) -> bool:
        return self.rule.resend_after(
            response.status_code,
            sent,
            attempt=attempt,
            answered_in_scope=self._scoped(response.request.url),  # a redirect's may not be
            replayable=isinstance(request.stream, flavours.REPLAYABLE_STREAMS),
        )

    def close(self) -> None:
        """Nothing to close: token requests use your clients (kept for compatibility)."""
