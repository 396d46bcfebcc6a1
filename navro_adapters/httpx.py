"""Navro authentication for httpx and httpx2, sync and async clients alike.

::

    from navro_adapters import Credentials
    from navro_adapters.httpx import NavroAuth

    auth = NavroAuth(Credentials.from_env())
    client = httpx.Client(base_url=auth.credentials.base_url, auth=auth)      # or httpx2.Client
    async_client = httpx.AsyncClient(auth=auth)                               # same token

One :class:`NavroAuth` works with every installed flavour: it subclasses ``httpx.Auth`` and,
when httpx2 is installed too, ``httpx2.Auth``, so ``httpx.Client(auth=...)`` and
``httpx2.Client(auth=...)`` both accept it. With only httpx2 installed it is an ``httpx2.Auth``.
``httpx2.alias_httpx()`` is neither needed nor called.

Token requests go through httpx, never through this auth (``auth=None``,
``follow_redirects=False``): on a private ``Client`` per flavour (the flavour of the request
being authenticated), or on the ``client=`` / ``async_client=`` you pass, so your proxies, TLS
settings and pools apply. Async token requests use a short-lived ``AsyncClient`` per request
unless you pass one: an ``AsyncClient`` belongs to the event loop it first ran on, a provider
may serve several loops, and a token request happens about once every four minutes, so a new
client each time (sharing one TLS context, built off the loop) is both loop-safe and cheap.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncGenerator,
    Dict,
    Generator,
    Iterable,
    Mapping,
    Optional,
    Tuple,
    Type,
)

from . import _httpx_compat as compat
from ._adapter import AdapterCore, AuthSource
from ._log import logger
from .credentials import Credentials
from .errors import ConfigurationError, TokenTimeoutError, TransportError
from .protocol import TokenRequest, TransportResponse
from .provider import TokenProvider
from .token import Token
from .transport import AsyncTransport, SyncTransport

if TYPE_CHECKING:
    import httpx

    _AuthBase = httpx.Auth
else:
    _bases = tuple(flavour.module.Auth for flavour in compat.FLAVOURS)
    _AuthBase = _bases[0] if len(_bases) == 1 else type("_NavroAuthBase", _bases, {})

__all__ = ["AsyncHttpxTransport", "HttpxTransport", "NavroAuth", "installed_flavours"]

_UNAUTHORIZED = 401
_FAST_URL_TYPES = compat.FAST_URL_TYPES


def installed_flavours() -> Tuple[str, ...]:
    """The httpx flavours this adapter found: ``("httpx",)``, ``("httpx2",)`` or both."""
    return tuple(flavour.name for flavour in compat.FLAVOURS)


def _flavour_named(name: str) -> compat.Flavour:
    for flavour in compat.FLAVOURS:
        if flavour.name == name:
            return flavour
    raise ConfigurationError("flavour", f"{name!r} is not installed (found {installed_flavours()})")


def _to_response(response: Any) -> TransportResponse:
    return TransportResponse.build(response.status_code, response.headers.items(), response.content)


def _failure(exc: BaseException, module: Any) -> TransportError:
    """The core's error for an httpx exception; its text names the class only (no URL)."""
    if isinstance(exc, module.TimeoutException):
        return TokenTimeoutError(f"token request timed out ({type(exc).__name__})")
    return TransportError(f"token request failed: {type(exc).__name__}")


def _send_options(request: TokenRequest, timeout: float) -> Dict[str, Any]:
    """``client.request()`` options for a token request: never the client's auth (which may be
    a :class:`NavroAuth`), never a redirect (it would carry the client secret)."""
    return {
        "headers": dict(request.headers),
        "content": request.body,
        "auth": None,
        "follow_redirects": False,
        "timeout": timeout,
    }


def _errors_of(module: Any) -> Tuple[Type[BaseException], ...]:
    # InvalidURL is not an HTTPError; OSError covers a proxy or TLS set-up failing outside httpx.
    return (module.HTTPError, module.InvalidURL, OSError)


class HttpxTransport:
    """A sync token transport on an httpx/httpx2 ``Client``.

    With ``client`` the token request goes through it (its proxies, TLS and pool; never its
    ``auth``); without, through a private ``Client`` of ``flavour`` (``"httpx"``/``"httpx2"``,
    default: the first installed) created on first use and closed by :meth:`close`.
    """

    def __init__(self, client: Any = None, *, flavour: Optional[str] = None) -> None:
        if client is not None:
            found = compat.flavour_of_client(client)
            if found is None or not isinstance(client, found.module.Client):
                raise ConfigurationError("client", "must be an httpx.Client or httpx2.Client")
            self._flavour = found
        else:
            self._flavour = _flavour_named(flavour) if flavour else compat.FLAVOURS[0]
        self._client = client
        self._owns_client = client is None
        self._errors = _errors_of(self._flavour.module)
        self._create_lock = threading.Lock()  # guards the one-time creation of the private client

    def _get_client(self) -> Any:
        client = self._client
        if client is None:
            with self._create_lock:
                if self._client is None:
                    self._client = self._flavour.module.Client(follow_redirects=False)
                client = self._client
        return client

    def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        module = self._flavour.module
        try:
            response = self._get_client().request(
                request.method, request.url, **_send_options(request, timeout)
            )
        except self._errors as exc:
            raise _failure(exc, module) from exc
        return _to_response(response)

    def close(self) -> None:
        """Close the private client, if one was created (a client you passed stays open)."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    def __repr__(self) -> str:
        owner = "private" if self._owns_client else "caller's"
        return f"HttpxTransport({self._flavour.name}, {owner} client)"


class AsyncHttpxTransport:
    """An async token transport on an httpx/httpx2 ``AsyncClient``.

    With ``client`` the token request goes through it: it must then only be used from the
    event loop it belongs to. Without, each token request gets a short-lived ``AsyncClient``
    of ``flavour`` on the running loop (see the module docstring for why), sharing one TLS
    context that is built once on a worker thread, never on the loop.
    """

    def __init__(self, client: Any = None, *, flavour: Optional[str] = None) -> None:
        if client is not None:
            found = compat.flavour_of_client(client)
            if found is None or not isinstance(client, found.module.AsyncClient):
                raise ConfigurationError(
                    "async_client", "must be an httpx.AsyncClient or httpx2.AsyncClient"
                )
            self._flavour = found
        else:
            self._flavour = _flavour_named(flavour) if flavour else compat.FLAVOURS[0]
        self._client = client
        self._errors = _errors_of(self._flavour.module)
        self._ssl_context: Optional[ssl.SSLContext] = None

    def _new_client(self) -> Any:
        """A fresh AsyncClient; runs on a worker thread (loading CA certificates takes ~30 ms)."""
        module = self._flavour.module
        context = self._ssl_context
        if context is None and hasattr(module, "create_ssl_context"):
            # Two racing first requests may both build one; either is fine to keep.
            context = self._ssl_context = module.create_ssl_context(verify=True, trust_env=True)
        if context is None:
            return module.AsyncClient(follow_redirects=False)
        return module.AsyncClient(verify=context, follow_redirects=False)

    async def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        module = self._flavour.module
        try:
            if self._client is not None:
                return _to_response(await self._send(self._client, request, timeout))
            loop = asyncio.get_running_loop()
            client = await loop.run_in_executor(None, self._new_client)
            async with client:
                return _to_response(await self._send(client, request, timeout))
        except self._errors as exc:
            raise _failure(exc, module) from exc

    @staticmethod
    async def _send(client: Any, request: TokenRequest, timeout: float) -> Any:
        return await client.request(request.method, request.url, **_send_options(request, timeout))

    def __repr__(self) -> str:
        owner = "caller's client" if self._client is not None else "a client per token request"
        return f"AsyncHttpxTransport({self._flavour.name}, {owner})"


class NavroAuth(_AuthBase):
    """``auth=`` for httpx/httpx2 ``Client`` and ``AsyncClient``: Navro bearer tokens.

    ``source`` is a :class:`~navro_adapters.Credentials` (a provider is built, its token
    requests sent through httpx: ``client``/``async_client`` if given, private ones otherwise)
    or a shared :class:`~navro_adapters.TokenProvider` (used as it is, with its own transport).
    ``provider_options`` (``refresh_policy``, ``retry_policy``, ``store``, ...) go to the
    provider built from Credentials.

    Requests to the API origin (``credentials.base_url``) and to ``extra_origins`` get
    ``Authorization: Bearer <token>`` and ``X-API-Version: 1`` (unless already set); others
    are sent untouched. A 401 from those origins invalidates exactly the token that was sent
    and resends once with a new one; a streaming (generator) body is not resent, the 401 is
    returned. Token endpoint failures raise :class:`~navro_adapters.NavroAuthError`.
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
        if isinstance(source, TokenProvider) and (client is not None or async_client is not None):
            raise ConfigurationError(
                "client",
                "client= and async_client= only apply when NavroAuth builds the provider from "
                "Credentials; a TokenProvider keeps its own transport",
            )
        extra_origins = tuple(extra_origins)
        self._owned: list[HttpxTransport] = []
        # Per request class: the transport of that flavour, when this adapter picks them.
        self._sync_for: Dict[type, SyncTransport] = {}
        self._async_for: Dict[type, AsyncTransport] = {}
        self._core = AdapterCore(
            source,
            extra_origins=extra_origins,
            make_provider=lambda credentials, options: self._make_provider(
                credentials, client, async_client, options
            ),
            provider_options=provider_options,
        )
        self.provider: TokenProvider = self._core.provider
        self._origin_keys = _origin_keys((self._core.credentials.base_url, *extra_origins))
        # (token, its Authorization header triple), swapped as one tuple: no lock needed.
        self._last: Tuple[Optional[Token], Tuple[bytes, bytes, bytes]] = (None, (b"", b"", b""))

    def _make_provider(
        self, credentials: Credentials, client: Any, async_client: Any, options: Mapping[str, Any]
    ) -> TokenProvider:
        if client is not None:
            sync_default: SyncTransport = HttpxTransport(client)
        else:
            for flavour in compat.FLAVOURS:
                transport = HttpxTransport(flavour=flavour.name)
                self._owned.append(transport)
                self._sync_for[flavour.request_type] = transport
            sync_default = self._sync_for[compat.FLAVOURS[0].request_type]
        if async_client is not None:
            async_default: AsyncTransport = AsyncHttpxTransport(async_client)
        else:
            for flavour in compat.FLAVOURS:
                self._async_for[flavour.request_type] = AsyncHttpxTransport(flavour=flavour.name)
            async_default = self._async_for[compat.FLAVOURS[0].request_type]
        return TokenProvider(
            credentials, transport=sync_default, async_transport=async_default, **options
        )

    @property
    def credentials(self) -> Credentials:
        return self._core.credentials

    # -- the flows ------------------------------------------------------------------------------

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        if not self._in_scope(request.url):
            yield request
            return
        provider = self.provider
        transport = self._sync_for.get(request.__class__)
        token = provider.get_token(transport=transport)
        self._apply(request, token)
        response = yield request
        if response.status_code == _UNAUTHORIZED and self._should_resend(request, response, token):
            # Release the 401's connection first: the token request may need one from the same
            # pool (Authlib's clients fetch on themselves), and a full pool would never free one.
            response.read()
            self._reapply(request, provider.get_token(transport=transport), token)
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if not self._in_scope(request.url):
            yield request
            return
        provider = self.provider
        transport = self._async_for.get(request.__class__)
        # A fresh cached token without creating a coroutine: the common case, kept cheap.
        token = provider.fresh_token() or await provider.aget_token(transport=transport)
        self._apply(request, token)
        response = yield request
        if response.status_code == _UNAUTHORIZED and self._should_resend(request, response, token):
            await response.aread()  # release the 401's connection first (see sync_auth_flow)
            self._reapply(request, await provider.aget_token(transport=transport), token)
            yield request

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # httpx only calls the two flows above; a direct caller gets the sync behaviour.
        return self.sync_auth_flow(request)

    # -- helpers --------------------------------------------------------------------------------

    def _in_scope(self, url: httpx.URL) -> bool:
        # httpx has parsed the URL already: compare its parts, no string building on this path.
        if url.__class__ in _FAST_URL_TYPES:
            ref = url._uri_reference
            if (ref.scheme, ref.host, ref.port) in self._origin_keys:
                return True
        elif (url.scheme, url.host, url.port) in self._origin_keys:
            return True
        # Not a known form of an allowed origin: the core's check decides.
        return self._core.applies_to(str(url))

    def _apply(self, request: httpx.Request, token: Token) -> None:
        last = self._last
        if last[0] is not token:
            last = self._remember(token)
        compat.set_auth_headers(request, token.authorization, last[1])

    def _reapply(self, request: httpx.Request, token: Token, refused: Token) -> None:
        """Put ``token`` on a request being resent after ``refused`` drew a 401."""
        if self._last[0] is not token:
            self._remember(token)
        logger.debug("API answered 401 for token %s; resending once", refused.fingerprint)
        compat.replace_authorization(request, token.authorization)

    def _remember(self, token: Token) -> Tuple[Token, Tuple[bytes, bytes, bytes]]:
        """Cache ``token``'s header entry: built once per token, not once per request."""
        last = (token, compat.authorization_entry(token.authorization))
        self._last = last
        self._on_new_token(token)
        return last

    def _should_resend(self, request: httpx.Request, response: httpx.Response, sent: Token) -> bool:
        """After a 401 to ``request``: whether to resend it with a new token.

        Only a 401 that answered our token (not another origin reached by a redirect) counts;
        it invalidates ``sent`` even when the request cannot be resent, so the next request
        gets a new token. A generator body was consumed: the 401 is returned rather than fail.
        """
        answered = response.request
        if answered is not request and not self._in_scope(answered.url):
            return False
        self.provider.invalidate(sent)
        if not self._replayable(request):
            logger.debug("401 for token %s; one-shot body, not resent", sent.fingerprint)
            return False
        return True

    @staticmethod
    def _replayable(request: httpx.Request) -> bool:
        """Whether the request body can be sent again (held in memory, not a generator)."""
        flavour = compat.FLAVOUR_BY_REQUEST.get(request.__class__)
        return flavour is not None and isinstance(request.stream, flavour.replayable_streams)

    # -- for subclasses ---------------------------------------------------------------------------

    def _on_new_token(self, token: Token) -> None:
        """Called once for each token this adapter starts attaching (never per request).

        A hook for subclasses that mirror the token elsewhere: the Authlib clients keep
        ``client.token`` in step with it. Runs on the request's thread or event loop, so it
        must not block.
        """

    def _send_token_requests_through(
        self, sync: Optional[SyncTransport], async_: Optional[AsyncTransport]
    ) -> None:
        """Use these transports for the token requests this adapter triggers, whatever the
        request's flavour (``None`` keeps the current choice). For subclasses that bring their
        own, such as the Authlib clients sharing a process-wide provider."""
        for flavour in compat.FLAVOURS:
            if sync is not None:
                self._sync_for[flavour.request_type] = sync
            if async_ is not None:
                self._async_for[flavour.request_type] = async_

    def close(self) -> None:
        """Close the private sync clients this adapter created (idempotent)."""
        for transport in self._owned:
            transport.close()

    def __repr__(self) -> str:
        return (
            f"NavroAuth(flavours={installed_flavours()!r}, provider={self.provider!r}, "
            f"scope={self._core.scope!r})"
        )


def _origin_keys(origins: Iterable[str]) -> frozenset[Tuple[str, str, Optional[int]]]:
    """``(scheme, host, port)`` of each allowed origin, as every installed flavour reads it."""
    keys = set()
    for origin in origins:
        for flavour in compat.FLAVOURS:
            try:
                url = flavour.module.URL(origin)
            except Exception:
                continue  # the authoritative check (AdapterCore.applies_to) still covers it
            keys.update(compat.url_keys(url))
    return frozenset(keys)
