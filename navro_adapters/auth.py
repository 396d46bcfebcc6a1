"""The per-request rule every adapter applies, written once: :class:`RequestAuth`.

Sans-IO: it decides, the adapter performs. For each request an adapter asks, in order:

1. :meth:`RequestAuth.applies_to` / :meth:`~RequestAuth.applies_to_origin`: may this URL carry
   the token? Only the API's origin (scheme, host, port of ``credentials.base_url``) and the
   ``extra_origins`` given; anything else, redirect hops included, goes out untouched.
2. :meth:`~RequestAuth.token` / :meth:`~RequestAuth.atoken`: a valid token, from memory when it
   is fresh, else from the provider, whose token request goes through the client the adapter
   names (:meth:`~RequestAuth.route`; the one rule for which client sends it).
3. :meth:`~RequestAuth.set_headers`: ``Authorization: Bearer ...`` (replacing any) and
   ``X-API-Version: 1`` unless the caller set it.
4. :meth:`~RequestAuth.resend_after`: after the answer, whether to resend. Only a 401 that
   answered our token, from an origin in scope, to the first attempt counts; it invalidates
   exactly the token that was sent (a late 401 never drops a newer token) even when the body
   cannot be replayed, and the log line says which of the two happened.

The adapters only translate these steps to their library's request, headers and hooks.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, MutableMapping, Optional, Tuple, Union

from ._log import fingerprint, logger
from .credentials import Credentials, OriginScope
from .errors import ConfigurationError
from .protocol import API_VERSION
from .provider import TokenProvider
from .token import Token
from .transport import AsyncTransport, SyncTransport

__all__ = [
    "API_VERSION_HEADER",
    "AUTHORIZATION",
    "MAX_AUTH_ATTEMPTS",
    "PROVIDER_OPTIONS",
    "UNAUTHORIZED",
    "AuthSource",
    "RequestAuth",
    "RuleAdapter",
    "bearer_token_of",
]

API_VERSION_HEADER = "X-API-Version"
AUTHORIZATION = "Authorization"
MAX_AUTH_ATTEMPTS = 2  # the first send, and one resend after a 401 with a new token
UNAUTHORIZED = 401  # the one answer resend_after acts on; adapters may test it first, cheaply
_BEARER = "Bearer "

AuthSource = Union[Credentials, TokenProvider]

#: TokenProvider keywords an adapter accepts and passes on when it builds the provider itself.
PROVIDER_OPTIONS = frozenset(
    {
        "refresh_policy",
        "retry_policy",
        "store",
        "store_wait",
        "store_clock_skew",
        "clock",
        "rng",
        "tracer_provider",
        "meter_provider",
        "on_event",
    }
)


def bearer_token_of(authorization: Optional[str]) -> Optional[str]:
    """The access token in an ``Authorization: Bearer ...`` value, else ``None``."""
    if authorization is None or not authorization.startswith(_BEARER):
        return None
    return authorization[len(_BEARER) :]


def provider_for(source: object, options: Mapping[str, Any]) -> TokenProvider:
    """``source`` as a provider: a TokenProvider as it is, Credentials in a new one.

    ``options`` (:data:`PROVIDER_OPTIONS`) apply only to a provider built here; with a
    TokenProvider they contradict its own settings and are refused.
    """
    unknown = sorted(set(options) - PROVIDER_OPTIONS)
    if unknown:
        raise ConfigurationError(unknown[0], "is not an option of TokenProvider")
    if isinstance(source, TokenProvider):
        if options:
            raise ConfigurationError(
                sorted(options)[0],
                "only applies when the adapter builds its provider from Credentials; "
                "set it on the TokenProvider you pass",
            )
        return source
    if isinstance(source, Credentials):
        return TokenProvider(source, **options)
    raise ConfigurationError(
        "credentials",
        "must be navro_adapters.Credentials or navro_adapters.TokenProvider, "
        f"not {type(source).__name__}",
    )


class RequestAuth:
    """The rule for one adapter instance: its provider, its scope, its token route.

    ``source`` is :class:`~navro_adapters.Credentials` (a provider is built with
    ``provider_options``) or a shared :class:`~navro_adapters.TokenProvider`. ``transport`` /
    ``async_transport`` are the adapter's route for token requests: the client you named for
    them, or the client the adapter sends on; see :meth:`route`.

    Safe to share between threads, tasks and event loops: it holds no per-request state.
    """

    __slots__ = (
        "_prefixes",
        "async_transport",
        "credentials",
        "origin_keys",
        "provider",
        "scope",
        "transport",
    )

    def __init__(
        self,
        source: AuthSource,
        *,
        extra_origins: Iterable[str] = (),
        provider_options: Optional[Mapping[str, Any]] = None,
        transport: Optional[SyncTransport] = None,
        async_transport: Optional[AsyncTransport] = None,
    ) -> None:
        self.provider = provider_for(source, provider_options or {})
        self.credentials = self.provider.credentials
        extra_origins = tuple(extra_origins)
        self.scope = OriginScope(self.credentials.base_url, extra_origins)  # validates them
        #: A parsed URL's ``(scheme, host, port)`` found here is in scope (see
        #: :meth:`applies_to_origin`, which decides the rest): an adapter's one set lookup.
        self.origin_keys = self.scope.parsed_origins
        origins = (self.credentials.base_url, *(o.strip().rstrip("/") for o in extra_origins))
        # URLs written under an origin exactly as configured: in scope without parsing them.
        self._prefixes = tuple(origin + "/" for origin in origins)
        self.transport = transport
        self.async_transport = async_transport

    # -- 1. scope ------------------------------------------------------------------------------

    def applies_to(self, url: str) -> bool:
        """Whether a request to ``url`` (absolute) may carry the token."""
        return url.startswith(self._prefixes) or self.scope.allows(url)

    def applies_to_origin(self, scheme: str, host: str, port: Optional[int]) -> bool:
        """:meth:`applies_to` for a URL the HTTP library has parsed already (no re-parsing);
        ``port`` ``None`` means the scheme's default."""
        return self.scope.allows_origin(scheme, host, port)

    # -- 2. the token --------------------------------------------------------------------------

    def route(self) -> str:
        """Which client sends this adapter's token requests, for reprs and docs.

        The provider's own transport when it was built with one; otherwise this adapter's
        (the client named for token requests, or the one it sends on); otherwise the
        standard library. The provider applies that order on every token request.
        """
        if self.provider.transport is not None or self.provider.async_transport is not None:
            return "provider"
        return "adapter" if self.transport or self.async_transport else "default"

    def has_route(self, *, sync: bool) -> bool:
        """Whether token requests have a route other than the client sending the request: the
        provider's own transport, or the client named for them (sync or async)."""
        named = self.transport if sync else self.async_transport
        return named is not None or self.route() == "provider"

    def token(self, via: Optional[SyncTransport] = None) -> Token:
        """A valid token; blocks only when none is cached. ``via`` overrides the route."""
        token = self.provider.fresh_token()
        if token is None:
            token = self.provider.get_token(transport=via or self.transport)
        return token

    async def atoken(self, via: Optional[AsyncTransport] = None) -> Token:
        """:meth:`token` for coroutines: never blocks the event loop."""
        token = self.provider.fresh_token()
        if token is None:
            token = await self.provider.aget_token(transport=via or self.async_transport)
        return token

    # -- 3. headers ----------------------------------------------------------------------------

    @staticmethod
    def set_headers(
        headers: MutableMapping[str, str],
        token: Token,
        names: Tuple[str, str] = (AUTHORIZATION, API_VERSION_HEADER),
    ) -> None:
        """Put ``token`` on a request's headers (any case-insensitive mapping). ``names`` are
        the two header names as the library's own key type (aiohttp's ``istr``) if it has one."""
        authorization, version = names
        headers[authorization] = token.authorization
        if version not in headers:
            headers[version] = API_VERSION

    def strip_foreign(self, headers: MutableMapping[str, str]) -> None:
        """Remove our bearer token from a request to an origin out of scope, if it has one.

        For libraries that build a redirect hop from the previous request's headers.
        """
        sent = bearer_token_of(headers.get(AUTHORIZATION))
        token = self.provider.token
        if sent is not None and token is not None and sent == token.access_token:
            del headers[AUTHORIZATION]

    # -- 4. the answer -------------------------------------------------------------------------

    def resend_after(
        self,
        status: int,
        sent: Union[Token, str, None],
        *,
        attempt: int = 1,
        answered_in_scope: bool = True,
        replayable: bool = True,
    ) -> bool:
        """Whether to resend a request with a new token, after its answer ``status``.

        ``sent`` is the token the request carried (a Token or the access-token string;
        ``None``: not ours). ``attempt`` counts sends of this request from 1; at most
        :data:`MAX_AUTH_ATTEMPTS` are made. ``answered_in_scope`` is false when a redirect
        took the request to another origin (that 401 is not about our token).
        """
        if status != UNAUTHORIZED or sent is None or not answered_in_scope:
            return False
        if attempt >= MAX_AUTH_ATTEMPTS:
            # A brand-new token refused too: dropping it would cost a token request per call.
            return False
        access_token = sent.access_token if isinstance(sent, Token) else sent
        # Even when the body cannot be resent, the next request must not carry this token.
        self.provider.invalidate(access_token)
        if not replayable:
            logger.debug("401 for token %s; one-shot body, not resent", fingerprint(access_token))
            return False
        logger.debug("API answered 401 for token %s; resending once", fingerprint(access_token))
        return True

    def __repr__(self) -> str:
        return (
            f"RequestAuth(provider={self.provider!r}, scope={self.scope!r}, "
            f"token route={self.route()!r})"
        )


class RuleAdapter:
    """What every adapter class shares: its :class:`RequestAuth` as ``rule``, the rule's
    ``provider``, the ``credentials`` it serves and a repr that holds no secret or token."""

    __slots__ = ()
    rule: RequestAuth
    provider: TokenProvider

    @property
    def credentials(self) -> Credentials:
        return self.rule.credentials

    def __repr__(self) -> str:
        return f"{type(self).__name__}(provider={self.provider!r}, scope={self.rule.scope!r})"
