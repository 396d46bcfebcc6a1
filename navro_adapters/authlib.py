"""Authlib clients configured for Navro: requests ``OAuth2Session`` and httpx ``OAuth2Client``s.

Usage::

    from navro_adapters.authlib import async_oauth2_client, oauth2_client, oauth2_session

    session = oauth2_session(credentials)              # authlib requests_client.OAuth2Session
    session.get(f"{credentials.base_url}/v1/ping")     # the first request fetches a token

Each factory returns a subclass of the Authlib class, configured as Navro documents it: token
endpoint ``credentials.token_url``, ``client_secret_basic``, ``scope=openid``,
``grant_type=client_credentials`` and ``X-API-Version: 1`` on token and API requests.

Out of the box, Authlib's clients neither fetch the first client-credentials token nor share
one between threads, and they refresh a fixed 60 s before expiry (a fifth of a Navro token's
life). So every client here is backed by a :class:`~navro_adapters.TokenProvider`, which owns
the policy (cache, singleflight, refresh-ahead with margins proportional to the lifetime,
retries); the client only attaches tokens, and Authlib only performs the token request:

* default: a private provider whose transport is this client's own ``fetch_token`` (Authlib's
  client authentication, on the client's session: its proxies, TLS and pool);
* ``shared=True``: one provider per set of credentials in the process (see
  :func:`shared_provider`), so many clients in many threads use ONE token; the client that
  happens to need the fetch performs it with its own ``fetch_token``;
* a :class:`~navro_adapters.TokenProvider` as ``source``: that provider, with its own
  transports, so one token serves these clients and every other adapter in the process.

Whatever the mode, ``client.token`` is kept in sync with the token last attached, the token is
sent only to the API's origin (and ``extra_origins``), a 401 from the API invalidates the token
that was sent and the request is resent once, and token endpoint failures are raised as
:class:`~navro_adapters.NavroAuthError` subclasses, never as Authlib or HTTP-library errors.
The tokens are attached by this package's own adapters (:class:`navro_adapters.requests.NavroAuth`
and :class:`navro_adapters.httpx.NavroAuth`, subclassed here to keep ``client.token`` in step),
so those rules are written once; redirect hops are checked by the clients themselves.

Authlib APIs relied on (all present since Authlib 1.2): the ``OAuth2Session``, ``OAuth2Client``
and ``AsyncOAuth2Client`` constructors with ``token_endpoint``/``grant_type`` metadata,
``fetch_token(url, headers=..., grant_type=..., **session_kwargs)``, the
``access_token_response`` compliance hook, the ``token`` setter, ``request(...,
withhold_token=..., auth=...)`` and ``ensure_active_token``.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import threading
import weakref
from typing import (
    Any,
    Callable,
    ClassVar,
    Dict,
    Iterable,
    Mapping,
    Optional,
    Tuple,
    Type,
    Union,
)

try:
    import requests
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client
    from authlib.integrations.requests_client import OAuth2Session
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "navro_adapters.authlib needs Authlib>=1.2 with requests and httpx: "
        "pip install 'navro-adapters[authlib]'"
    ) from exc

from ._adapter import AUTHORIZATION, AdapterCore, AuthSource, split_provider_options
from .credentials import Credentials
from .errors import ConfigurationError, TokenTimeoutError, TransportError
from .httpx import NavroAuth as _HttpxNavroAuth
from .protocol import TokenRequest, TransportResponse
from .provider import TokenProvider
from .requests import NavroAuth as _RequestsNavroAuth
from .token import Token

__all__ = [
    "NavroAsyncOAuth2Client",
    "NavroOAuth2Client",
    "NavroOAuth2Session",
    "async_oauth2_client",
    "oauth2_client",
    "oauth2_session",
    "shared_provider",
]

GRANT_TYPE = "client_credentials"
SCOPE = "openid"  # per Navro's document
TOKEN_ENDPOINT_AUTH_METHOD = "client_secret_basic"  # HTTP Basic, per Navro's document

#: Constructor arguments the factories set from the Credentials; passing them is an error.
RESERVED_KWARGS = frozenset(
    {
        "client_id",
        "client_secret",
        "token_endpoint",
        "token_endpoint_auth_method",
        "scope",
        "grant_type",
        "token",
        "token_placement",
        "update_token",
    }
)


def _httpx_module() -> Any:
    """The httpx package Authlib's httpx clients are built on (``httpx``, or ``httpx2`` for
    recent Authlib releases that prefer it), so our auth classes match the client's."""
    for cls in AsyncOAuth2Client.__mro__:
        if cls.__name__ == "AsyncClient":
            return importlib.import_module(cls.__module__.split(".")[0])
    raise ImportError("Authlib's AsyncOAuth2Client is not built on an httpx AsyncClient")


_httpx: Any = _httpx_module()
_HttpxSyncClient: Any = next(c for c in OAuth2Client.__mro__ if c.__name__ == "Client")
_HttpxAsyncClient: Any = next(c for c in AsyncOAuth2Client.__mro__ if c.__name__ == "AsyncClient")
_USE_CLIENT_DEFAULT: Any = _httpx.USE_CLIENT_DEFAULT
_TIMEOUTS = (requests.Timeout, _httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)


# -- shared providers ------------------------------------------------------------------------

_shared_providers: weakref.WeakValueDictionary[Tuple[str, str], TokenProvider] = (
    weakref.WeakValueDictionary()
)
_shared_providers_lock = threading.Lock()  # taken only when a client is built, never per request


def shared_provider(credentials: Credentials) -> TokenProvider:
    """The process-wide provider ``shared=True`` clients with these credentials draw from.

    Kept while some client uses it. Its own transport is the standard-library default; clients
    pass their own ``fetch_token`` for the fetches they trigger.
    """
    key = (credentials.cache_key, credentials.base_url)
    with _shared_providers_lock:
        provider = _shared_providers.get(key)
        if provider is None:
            provider = TokenProvider(credentials)
            _shared_providers[key] = provider
        return provider


# -- token requests through Authlib's fetch_token ------------------------------------------------


class _Captured:
    __slots__ = ("response",)

    def __init__(self) -> None:
        self.response: Any = None


# The token response Authlib received, whatever fetch_token then made of it: the core parses
# it, so every error is one of ours. A context variable, so concurrent fetches never mix.
_capture_slot: contextvars.ContextVar[Optional[_Captured]] = contextvars.ContextVar(
    "navro_adapters_authlib_capture", default=None
)


def _capture_token_response(response: Any) -> Any:
    """Authlib ``access_token_response`` compliance hook: remember the raw response."""
    captured = _capture_slot.get()
    if captured is not None:
        captured.response = response
    return response


def _fetch_headers(request: TokenRequest) -> Dict[str, str]:
    # Authlib adds the Basic client authentication itself (client_secret_basic).
    return {k: v for k, v in request.headers.items() if k.lower() != "authorization"}


def _response_of(captured: _Captured, error: Optional[BaseException]) -> TransportResponse:
    response = captured.response
    if response is None:
        if error is None:
            raise TransportError("token request failed: Authlib returned no response")
        if isinstance(error, _TIMEOUTS):
            raise TokenTimeoutError("token request timed out") from error
        # The class name only: library messages can carry URLs and connection details.
        raise TransportError(f"token request failed: {type(error).__name__}") from error
    return TransportResponse.build(response.status_code, response.headers.items(), response.content)


def _fetch_sync(
    client: Any, redirect_kwarg: str, request: TokenRequest, timeout: float
) -> TransportResponse:
    captured = _Captured()
    reset = _capture_slot.set(captured)
    error: Optional[BaseException] = None
    try:
        client.fetch_token(
            request.url,
            headers=_fetch_headers(request),
            grant_type=GRANT_TYPE,
            timeout=timeout,
            **{redirect_kwarg: False},  # a redirect would carry the client secret elsewhere
        )
    except Exception as exc:  # Authlib's verdict is ignored: the core parses the response
        error = exc
    finally:
        _capture_slot.reset(reset)
    return _response_of(captured, error)


async def _fetch_async(client: Any, request: TokenRequest, timeout: float) -> TransportResponse:
    captured = _Captured()
    reset = _capture_slot.set(captured)
    error: Optional[BaseException] = None
    try:
        await client.fetch_token(
            request.url,
            headers=_fetch_headers(request),
            grant_type=GRANT_TYPE,
            timeout=timeout,
            follow_redirects=False,
        )
    except Exception as exc:
        error = exc
    finally:
        _capture_slot.reset(reset)
    return _response_of(captured, error)


def _token_dict(token: Token) -> Dict[str, Any]:
    """The token as Authlib keeps it (``client.token``)."""
    data: Dict[str, Any] = {
        "access_token": token.access_token,
        "token_type": token.token_type,
        "expires_in": int(token.expires_in),
        "expires_at": int(token.expires_at_wall),
    }
    if token.scope is not None:
        data["scope"] = token.scope
    return data


# -- what every Navro-configured client shares ---------------------------------------------------


class _Binding:
    """One client's token source, and the client's Authlib state kept in step with it.

    Every token lookup goes through the provider (lock-free when the token is fresh); the
    client's Authlib state (``token``, ``leeway``) is updated only when the token changes.
    """

    __slots__ = (
        "async_transport",
        "client",
        "core",
        "extra_origins",
        "provider",
        "sync_transport",
        "synced",
    )

    def __init__(
        self,
        client: Any,
        source: AuthSource,
        *,
        shared: bool,
        extra_origins: Iterable[str],
        sync_fetch: Optional[Callable[..., TransportResponse]],
        async_fetch: Optional[Callable[..., Any]],
        provider_options: Mapping[str, Any],
    ) -> None:
        self.client = client
        self.extra_origins = tuple(extra_origins)
        self.sync_transport: Any = None
        self.async_transport: Any = None
        if isinstance(source, Credentials) and shared:
            # The shared provider fetches with whichever client needs the token first.
            source = shared_provider(source)
            self.sync_transport, self.async_transport = sync_fetch, async_fetch

        def make_provider(credentials: Credentials, options: Mapping[str, Any]) -> TokenProvider:
            return TokenProvider(
                credentials, transport=sync_fetch, async_transport=async_fetch, **options
            )

        self.core = AdapterCore(
            source,
            extra_origins=self.extra_origins,
            make_provider=make_provider,
            provider_options=provider_options,
        )
        self.provider = self.core.provider
        self.synced: Optional[Token] = None

    def token(self) -> Token:
        """A valid token (fetched with this client if need be), mirrored into the client."""
        token = self.provider.get_token(transport=self.sync_transport)
        if token is not self.synced:
            self._sync(token)
        return token

    async def atoken(self) -> Token:
        """:meth:`token` for the async client."""
        token = self.provider.fresh_token() or await self.provider.aget_token(
            transport=self.async_transport
        )
        if token is not self.synced:
            self._sync(token)
        return token

    def observe(self, token: Token) -> None:
        """Mirror a token the client's adapter started attaching."""
        if token is not self.synced:
            self._sync(token)

    def _sync(self, token: Token) -> None:
        self.synced = token
        self.client.token = _token_dict(token)
        # Authlib's own expiry checks, should anything call them, use the core's margin.
        self.client.leeway = int(self.provider.refresh_policy.margins(token.expires_in)[0])

    def owns(self, authorization: Optional[str]) -> bool:
        """Whether a header value is a bearer token this client attached."""
        if authorization is None:
            return False
        synced, current = self.synced, self.provider.token
        return any(t is not None and t.authorization == authorization for t in (synced, current))

    def strip_foreign(self, headers: Any, url: Optional[str]) -> None:
        """Remove our token from a redirect hop to a URL it must not reach.

        requests and httpx both keep ``Authorization`` on an http -> https redirect to the same
        host; the adapters cannot see redirect hops, so the clients call this for each one.
        """
        if (
            url is not None
            and self.owns(headers.get(AUTHORIZATION))
            and not self.core.applies_to(url)
        ):
            del headers[AUTHORIZATION]

    def describe(self, name: str) -> str:
        token = self.synced
        shown = token.fingerprint if token is not None else None
        return (
            f"{name}(client_id={self.core.credentials.client_id!r}, token={shown!r}, "
            f"scope={self.core.scope!r})"
        )


class _RequestsBearer(_RequestsNavroAuth):
    """The requests adapter (scope, headers, the 401 resend), taking its tokens through a
    session's binding: the session's ``token`` follows them and, in shared mode, the fetches
    it triggers use the session's own ``fetch_token``."""

    def __init__(self, binding: _Binding) -> None:
        super().__init__(binding.provider, extra_origins=binding.extra_origins)
        self._get_token = binding.token


class _HttpxBearer(_HttpxNavroAuth):
    """The httpx adapter (scope, headers, the 401 resend), mirroring each new token into the
    client and, in shared mode, fetching with the client's own ``fetch_token``."""

    def __init__(self, binding: _Binding) -> None:
        super().__init__(binding.provider, extra_origins=binding.extra_origins)
        self._binding = binding
        self._send_token_requests_through(binding.sync_transport, binding.async_transport)

    def _on_new_token(self, token: Token) -> None:
        self._binding.observe(token)


def _check_kwargs(kwargs: Mapping[str, Any]) -> None:
    reserved = sorted(RESERVED_KWARGS.intersection(kwargs))
    if reserved:
        raise ConfigurationError(reserved[0], "is set from the Navro Credentials; do not pass it")


def _authlib_config(source: object) -> Dict[str, Any]:
    if isinstance(source, TokenProvider):
        credentials = source.credentials
    elif isinstance(source, Credentials):
        credentials = source
    else:
        raise ConfigurationError(
            "credentials",
            "must be navro_adapters.Credentials or navro_adapters.TokenProvider, "
            f"not {type(source).__name__}",
        )
    return {
        "client_id": credentials.client_id,
        "client_secret": credentials.client_secret,
        "token_endpoint": credentials.token_url,
        "token_endpoint_auth_method": TOKEN_ENDPOINT_AUTH_METHOD,
        "scope": SCOPE,
        "grant_type": GRANT_TYPE,
    }


def _is_default(auth: Any) -> bool:
    # Authlib treats both as "the client's own token" (older releases used None).
    return auth is None or auth is _USE_CLIENT_DEFAULT


class _NavroClient:
    """What the three Navro-configured Authlib clients share.

    Listed before the Authlib class in their bases, so these methods wrap Authlib's: the
    arguments are checked before an instance exists, Authlib is configured from the
    Credentials, the client gets its :class:`_Binding` and the auth that attaches its tokens.
    """

    #: The auth this client attaches tokens with, built on its binding.
    _navro_auth_type: ClassVar[Union[Type[_RequestsBearer], Type[_HttpxBearer]]]
    #: Whether ``_navro_fetch`` is a coroutine function (the async client's is).
    _navro_fetches_async: ClassVar[bool] = False
    #: The client's token request through Authlib's ``fetch_token`` (a token transport).
    _navro_fetch: Callable[..., Any]
    register_compliance_hook: Callable[..., None]  # Authlib's

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # Validate before an instance exists: Authlib's __del__ fails on a half-built client.
        # (No arguments at all is copy/pickle re-creating an instance: nothing to check.)
        if args or kwargs:
            _check_kwargs(kwargs)
            _authlib_config(args[0] if args else kwargs.get("source"))
        return super().__new__(cls)

    def __init__(
        self,
        source: AuthSource,
        *,
        shared: bool = False,
        extra_origins: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:
        provider_options = split_provider_options(kwargs)  # the rest is Authlib's
        super().__init__(**_authlib_config(source), **kwargs)
        self.register_compliance_hook("access_token_response", _capture_token_response)
        fetch = self._navro_fetch
        self._navro = _Binding(
            self,
            source,
            shared=shared,
            extra_origins=extra_origins,
            sync_fetch=None if self._navro_fetches_async else fetch,
            async_fetch=fetch if self._navro_fetches_async else None,
            provider_options=provider_options,
        )
        self._navro_auth = self._navro_auth_type(self._navro)

    def _navro_auth_or(self, auth: Any, withhold_token: bool) -> Any:
        """The auth for one request: ours, unless the caller withheld the token or chose one."""
        return self._navro_auth if not withhold_token and _is_default(auth) else auth

    @property
    def navro_provider(self) -> TokenProvider:
        """The token provider this client draws from."""
        return self._navro.provider

    def __repr__(self) -> str:
        return self._navro.describe(type(self).__name__)


# -- requests: OAuth2Session -------------------------------------------------------------------


class NavroOAuth2Session(_NavroClient, OAuth2Session):  # type: ignore[misc,unused-ignore]
    """Authlib's requests ``OAuth2Session`` for Navro; build it with :func:`oauth2_session`."""

    _navro_auth_type = _RequestsBearer

    def _navro_fetch(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        return _fetch_sync(self, "allow_redirects", request, timeout)

    def request(  # type: ignore[override,unused-ignore]
        self, method: str, url: Any, withhold_token: bool = False, auth: Any = None, **kwargs: Any
    ) -> requests.Response:
        response: requests.Response = super().request(
            method,
            url,
            withhold_token=withhold_token,
            auth=self._navro_auth_or(auth, withhold_token),
            **kwargs,
        )
        return response

    def ensure_active_token(self, token: Any = None) -> bool:
        """Make sure ``self.token`` is a valid token (fetching one if needed)."""
        self._navro.token()
        return True

    def rebuild_auth(
        self, prepared_request: requests.PreparedRequest, response: requests.Response
    ) -> None:
        super().rebuild_auth(prepared_request, response)
        self._navro.strip_foreign(prepared_request.headers, prepared_request.url)


# -- httpx: OAuth2Client and AsyncOAuth2Client --------------------------------------------------


def _add_request_hook(client: Any, hook: Callable[..., Any]) -> None:
    hooks = client.event_hooks
    hooks["request"] = [*hooks.get("request", []), hook]
    client.event_hooks = hooks


class _NavroHttpxClient(_NavroClient):
    """What the two httpx clients add: the httpx adapter, a request hook (run for every
    redirect hop) that strips our token from foreign hops, and ``stream()`` with our auth."""

    _navro_auth_type = _HttpxBearer
    #: httpx's ``Client`` or ``AsyncClient``, whose own ``stream()`` is used.
    _navro_httpx_type: ClassVar[Any]
    #: Removes our token from a request to a foreign origin (sync or async, as httpx needs).
    _navro_strip_foreign: Callable[[Any], Any]

    def __init__(self, source: AuthSource, **kwargs: Any) -> None:
        super().__init__(source, **kwargs)
        _add_request_hook(self, self._navro_strip_foreign)

    def stream(
        self,
        method: str,
        url: Any,
        withhold_token: bool = False,
        auth: Any = _USE_CLIENT_DEFAULT,
        **kwargs: Any,
    ) -> Any:
        # httpx's own stream (an async context manager for the async client): Authlib's
        # override, where there is one, adds nothing here.
        return self._navro_httpx_type.stream(
            self, method, url, auth=self._navro_auth_or(auth, withhold_token), **kwargs
        )


class NavroOAuth2Client(_NavroHttpxClient, OAuth2Client):  # type: ignore[misc,unused-ignore]
    """Authlib's httpx ``OAuth2Client`` for Navro; build it with :func:`oauth2_client`."""

    _navro_httpx_type = _HttpxSyncClient

    def _navro_fetch(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        return _fetch_sync(self, "follow_redirects", request, timeout)

    def _navro_strip_foreign(self, request: Any) -> None:
        self._navro.strip_foreign(request.headers, str(request.url))

    def request(
        self,
        method: str,
        url: Any,
        withhold_token: bool = False,
        auth: Any = _USE_CLIENT_DEFAULT,
        **kwargs: Any,
    ) -> Any:
        auth = self._navro_auth_or(auth, withhold_token)
        return super().request(method, url, withhold_token=withhold_token, auth=auth, **kwargs)

    def ensure_active_token(self, token: Any = None) -> bool:
        """Make sure ``self.token`` is a valid token (fetching one if needed)."""
        self._navro.token()
        return True


class NavroAsyncOAuth2Client(_NavroHttpxClient, AsyncOAuth2Client):  # type: ignore[misc,unused-ignore]
    """Authlib's httpx ``AsyncOAuth2Client`` for Navro; build it with
    :func:`async_oauth2_client`. Never blocks the event loop."""

    _navro_fetches_async = True
    _navro_httpx_type = _HttpxAsyncClient

    async def _navro_fetch(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        return await _fetch_async(self, request, timeout)

    async def _navro_strip_foreign(self, request: Any) -> None:
        self._navro.strip_foreign(request.headers, str(request.url))

    async def request(
        self,
        method: str,
        url: Any,
        withhold_token: bool = False,
        auth: Any = _USE_CLIENT_DEFAULT,
        **kwargs: Any,
    ) -> Any:
        auth = self._navro_auth_or(auth, withhold_token)
        return await super().request(
            method, url, withhold_token=withhold_token, auth=auth, **kwargs
        )

    async def ensure_active_token(self, token: Any = None) -> None:
        """Make sure ``self.token`` is a valid token (fetching one if needed)."""
        await self._navro.atoken()


# -- the factories ---------------------------------------------------------------------------------


def oauth2_session(
    source: Union[Credentials, TokenProvider],
    *,
    shared: bool = False,
    extra_origins: Iterable[str] = (),
    **kwargs: Any,
) -> NavroOAuth2Session:
    """An Authlib requests ``OAuth2Session`` configured for Navro.

    ``source`` is the Navro credentials or a shared provider; ``shared=True`` makes every
    client with the same credentials use one token; ``extra_origins`` are further origins the
    token may be sent to; ``refresh_policy``, ``retry_policy``, ``store`` (and the other
    :data:`~navro_adapters._adapter.PROVIDER_OPTIONS`) go to the provider built from
    Credentials; other keyword arguments go to ``OAuth2Session`` (``default_timeout``, ...;
    ``leeway`` is ignored: the provider's refresh policy decides).
    """
    return NavroOAuth2Session(source, shared=shared, extra_origins=extra_origins, **kwargs)


def oauth2_client(
    source: Union[Credentials, TokenProvider],
    *,
    shared: bool = False,
    extra_origins: Iterable[str] = (),
    **kwargs: Any,
) -> NavroOAuth2Client:
    """An Authlib httpx ``OAuth2Client`` configured for Navro (see :func:`oauth2_session`);
    keyword arguments go to the client (``timeout``, ``verify``, ``proxy``, ``transport``...)."""
    return NavroOAuth2Client(source, shared=shared, extra_origins=extra_origins, **kwargs)


def async_oauth2_client(
    source: Union[Credentials, TokenProvider],
    *,
    shared: bool = False,
    extra_origins: Iterable[str] = (),
    **kwargs: Any,
) -> NavroAsyncOAuth2Client:
    """An Authlib httpx ``AsyncOAuth2Client`` configured for Navro (see :func:`oauth2_session`).

    Create it on the event loop that will use it, like any httpx ``AsyncClient``.
    """
    return NavroAsyncOAuth2Client(source, shared=shared, extra_origins=extra_origins, **kwargs)
